"""The keyed work queue: one key at a time, de-duplicated, backed off."""

import threading

from vmetal_ironic.ipam_controller import work_queue


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_waiting_key_is_added_once():
    queue = work_queue.WorkQueue()
    for key in ('a', 'b', 'a', 'a'):
        queue.add(key)
    assert len(queue) == 2
    assert [queue.get(0), queue.get(0), queue.get(0)] == ['a', 'b', None]


def test_a_key_in_work_is_not_handed_out_again_until_done():
    queue = work_queue.WorkQueue()
    queue.add('a')
    assert queue.get(0) == 'a'
    queue.add('a')
    assert queue.get(0) is None       # in work: not to a second worker
    queue.done('a')
    assert queue.get(0) == 'a'        # added meanwhile: back once done
    queue.done('a')
    assert queue.get(0) is None


def test_retries_back_off_up_to_the_bound_and_reset_on_success():
    clock = Clock()
    queue = work_queue.WorkQueue(base_delay=1, max_delay=4, clock=clock)
    delays = []
    for _ in range(4):
        queue.add('a')
        key = queue.get(0)
        delays.append(queue.retry(key))
        queue.done(key)
        assert queue.get(0) is None
        clock.now += delays[-1]
    assert delays == [1, 2, 4, 4]
    queue.forget('a')
    assert queue.failures('a') == 0


def test_close_wakes_a_waiting_worker():
    queue = work_queue.WorkQueue()
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    queue.close()
    worker.join(5)
    assert got == [None]
