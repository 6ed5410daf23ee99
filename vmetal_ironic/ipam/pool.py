"""Pool definitions parsed from the vMetal network properties.

A pool is a network given as ``<gateway>/<prefix>`` and, optionally, a set
of ranges inside it. The network, gateway and broadcast addresses are never
handed out, whichever mode the pool is in.
"""

import dataclasses
import itertools
import re

import netaddr

from vmetal_ironic.ipam import errors

# netaddr accepts shorthand such as "10/8" or "1.2.3"; operators mean a
# dotted quad, so the shape is checked before netaddr parses the value.
_DOTTED_QUAD = r'\d{1,3}(?:\.\d{1,3}){3}'
_CIDR_RE = re.compile(rf'^({_DOTTED_QUAD})/(\d{{1,2}})$')
_ADDRESS_RE = re.compile(rf'^{_DOTTED_QUAD}$')


@dataclasses.dataclass(frozen=True)
class Pool:
    """An IPv4 address pool.

    :ivar network: the network, e.g. ``192.0.2.0/24``.
    :ivar gateway: the gateway address, never handed out.
    :ivar intervals: allocatable ``(first, last)`` integer pairs, sorted,
        inclusive, with network and broadcast already cut away.
    :ivar ranges_text: the ranges as given (canonical form), or ``None``
        in CIDR mode.
    """

    network: netaddr.IPNetwork
    gateway: netaddr.IPAddress
    intervals: tuple
    ranges_text: str | None = None

    @property
    def key(self):
        """Identity of the address space allocations are tracked in.

        Pools on the same network share allocations even when their ranges
        differ, so two node types on one L2 can never get the same address.
        """
        return str(self.network.cidr)

    @property
    def name(self):
        """Human name used in messages and listings."""
        if self.ranges_text:
            return f'{self.key} ranges {self.ranges_text}'
        return self.key

    @property
    def prefixlen(self):
        return self.network.prefixlen

    @property
    def netmask(self):
        return str(self.network.netmask)

    @property
    def reserved(self):
        """Integers inside the intervals that must never be handed out."""
        gateway = int(self.gateway)
        return frozenset(
            value for value in (gateway,)
            if any(first <= value <= last for first, last in self.intervals))

    @property
    def size(self):
        """Number of addresses this pool can hand out."""
        total = sum(last - first + 1 for first, last in self.intervals)
        return total - len(self.reserved)

    def contains(self, address):
        """Tell whether ``address`` is one this pool may hand out.

        :param address: an address as text, integer or ``netaddr.IPAddress``.
        """
        value = int(netaddr.IPAddress(address))
        if value in self.reserved:
            return False
        return any(first <= value <= last for first, last in self.intervals)

    def count_used(self, addresses):
        """How many of ``addresses`` this pool could have handed out: the
        used part of :attr:`size` (others, from an overlapping or older
        definition of the network, do not count).

        :param addresses: addresses as text, integers or
            ``netaddr.IPAddress``.
        """
        return sum(1 for address in addresses if self.contains(address))

    def exhausted_message(self):
        what = 'all ranges exhausted' if self.ranges_text else 'CIDR exhausted'
        return f'pool {self.name}: {what}; no free addresses left'


def _parse_address(text, what):
    text = text.strip()
    if ':' in text:
        raise errors.UnsupportedIPv6(
            f'{what} {text!r} is IPv6; only IPv4 pools are supported yet')
    if not _ADDRESS_RE.match(text):
        raise errors.InvalidRange(f'{what} {text!r} is not an IPv4 address')
    try:
        return netaddr.IPAddress(text, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError):
        raise errors.InvalidRange(
            f'{what} {text!r} is not an IPv4 address') from None


