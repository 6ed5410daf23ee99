"""Many independent API calls with a bounded number in flight.

One request to kube-apiserver costs a few milliseconds of the server's
CPU and as much again of waiting (etcd's write, the answer on its way
back). A caller with thousands of independent writes (publishing a
fleet's DHCP reservations) that sends them one after the other leaves the
API server idle for most of each round trip; a few requests in flight
keep it busy. More than a few only queue inside the API server, where its
priority and fairness answers 429, which :class:`~.kube_client.Api`
honours for every thread of the client.

The calls run in a small set of threads that share the caller's client,
hence its connection pool (urllib3 keeps one connection per thread in
flight, re-used), and the caller's operation deadline
(:mod:`vmetal_ironic.deadline`, which is per thread).
"""

import concurrent.futures
import threading
import time

from vmetal_ironic import deadline


def _deadline_end():
    """The caller's deadline as a point on the monotonic clock, or
    ``None``, so that threads started later get what is left of it."""
    left = deadline.remaining()
    return None if left is None else time.monotonic() + left


def run(call, items, in_flight):
    """``call(item)`` for every item, at most ``in_flight`` at a time.

    The first exception stops the taking of further items; the calls
    already in flight finish, then it is raised (the items before it may
    have been done: the caller's calls must be safe to repeat).

    :param call: ``item -> result``; run in worker threads, except with
        ``in_flight`` 1, when it runs in the caller's thread.
    :param items: an iterable; read under a lock, one item at a time.
    :param in_flight: the bound (at least 1).
    :returns: the results, in the items' order.
    """
    items = list(items)
    results = [None] * len(items)
    workers = max(1, min(int(in_flight), len(items)))
    if workers == 1:
        for index, item in enumerate(items):
            results[index] = call(item)
        return results

    end = _deadline_end()
    source = iter(enumerate(items))
    lock = threading.Lock()
    stop = threading.Event()
    failures = []

    def work():
        while not stop.is_set():
            with lock:
                taken = next(source, None)
            if taken is None:
                return
            index, item = taken
            left = None if end is None else end - time.monotonic()
            try:
                with deadline.within(left):
                    results[index] = call(item)
            except Exception as exc:
                with lock:
                    failures.append(exc)
                stop.set()
                return

    with concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix='vmetal-bulk') as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
            future.result()
    if failures:
        raise failures[0]
    return results
