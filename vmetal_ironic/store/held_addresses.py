"""One process's copy of the addresses held in one scope of a store.

Reading every held address of a network for each allocation makes an
allocation cost time in proportion to the fleet (at 10,000 hosts the local
store spent most of its time there). This copy lets a process propose the
next free address without that read, and stays honest by two rules:

* it is trusted only while the store's change counter, which every write
  to the held addresses bumps inside its own transaction, still has the
  value this copy last saw: then nobody else changed them since, and the
  copy is exact; any other value means "read them again";
* what it proposes is only a candidate: the store's unique key decides,
  and a refused candidate also means "read them again".

It does no I/O: the store hands it what it read. Its lock only keeps the
threads of one process from changing it at the same moment; which write
happened first is the store's business (its counter).
"""

import threading

from vmetal_ironic.ipam import allocator as ipam_allocator


class HeldAddresses:
    """The held addresses of one scope, as of one value of the counter.

    :param blocked: addresses never proposed whatever the store says
        (``[vmetal]reserved_addresses``), as integers.
    """

    def __init__(self, blocked=()):
        self._blocked = frozenset(blocked)
        self._lock = threading.Lock()
        self.generation = None
        self._used = set()
        # Pool shape -> allocator over ``_used``, built on first use.
        self._allocators = {}

    def current(self, generation):
        """:returns: whether the copy is exact at counter ``generation``."""
        with self._lock:
            return (self.generation is not None
                    and self.generation == generation)

    def load(self, generation, used):
        """Replace the copy by what the store holds at ``generation``.

        :param used: every held address of the scope, as integers.
        """
        with self._lock:
            self.generation = generation
            self._used = set(used) | self._blocked
            self._allocators = {}

    def forget(self):
        """Distrust the copy (a write whose effect it does not follow)."""
        with self._lock:
            self.generation = None
            self._allocators = {}

    def candidate(self, pool):
        """The lowest address of ``pool`` the copy shows free.

        :raises vmetal_ironic.ipam.errors.PoolExhausted: none is.
        """
        # Pools of one network differ by range and gateway.
        shape = (tuple(pool.intervals), frozenset(pool.reserved))
        with self._lock:
            allocator = self._allocators.get(shape)
            if allocator is None:
                allocator = ipam_allocator.Allocator(pool, self._used)
                self._allocators[shape] = allocator
            value = allocator.allocate()
            # Every other pool of the scope may overlap this one.
            for other in self._allocators.values():
                if other is not allocator:
                    other.mark_used(value)
            self._used.add(value)
            return value

    def taken(self, before, after):
        """The write that took the last candidate committed, moving the
        counter from ``before`` to ``after``."""
        with self._lock:
            self.generation = after if self.generation == before else None

    def released(self, before, after, value):
        """A write freed ``value``, moving the counter from ``before`` to
        ``after``."""
        with self._lock:
            if self.generation != before:
                self.generation = None
                return
            self.generation = after
            if value in self._blocked:
                return
            self._used.discard(value)
            for allocator in self._allocators.values():
                allocator.release(value)
