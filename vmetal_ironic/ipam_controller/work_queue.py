"""A de-duplicating keyed work queue, as controllers use one.

A key (a BareMetalHost's ``<namespace>/<name>``) stands for "look at this
object again"; the reconcile reads the object's current state, so adding a
key that is already waiting changes nothing (level-based: ten events of
one host cost one reconcile). A key handed to a worker is never handed to
another until :meth:`WorkQueue.done`; added meanwhile, it waits and comes
back once the first is done. A failed key comes back after a growing,
bounded delay (:meth:`WorkQueue.retry`), and a success resets it
(:meth:`WorkQueue.forget`).
"""

import collections
import heapq
import threading
import time


class WorkQueue:
    """Keys to reconcile, each at most once waiting and once in work.

    :param base_delay: seconds before a key's first retry.
    :param max_delay: the bound of the retry delay.
    :param clock: ``() -> seconds`` (monotonic); tests pass their own.
    """

    def __init__(self, base_delay=0.5, max_delay=60.0, clock=time.monotonic):
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock
        self._cond = threading.Condition()
        self._ready = collections.deque()    # keys in arrival order
        self._waiting = set()       # keys in _ready
        self._delayed = []          # heap of (due, sequence, key)
        self._sequence = 0
        self._working = set()
        self._again = set()         # added while in work
        self._failures = {}
        self._closed = False

    def __len__(self):
        with self._cond:
            return len(self._waiting) + len(self._delayed) + len(self._again)

    def add(self, key, delay=0.0):
        """Ask for ``key`` to be reconciled, after ``delay`` seconds."""
        with self._cond:
            if delay > 0:
                self._sequence += 1
                heapq.heappush(self._delayed,
                               (self.clock() + delay, self._sequence, key))
            elif key in self._working:
                self._again.add(key)
            elif key not in self._waiting:
                self._waiting.add(key)
                self._ready.append(key)
            self._cond.notify()

    def retry(self, key):
        """``key`` failed: back after ``base * 2**failures`` seconds, at
        most ``max_delay``. :returns: the delay."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = min(self.max_delay, self.base_delay * 2 ** min(failures, 30))
        self.add(key, delay)
        return delay

    def forget(self, key):
        """``key`` succeeded: its next failure starts from the base."""
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key):
        with self._cond:
            return self._failures.get(key, 0)

    def _promote(self):
        """Move the delayed keys that are due to the ready list; the
        seconds until the next one is due, or ``None``."""
        now = self.clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            if key in self._working:
                self._again.add(key)
            elif key not in self._waiting:
                self._waiting.add(key)
                self._ready.append(key)
        return self._delayed[0][0] - now if self._delayed else None

    def get(self, timeout=None):
        """The next key to work on, or ``None`` after ``timeout`` seconds
        or once closed. The caller must call :meth:`done` with it."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while not self._closed:
                due = self._promote()
                if self._ready:
                    key = self._ready.popleft()
                    self._waiting.discard(key)
                    self._working.add(key)
                    return key
                wait = due
                if deadline is not None:
                    left = deadline - self.clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def done(self, key):
        """The work on ``key`` is over; if it was added meanwhile, it is
        ready again."""
        with self._cond:
            self._working.discard(key)
            if key in self._again:
                self._again.discard(key)
                if key not in self._waiting:
                    self._waiting.add(key)
                    self._ready.append(key)
                self._cond.notify()

    def close(self):
        """Wake every waiting :meth:`get`; it returns ``None`` from now."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
