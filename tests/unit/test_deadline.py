"""The per-thread operation deadline."""

import threading

from vmetal_ironic import deadline


def test_no_deadline_outside_and_the_earlier_one_wins_inside():
    assert deadline.remaining() is None
    with deadline.within(100):
        assert 99 < deadline.remaining() <= 100
        with deadline.within(1000):
            assert deadline.remaining() <= 100
        with deadline.within(5):
            assert deadline.remaining() <= 5
        with deadline.within(None):
            assert deadline.remaining() <= 100
    assert deadline.remaining() is None


def test_each_thread_has_its_own():
    seen = []
    with deadline.within(10):
        thread = threading.Thread(target=lambda: seen.append(
            deadline.remaining()))
        thread.start()
        thread.join()
    assert seen == [None]
