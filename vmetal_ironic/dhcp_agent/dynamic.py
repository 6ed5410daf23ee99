"""The optional dynamic range: short leases for hosts without a reservation.

Used to inspect unknown hosts. Pure in-memory state with the time passed
in; leases are not persisted (an agent restart only means the next
inspection boot may get another address) and not shared between agents,
so run the dynamic range on one agent only.
"""

import collections
import dataclasses
import heapq
import ipaddress
import itertools

from vmetal_ironic.dhcp_agent import messages


def parse_range(text):
    """Parse ``first-last``.

    :returns: ``(first_int, last_int)``.
    :raises ValueError: with a message naming ``text``.
    """
    try:
        first, last = (ipaddress.IPv4Address(part.strip())
                       for part in text.split('-', 1))
    except ValueError:
        raise ValueError(f'dynamic range {text!r} is not first-last with '
                         'two IPv4 addresses') from None
    if int(first) > int(last):
        raise ValueError(f'dynamic range {text!r} ends before it starts')
    return int(first), int(last)


@dataclasses.dataclass
class _Lease:
    address: int
    expires: float
    committed: bool


class DynamicPool:
    """Hand out addresses of one range to unknown MACs.

    Every operation costs O(log n) or less in the number of leases: free
    addresses come from a cursor over the range and a queue of returned
    ones, expiry from a heap, so a flood of new MACs on a wide range costs
    no more per packet than on a narrow one.

    No address is ever on two clients: allocation skips addresses that
    reservations hold, and a lease whose address a reservation claims later
    is revoked the next time its client asks (:meth:`lookup`); the client's
    next REQUEST is NAKed (:meth:`revoked`) so it starts over.

    :param first: first address (int).
    :param last: last address (int).
    :param prefixlen: prefix length sent with the lease.
    :param gateway: router option or ``None``.
    :param dns_servers: DNS servers.
    :param lease_time: seconds.
    :param offer_hold: seconds an offered but unrequested address is held.
    """

    #: Candidate addresses looked at for one allocation at most; bounds the
    #: cost of a packet when much of the range is reserved or declined.
    MAX_TRIES = 256

    def __init__(self, first, last, prefixlen, gateway=None,
                 dns_servers=(), lease_time=600, offer_hold=60):
        self.first = first
        self.last = last
        self.prefixlen = prefixlen
        self.gateway = gateway
        self.dns_servers = tuple(dns_servers)
        self.lease_time = lease_time
        self.offer_hold = offer_hold
        self._leases = {}
        self._holder = {}       # address -> mac
        self._declined = {}     # address -> until
        self._revoked = {}      # mac -> until
        self._cursor = first    # next never-used address
        self._returned = collections.deque()
        # Addresses skipped because a reservation holds them; looked at
        # again only once the reservations change.
        self._parked = []
        self._parked_against = None
        self._expiry = []       # heap of (when, seq, kind, key)
        self._seq = itertools.count()

    def _binding(self, mac, address):
        return messages.Binding(
            mac=mac, address=address.to_bytes(4, 'big'),
            prefixlen=self.prefixlen, gateway=self.gateway,
            dns_servers=self.dns_servers, lease_time=self.lease_time,
            dynamic=True)

    def _schedule(self, when, kind, key):
        heapq.heappush(self._expiry, (when, next(self._seq), kind, key))
        if len(self._expiry) > 4 * (len(self._leases) + len(self._declined)
                                    + len(self._revoked)) + 64:
            # Renewals leave stale entries behind; rebuild from the truth.
            self._expiry = [(lease.expires, next(self._seq), 'lease', mac)
                            for mac, lease in self._leases.items()]
            self._expiry += [(until, next(self._seq), 'declined', address)
                             for address, until in self._declined.items()]
            self._expiry += [(until, next(self._seq), 'revoked', mac)
                             for mac, until in self._revoked.items()]
            heapq.heapify(self._expiry)

    def _drop(self, mac):
        lease = self._leases.pop(mac, None)
        if lease is not None:
            self._holder.pop(lease.address, None)
            self._returned.append(lease.address)
        return lease

    def _expire(self, now):
        heap = self._expiry
        while heap and heap[0][0] <= now:
            when, _seq, kind, key = heapq.heappop(heap)
            if kind == 'lease':
                lease = self._leases.get(key)
                if lease is not None and lease.expires == when:
                    self._drop(key)
            elif kind == 'declined':
                if self._declined.get(key) == when:
                    del self._declined[key]
                    self._returned.append(key)
            elif self._revoked.get(key) == when:
                del self._revoked[key]

    def _hold(self, mac, address, expires, committed):
        self._leases[mac] = _Lease(address, expires, committed)
        self._holder[address] = mac
        self._schedule(expires, 'lease', mac)

    def _candidate(self):
        if self._returned:
            return self._returned.popleft()
        if self._cursor <= self.last:
            self._cursor += 1
            return self._cursor - 1
        return None

    def _allocate(self, mac, now, reserved):
        if reserved is not self._parked_against:
            self._parked_against = reserved
            self._returned.extend(self._parked)
            self._parked = []
        for _try in range(self.MAX_TRIES):
            address = self._candidate()
            if address is None:
                return None
            if address in self._holder or address in self._declined:
                continue    # back in the queue when the lease/decline ends
            if address.to_bytes(4, 'big') in reserved:
                self._parked.append(address)     # free again if withdrawn
                continue
            self._revoked.pop(mac, None)
            self._hold(mac, address, now + self.offer_hold, False)
            return self._binding(mac, address)
        return None

    def lookup(self, mac, now, allocate, reserved=frozenset()):
        """The binding of ``mac``; a new one only if ``allocate``.

        A lease whose address is now reserved is revoked here: ``None`` is
        returned and :meth:`revoked` says so until the client starts over.

        :param reserved: packed addresses held by reservations, skipped.
        :returns: a :class:`~vmetal_ironic.dhcp_agent.messages.Binding` or
            ``None`` (no lease and not allocating, or range full).
        """
        self._expire(now)
        lease = self._leases.get(mac)
        if lease is not None:
            if lease.address.to_bytes(4, 'big') not in reserved:
                return self._binding(mac, lease.address)
            self._leases.pop(mac)
            self._holder.pop(lease.address, None)
            # Back in the pool once the reservation is withdrawn.
            self._parked.append(lease.address)
            until = now + self.lease_time
            self._revoked[mac] = until
            self._schedule(until, 'revoked', mac)
        if not allocate:
            return None
        return self._allocate(mac, now, reserved)

    def adopt(self, mac, address, now, reserved=frozenset()):
        """Give ``mac`` the address it asks for when it is inside the range
        and free: a client renewing a lease from before an agent restart
        (leases are not persisted) keeps it.

        :param address: packed address.
        :returns: a :class:`~vmetal_ironic.dhcp_agent.messages.Binding` or
            ``None``.
        """
        self._expire(now)
        value = int.from_bytes(address, 'big')
        if (not self.first <= value <= self.last or value in self._holder
                or value in self._declined or address in reserved
                or mac in self._leases or mac in self._revoked):
            return None
        # Left wherever it is in the free queue or ahead of the cursor:
        # allocation skips held addresses.
        self._hold(mac, value, now + self.offer_hold, False)
        return self._binding(mac, value)

    def holds(self, address, now):
        """Whether a client took ``address`` (packed) and its lease runs
        at ``now``: an offer not yet requested, an expired lease or a
        declined address does not count.

        Safe from another thread (the bridge's): two dictionary lookups,
        each atomic, and a lease that changes meanwhile is read whole or
        not at all.
        """
        value = int.from_bytes(address, 'big')
        lease = self._leases.get(self._holder.get(value))
        return (lease is not None and lease.committed
                and lease.address == value and lease.expires > now)

    def revoked(self, mac):
        """``True`` while ``mac``'s lease has been taken back because a
        reservation claimed its address."""
        return mac in self._revoked

    def drop_offer(self, mac):
        """The client took another server's offer: free an address only
        offered to it."""
        lease = self._leases.get(mac)
        if lease is not None and not lease.committed:
            self._drop(mac)

    def commit(self, mac, now):
        """The client took its lease (ACK sent): hold it for the lease."""
        lease = self._leases.get(mac)
        if lease is not None:
            lease.expires = now + self.lease_time
            lease.committed = True
            self._schedule(lease.expires, 'lease', mac)

    def release(self, mac):
        self._drop(mac)

    def decline(self, mac, now):
        """The client found its address in use: set it aside a while."""
        lease = self._leases.pop(mac, None)
        if lease is not None:
            self._holder.pop(lease.address, None)
            until = now + self.lease_time
            self._declined[lease.address] = until
            self._schedule(until, 'declined', lease.address)

    def take_over(self, old, now):
        """Carry ``old``'s leases inside this range over (reload with new
        options): clients keep their addresses.

        :param old: the previous :class:`DynamicPool`.
        """
        old._expire(now)
        for mac, lease in old._leases.items():
            if self.first <= lease.address <= self.last:
                self._hold(mac, lease.address, lease.expires,
                           lease.committed)
        for address, until in old._declined.items():
            if self.first <= address <= self.last:
                self._declined[address] = until
                self._schedule(until, 'declined', address)
        for mac, until in old._revoked.items():
            self._revoked[mac] = until
            self._schedule(until, 'revoked', mac)

    def __len__(self):
        return len(self._leases)
