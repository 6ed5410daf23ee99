"""OpenStack network_data.json: building it for an allocation, checking
documents that users supply.

The format is the one cloud-init and Ironic's config drive read: a list of
``links`` (NICs matched by MAC), ``networks`` on those links and global
``services``.
"""

import dataclasses
import json
import re

import netaddr

from vmetal_ironic import exception

# netaddr reads "52:54:00" or "1" as a MAC; only full notations are meant.
_MAC_FORMS = re.compile(
    r'^(?:[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}'
    r'|[0-9a-f]{12}'
    r'|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4})$', re.IGNORECASE)
_DOTTED_QUAD = re.compile(r'^\d{1,3}(?:\.\d{1,3}){3}$')
REQUIRED_KEYS = ('links', 'networks', 'services')
LINK_ID = 'nic0'
NETWORK_ID = 'provisioning'


def normalize_mac(mac):
    """Return ``mac`` as lower-case, colon-separated text.

    :param mac: a MAC address in any common notation.
    :raises vmetal_ironic.exception.InvalidProperty: when it is not a MAC.
    """
    text = str(mac).strip()
    if not _MAC_FORMS.match(text):
        raise exception.InvalidProperty(f'MAC address {mac!r} is not valid')
    value = netaddr.EUI(text)
    value.dialect = netaddr.mac_unix_expanded
    return str(value).lower()


def _parse_servers(text, name):
    if text is None or not str(text).strip():
        return ()
    servers = []
    for raw in str(text).split(','):
        item = raw.strip()
        if not _DOTTED_QUAD.match(item):
            raise exception.InvalidProperty(
                f'{name} entry {item!r} is not an IPv4 address')
        try:
            servers.append(str(netaddr.IPAddress(item,
                                                 flags=netaddr.INET_PTON)))
        except (netaddr.AddrFormatError, ValueError):
            raise exception.InvalidProperty(
                f'{name} entry {item!r} is not an IPv4 address') from None
    return tuple(servers)


def parse_dns_servers(text):
    """Parse the comma-separated ``dns-servers`` property.

    :param text: e.g. ``"192.0.2.1, 198.51.100.53"``; empty or ``None`` is
        no servers.
    :returns: a tuple of address strings, in the given order.
    :raises vmetal_ironic.exception.InvalidProperty: naming the bad entry.
    """
    return _parse_servers(text, 'dns-servers')


def parse_ntp_servers(text):
    """Parse the comma-separated ``ntp-servers`` property, like
    :func:`parse_dns_servers`.

    :raises vmetal_ironic.exception.InvalidProperty: naming the bad entry.
    """
    return _parse_servers(text, 'ntp-servers')


def services_of(document, kind):
    """Addresses of the ``services`` of type ``kind`` in a document, in
    order."""
    return tuple(service['address']
                 for service in document.get('services', [])
                 if isinstance(service, dict) and service.get('type') == kind
                 and service.get('address'))


def build(mac, address, pool, dns_servers=(), mtu=1500):
    """Build network_data.json for one allocated address.

    :param mac: the host's boot MAC; the link is matched by it.
    :param address: the allocated address (text or ``netaddr.IPAddress``).
    :param pool: the :class:`~vmetal_ironic.ipam.pool.Pool` it came from.
    :param dns_servers: DNS server addresses, in order of preference.
    :param mtu: link MTU.
    :returns: the document as a dict. NTP servers are not in it: Ironic's
        network_data schema allows only ``dns`` services; they reach the
        host in DHCP option 42 instead.
    """
    services = [{'type': 'dns', 'address': server} for server in dns_servers]
    link = {'id': LINK_ID, 'type': 'phy', 'mtu': mtu}
    if mac:
        link['ethernet_mac_address'] = normalize_mac(mac)
    network = {
        'id': NETWORK_ID,
        'link': LINK_ID,
        # Ironic's network_data schema requires network_id.
        'network_id': NETWORK_ID,
        'type': 'ipv4',
        'ip_address': str(netaddr.IPAddress(address)),
        'netmask': pool.netmask,
        'routes': [{'network': '0.0.0.0', 'netmask': '0.0.0.0',
                    'gateway': str(pool.gateway)}],
        'services': list(services),
    }
    return {'links': [link], 'networks': [network], 'services': services}


