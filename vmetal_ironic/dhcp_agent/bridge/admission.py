"""How many connections the bridge holds: in all, and per source address.

A per-address share keeps one slow or hostile client (or a few) from
taking every slot; deadlines in :mod:`.exchange` free the slots they do
take. Used from the bridge's one event loop thread only, so no lock.
"""

import collections


class Admission:
    """:param total: connections held at once over all listeners.
    :param per_client: connections one source address may hold."""

    def __init__(self, total, per_client):
        self.total = total
        self.per_client = per_client
        self._held = collections.Counter()
        self._count = 0

    def enter(self, address):
        """:returns: ``None`` when admitted (call :meth:`leave` later), or
        the reason it is not: ``'busy'`` or ``'client_limit'``."""
        if self._count >= self.total:
            return 'busy'
        if self._held[address] >= self.per_client:
            return 'client_limit'
        self._held[address] += 1
        self._count += 1
        return None

    def leave(self, address):
        self._count -= 1
        self._held[address] -= 1
        if self._held[address] <= 0:
            del self._held[address]

    def __len__(self):
        return self._count
