"""The optional dynamic range: short leases for hosts without a reservation.

Used to inspect unknown hosts. Pure in-memory state with the time passed
in; leases are not persisted (an agent restart only means the next
inspection boot may get another address) and not shared between agents,
so run the dynamic range on one agent only.
"""

import dataclasses
import ipaddress

from vmetal_ironic.pxe import decisions


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

    :param first: first address (int).
    :param last: last address (int).
    :param prefixlen: prefix length sent with the lease.
    :param gateway: router option or ``None``.
    :param dns_servers: DNS servers.
    :param lease_time: seconds.
    :param offer_hold: seconds an offered but unrequested address is held.
    """

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
        self._declined = {}

    def _binding(self, mac, address):
        return decisions.Binding(
            mac=mac, address=address.to_bytes(4, 'big'),
            prefixlen=self.prefixlen, gateway=self.gateway,
            dns_servers=self.dns_servers, lease_time=self.lease_time,
            dynamic=True)

    def _expire(self, now):
        for mac in [mac for mac, lease in self._leases.items()
                    if lease.expires <= now]:
            del self._leases[mac]
        for address in [address for address, until in self._declined.items()
                        if until <= now]:
            del self._declined[address]

    def lookup(self, mac, now, allocate, reserved=frozenset()):
        """The binding of ``mac``; a new one only if ``allocate``.

        :param reserved: packed addresses held by reservations, skipped.
        :returns: a :class:`~vmetal_ironic.pxe.decisions.Binding` or
            ``None`` (no lease and not allocating, or range full).
        """
        self._expire(now)
        lease = self._leases.get(mac)
        if lease is not None:
            return self._binding(mac, lease.address)
        if not allocate:
            return None
        taken = {lease.address for lease in self._leases.values()}
        for address in range(self.first, self.last + 1):
            if (address in taken or address in self._declined
                    or address.to_bytes(4, 'big') in reserved):
                continue
            self._leases[mac] = _Lease(address, now + self.offer_hold,
                                       False)
            return self._binding(mac, address)
        return None

    def commit(self, mac, now):
        """The client took its lease (ACK sent): hold it for the lease."""
        lease = self._leases.get(mac)
        if lease is not None:
            lease.expires = now + self.lease_time
            lease.committed = True

    def release(self, mac):
        self._leases.pop(mac, None)

    def decline(self, mac, now):
        """The client found its address in use: set it aside a while."""
        lease = self._leases.pop(mac, None)
        if lease is not None:
            self._declined[lease.address] = now + self.lease_time

    def __len__(self):
        return len(self._leases)
