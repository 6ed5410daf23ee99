"""The vMetal network properties and how layers of them combine.

Properties come in layers, most specific first: the host's own
annotations, its node type, then the default network environment (or, on
the local store, the ``[vmetal]`` options). The first layer that sets a key
wins. This module turns the merged properties into a :class:`NetworkSpec`:
either a pool to allocate from or a custom network_data document.
"""

import dataclasses

from vmetal_ironic import exception
from vmetal_ironic import network_data
from vmetal_ironic.ipam import pool as ipam_pool

PREFIX = 'metal3.vcluster.com/'
NETWORK_CIDR = PREFIX + 'network-cidr'
NETWORK_IP_RANGE = PREFIX + 'network-ip-range'
DNS_SERVERS = PREFIX + 'dns-servers'
NETWORK_DATA = PREFIX + 'network-data'
NTP_SERVERS = PREFIX + 'ntp-servers'

# Annotations written back onto a BareMetalHost with the result.
IP_ADDRESS = PREFIX + 'ip-address'
GATEWAY = PREFIX + 'gateway'

KNOWN_KEYS = (NETWORK_CIDR, NETWORK_IP_RANGE, DNS_SERVERS, NETWORK_DATA,
              NTP_SERVERS)


class Layer(dict):
    """A mapping of properties that knows where it came from, so that an
    error can name the layer to fix (``BareMetalHost ns/h annotations``,
    ``node type p_small``, ``NetworkEnvironment default``...).

    :param values: the properties.
    :param source: the layer's name for people.
    """

    def __init__(self, values=None, source=None):
        super().__init__(values or {})
        self.source = source


def sources(*layers):
    """``{key: source}`` of the layer each merged value comes from, by
    the rules of :func:`merge`."""
    found = {}
    for layer in layers:
        for key in KNOWN_KEYS:
            value = (layer or {}).get(key)
            if key not in found and value is not None and str(value).strip():
                found[key] = getattr(layer, 'source', None)
    return found


def _from(sources_of, keys, func, *args):
    """Run a parser; on a bad value add the layer it came from to the
    one-line message."""
    try:
        return func(*args)
    except exception.VmetalError as exc:
        where = [sources_of[key] for key in keys if sources_of.get(key)]
        if where:
            exc.message = (f'{exc.message} (from '
                           f'{", ".join(dict.fromkeys(where))})')
        raise


def merge(*layers):
    """Merge property layers, the first (most specific) winning.

    Empty strings count as unset so that a blank annotation on a host does
    not hide its node type's value.

    :param layers: mappings, most specific first; ``None`` is skipped.
    :returns: a new dict holding only the known vMetal keys.
    """
    return {key: value for key, value, _index in _winners(layers)}


def _winners(layers):
    """``(key, value, index of the layer)`` of each known key set."""
    seen = set()
    for index, layer in enumerate(layers):
        for key in KNOWN_KEYS:
            value = (layer or {}).get(key)
            if key not in seen and value is not None and str(value).strip():
                seen.add(key)
                yield key, str(value).strip(), index


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """What a host's properties ask for.

    Exactly one of ``pool`` and ``custom_network_data`` is set.
    """

    pool: ipam_pool.Pool | None = None
    dns_servers: tuple = ()
    custom_network_data: dict | None = None
    #: ``ntp-servers``: handed out in DHCP option 42.
    ntp_servers: tuple = ()

    @property
    def uses_ipam(self):
        return self.pool is not None


def resolve(properties, sources_of=None):
    """Turn merged properties into a :class:`NetworkSpec`.

    A custom ``network-data`` document overrides IPAM: cidr and ranges are
    then ignored, and no address is taken from any pool.

    :param properties: a mapping from :func:`merge`.
    :param sources_of: :func:`sources` of the same layers; errors then name
        the layer a bad value came from.
    :returns: a :class:`NetworkSpec`.
    :raises vmetal_ironic.ipam.errors.IpamError: bad cidr or ranges.
    :raises vmetal_ironic.exception.InvalidNetworkData: bad custom document.
    :raises vmetal_ironic.exception.InvalidProperty: bad dns or ntp
        servers.
    """
    sources_of = sources_of or {}
    # NTP servers reach the host in DHCP option 42 whatever the address
    # comes from (Ironic's network_data schema has no ntp service).
    ntp = _from(sources_of, (NTP_SERVERS,), network_data.parse_ntp_servers,
                properties.get(NTP_SERVERS))
    custom = properties.get(NETWORK_DATA)
    if custom:
        return NetworkSpec(custom_network_data=_from(
            sources_of, (NETWORK_DATA,), network_data.parse_custom, custom),
            ntp_servers=ntp)
    pool = _from(sources_of, (NETWORK_CIDR, NETWORK_IP_RANGE),
                 ipam_pool.parse_pool, properties.get(NETWORK_CIDR),
                 properties.get(NETWORK_IP_RANGE))
    dns = _from(sources_of, (DNS_SERVERS,), network_data.parse_dns_servers,
                properties.get(DNS_SERVERS))
    return NetworkSpec(pool=pool, dns_servers=dns, ntp_servers=ntp)


def parse_assignments(items):
    """Parse ``key=value`` strings given on a command line.

    Keys without a ``/`` are taken as short vMetal names, so
    ``network-cidr=192.0.2.1/24`` means :data:`NETWORK_CIDR`.

    :param items: iterable of ``key=value`` strings.
    :returns: a dict.
    :raises vmetal_ironic.exception.InvalidProperty: on an item without ``=``.
    """
    result = {}
    for item in items or ():
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise exception.InvalidProperty(
                f'property {item!r} is not key=value')
        key = key.strip()
        if '/' not in key:
            key = PREFIX + key
        result[key] = value
    return result