def parse_custom(document):
    """Validate a user-supplied network_data document.

    :param document: JSON text or an already decoded mapping.
    :returns: the document as a dict.
    :raises vmetal_ironic.exception.InvalidNetworkData: naming what is wrong.
    """
    if isinstance(document, (str, bytes)):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise exception.InvalidNetworkData(
                f'network-data is not valid JSON: {exc}') from None
    if not isinstance(document, dict):
        raise exception.InvalidNetworkData(
            'network-data must be a JSON object with links, networks and '
            f'services, not {type(document).__name__}')
    missing = [key for key in REQUIRED_KEYS if key not in document]
    if missing:
        raise exception.InvalidNetworkData(
            f'network-data lacks {", ".join(missing)}; links, networks and '
            'services are all required')
    for key in REQUIRED_KEYS:
        if not isinstance(document[key], list):
            raise exception.InvalidNetworkData(
                f'network-data {key!r} must be a list, not '
                f'{type(document[key]).__name__}')
    link_ids = set()
    for index, link in enumerate(document['links']):
        if not isinstance(link, dict) or not link.get('id'):
            raise exception.InvalidNetworkData(
                f'network-data links[{index}] has no id')
        link_ids.add(link['id'])
    for index, network in enumerate(document['networks']):
        if not isinstance(network, dict):
            raise exception.InvalidNetworkData(
                f'network-data networks[{index}] is not an object')
        if network.get('link') not in link_ids:
            raise exception.InvalidNetworkData(
                f'network-data networks[{index}] names link '
                f'{network.get("link")!r}, which is not in links')
        _canonical_addresses(network, f'network-data networks[{index}]')
    return document


def _canonical(text, what):
    """``text`` as the one spelling of its IP address (``192.0.2.010`` is
    refused: a leading zero is octal to some readers, decimal to others)."""
    try:
        return str(netaddr.IPAddress(str(text), flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise exception.InvalidNetworkData(
            f'{what} {text!r} is not an IP address') from None


def _canonical_addresses(network, where):
    """Check and rewrite in canonical form the addresses of one network
    (``ip_address``, ``netmask``, each route's ``gateway``): the store
    claims the address by its text, so two spellings must not exist."""
    for key in ('ip_address', 'netmask'):
        if network.get(key) is not None:
            network[key] = _canonical(network[key], f'{where} {key}')
    routes = network.get('routes') or []
    if not isinstance(routes, list):
        raise exception.InvalidNetworkData(f'{where} routes is not a list')
    for number, route in enumerate(routes):
        if isinstance(route, dict) and route.get('gateway') is not None:
            route['gateway'] = _canonical(
                route['gateway'], f'{where} routes[{number}] gateway')


@dataclasses.dataclass(frozen=True)
class PrimaryIPv4:
    """A host's primary IPv4 configuration, computed once and handed on
    (to the host annotations, the DHCP reservation) instead of being
    parsed back out of a document by each consumer.

    :ivar address: the address as text.
    :ivar prefixlen: its prefix length, or ``None`` when a custom document
        gives no (valid) netmask.
    :ivar gateway: the default route's gateway, or ``None``.
    :ivar dns_servers: tuple of DNS server addresses.
    :ivar mac: the link's MAC, or ``None``.
    :ivar netmask: the netmask as the document gave it (for messages).
    """

    address: str
    prefixlen: int | None
    gateway: str | None = None
    dns_servers: tuple = ()
    mac: str | None = None
    netmask: str | None = None


def primary(document):
    """The :class:`PrimaryIPv4` of a document, or ``None`` when it has no
    static IPv4 network."""
    found = primary_ipv4(document)
    if found is None:
        return None
    address, netmask, gateway, mac = found
    try:
        prefixlen = (netaddr.IPAddress(netmask).netmask_bits() if netmask
                     else None)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        prefixlen = None
    dns = tuple(service.get('address')
                for service in document.get('services') or []
                if service.get('type') == 'dns' and service.get('address'))
    return PrimaryIPv4(str(address), prefixlen, gateway, dns, mac, netmask)


def primary_ipv4(document):
    """Find the first static IPv4 network of a document.

    :returns: ``(ip_address, netmask, gateway, mac)`` with ``None`` for what
        the document does not say, or ``None`` when there is no such network.
    """
    links = {link.get('id'): link for link in document.get('links', [])}
    for network in document.get('networks', []):
        if network.get('type') not in ('ipv4', 'static') or not network.get(
                'ip_address'):
            continue
        gateway = None
        for route in network.get('routes') or []:
            if route.get('network') == '0.0.0.0':
                gateway = route.get('gateway')
        mac = links.get(network.get('link'), {}).get('ethernet_mac_address')
        return (network['ip_address'], network.get('netmask'), gateway, mac)
    return None