def parse_cidr(text):
    """Parse ``<gateway>/<prefix>`` into the network and its gateway.

    :param text: the ``metal3.vcluster.com/network-cidr`` value.
    :returns: ``(netaddr.IPNetwork, netaddr.IPAddress)``.
    :raises MissingCidr: when ``text`` is empty or ``None``.
    :raises UnsupportedIPv6: when ``text`` is an IPv6 network.
    :raises InvalidCidr: when ``text`` is not ``<gateway>/<prefix>``.
    :raises InvalidGateway: when the gateway is the network or broadcast.
    """
    if text is None or not str(text).strip():
        raise errors.MissingCidr(
            'network-cidr is not set; expected <gateway>/<prefix>, '
            'e.g. 192.0.2.1/24')
    text = str(text).strip()
    if ':' in text:
        raise errors.UnsupportedIPv6(
            f'network-cidr {text!r} is IPv6; only IPv4 pools are supported yet')
    match = _CIDR_RE.match(text)
    if not match:
        raise errors.InvalidCidr(
            f'network-cidr {text!r} is not <gateway>/<prefix>, '
            'e.g. 192.0.2.1/24')
    address_text, prefix_text = match.groups()
    prefix = int(prefix_text)
    if not 1 <= prefix <= 30:
        raise errors.InvalidCidr(
            f'network-cidr {text!r} has prefix /{prefix}; '
            'use /1 to /30 so hosts fit beside the gateway')
    try:
        gateway = netaddr.IPAddress(address_text, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError):
        raise errors.InvalidCidr(
            f'network-cidr {text!r}: {address_text!r} is not an IPv4 '
            'address') from None
    network = netaddr.IPNetwork(f'{gateway}/{prefix}')
    if gateway == network.network:
        raise errors.InvalidGateway(
            f'network-cidr {text!r}: gateway {gateway} is the network '
            'address; give the gateway, e.g. '
            f'{netaddr.IPAddress(network.first + 1)}/{prefix}')
    if gateway == network.broadcast:
        raise errors.InvalidGateway(
            f'network-cidr {text!r}: gateway {gateway} is the broadcast '
            'address')
    return network, gateway


def parse_ranges(text, network):
    """Parse ``a-b[,c-d...]`` into sorted inclusive integer intervals.

    :param text: the ``metal3.vcluster.com/network-ip-range`` value.
    :param network: the ``netaddr.IPNetwork`` the ranges must lie in.
    :returns: a tuple of ``(first, last)`` integer pairs, sorted.
    :raises InvalidRange: for a malformed range or address.
    :raises ReversedRange: when a range starts after it ends.
    :raises RangeOutsideCidr: when a range leaves the network.
    :raises OverlappingRanges: when two ranges share an address.
    """
    parsed = []
    for raw in str(text).split(','):
        item = raw.strip()
        if not item:
            raise errors.InvalidRange(
                f'network-ip-range {text!r} has an empty range; '
                'expected a-b[,c-d...]')
        if ':' in item:
            raise errors.UnsupportedIPv6(
                f'network-ip-range {item!r} is IPv6; only IPv4 pools are '
                'supported yet')
        bounds = item.split('-')
        if len(bounds) == 1:
            bounds = [bounds[0], bounds[0]]
        if len(bounds) != 2:
            raise errors.InvalidRange(
                f'network-ip-range {item!r} is not a-b')
        first = _parse_address(bounds[0], f'network-ip-range {item!r}: start')
        last = _parse_address(bounds[1], f'network-ip-range {item!r}: end')
        if first > last:
            raise errors.ReversedRange(
                f'network-ip-range {item!r} is reversed: {first} comes '
                f'after {last}')
        if first not in network or last not in network:
            raise errors.RangeOutsideCidr(
                f'network-ip-range {item!r} is outside network-cidr '
                f'{network.cidr}')
        parsed.append((int(first), int(last), item))
    parsed.sort()
    for (_, prev_last, prev_item), (first, _, item) in itertools.pairwise(
            parsed):
        if first <= prev_last:
            raise errors.OverlappingRanges(
                f'network-ip-range {prev_item!r} and {item!r} overlap')
    return tuple((first, last) for first, last, _ in parsed)


def parse_pool(cidr, ip_range=None):
    """Build a :class:`Pool` from the vMetal properties.

    :param cidr: ``metal3.vcluster.com/network-cidr``, ``<gateway>/<prefix>``.
    :param ip_range: optional ``metal3.vcluster.com/network-ip-range``.
    :returns: a :class:`Pool`.
    :raises IpamError: a subclass naming what is wrong.
    """
    network, gateway = parse_cidr(cidr)
    host_first, host_last = network.first + 1, network.last - 1
    ranges_text = None
    if ip_range is not None and str(ip_range).strip():
        given = parse_ranges(ip_range, network)
        # Cut the network and broadcast addresses off ranges that reach them.
        intervals = tuple(
            (max(first, host_first), min(last, host_last))
            for first, last in given
            if max(first, host_first) <= min(last, host_last))
        ranges_text = ','.join(
            f'{netaddr.IPAddress(first)}-{netaddr.IPAddress(last)}'
            for first, last in given)
    else:
        intervals = ((host_first, host_last),)
    pool = Pool(network=network.cidr, gateway=gateway, intervals=intervals,
                ranges_text=ranges_text)
    if pool.size <= 0:
        raise errors.EmptyPool(
            f'pool {pool.name} has no address to hand out besides the '
            f'gateway {gateway}')
    return pool
