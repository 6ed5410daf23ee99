"""Choice of the next free address: lowest first, without rescanning.

The allocator keeps a cursor that only moves forward over the pool's
intervals, and a heap of addresses released behind the cursor. The lowest
free address is the top of the heap when there is one, otherwise the next
unused address at the cursor. Every address is passed by the cursor at most
once, so filling a pool costs time linear in its size, not quadratic.
"""

import heapq

from vmetal_ironic.ipam import errors


class Allocator:
    """Allocation state of one pool.

    :param pool: the :class:`~vmetal_ironic.ipam.pool.Pool`.
    :param used: integers of the addresses already allocated in the pool's
        network (addresses outside the pool are accepted and ignored).
    """

    def __init__(self, pool, used=()):
        self.pool = pool
        self._used = set(used)
        self._blocked = set(pool.reserved)
        self._interval = 0
        self._next = pool.intervals[0][0]
        self._holes = []

    def _behind_cursor(self, value):
        if self._interval >= len(self.pool.intervals):
            return True
        return value < self._next

    def _advance(self):
        intervals = self.pool.intervals
        while self._interval < len(intervals):
            last = intervals[self._interval][1]
            while self._next <= last:
                value = self._next
                self._next += 1
                if value not in self._used and value not in self._blocked:
                    return value
            self._interval += 1
            if self._interval < len(intervals):
                self._next = intervals[self._interval][0]
        return None

    def allocate(self):
        """Take the lowest free address.

        :returns: the address as an integer.
        :raises PoolExhausted: when no address is free.
        """
        while self._holes:
            value = heapq.heappop(self._holes)
            # Lazy deletion: a hole may have been taken by mark_used since.
            if value not in self._used:
                self._used.add(value)
                return value
        value = self._advance()
        if value is None:
            raise errors.PoolExhausted(self.pool.exhausted_message())
        self._used.add(value)
        return value

    def start_at(self, value):
        """Propose addresses from ``value`` upwards from now on.

        A writer that keeps losing races near the lowest free address to
        other writers moves to another part of the pool. Free addresses
        below ``value`` are not proposed again by this allocator (a fresh
        one, built from the store, finds them).

        :param value: the address as an integer.
        """
        self._holes = []
        for index, (first, last) in enumerate(self.pool.intervals):
            if value <= last:
                self._interval = index
                self._next = max(first, value)
                return
        self._interval = len(self.pool.intervals)

    def mark_used(self, value):
        """Record an address allocated elsewhere.

        :param value: the address as an integer.
        """
        self._used.add(value)

    def release(self, value):
        """Return an address to the pool.

        :param value: the address as an integer; releasing a free address
            is a no-op.
        """
        if value not in self._used:
            return
        self._used.discard(value)
        if self.pool.contains(value) and self._behind_cursor(value):
            heapq.heappush(self._holes, value)
