"""Bounded concurrency of many independent calls (threads observed by
the values they leave, never by timing)."""

import threading

import pytest

from vmetal_ironic import deadline
from vmetal_ironic import exception
from vmetal_ironic.store.kubernetes import bulk


class Gate:
    """Counts the calls inside ``call`` at once; each waits until
    ``wanted`` are inside together (or a short bound passes), so that a
    pool that keeps fewer in flight than asked is seen."""

    def __init__(self, wanted):
        self.wanted = wanted
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.together = threading.Event()
        self.threads = set()

    def call(self, item):
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.threads.add(threading.get_ident())
            if self.inside >= self.wanted:
                self.together.set()
        self.together.wait(5)
        with self.lock:
            self.inside -= 1
        return item * 10


def test_results_come_in_the_items_order_with_the_bound_kept():
    gate = Gate(wanted=3)
    assert bulk.run(gate.call, range(40), in_flight=3) == [
        i * 10 for i in range(40)]
    assert gate.most == 3
    assert len(gate.threads) == 3


def test_one_in_flight_runs_in_the_callers_thread():
    gate = Gate(wanted=1)
    assert bulk.run(gate.call, [1, 2], in_flight=1) == [10, 20]
    assert gate.threads == {threading.get_ident()}
    assert bulk.run(gate.call, [], in_flight=8) == []


def test_the_first_failure_stops_taking_items_and_is_raised():
    taken = []
    lock = threading.Lock()
    failed = threading.Event()

    def call(item):
        with lock:
            taken.append(item)
        if item == 5:
            failed.set()
            raise exception.StoreUnavailable('API server gone')
        if item > 5:
            # Calls in flight when it failed finish; none starts after.
            failed.wait(5)
        return item

    with pytest.raises(exception.StoreUnavailable):
        bulk.run(call, range(1000), in_flight=4)
    # Items 0-5, the three other threads' items in flight, and (should a
    # thread run in the instant between the failure and the stop) a few
    # more: never the rest of the thousand.
    assert 6 <= len(taken) <= 16
    assert set(range(6)) <= set(taken)


def test_the_callers_deadline_bounds_every_thread():
    seen = []
    lock = threading.Lock()

    def call(item):
        with lock:
            seen.append(deadline.remaining())
        return item

    with deadline.within(30):
        bulk.run(call, range(8), in_flight=4)
    assert len(seen) == 8
    assert all(left is not None and 0 < left <= 30 for left in seen)
    bulk.run(call, range(4), in_flight=4)
    assert seen[8:] == [None] * 4
