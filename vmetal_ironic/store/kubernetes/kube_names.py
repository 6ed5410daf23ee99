"""Names and labels of the Kubernetes store's objects (pure).

Everything here is arithmetic on strings, so the rules the store relies on
(object names, labels) are unit tested without a cluster. No object of the
store grows with the fleet: one AddressClaim per address, one
DHCPReservation per MAC, one Secret per host. The pool and reservation
ConfigMaps of earlier releases are named here only for
``vmetal-ipam migrate``.
"""

import hashlib
import re

from vmetal_ironic import owner as owner_mod

LABEL_PREFIX = 'vmetal-ironic.io/'
LABEL_COMPONENT = LABEL_PREFIX + 'component'
LABEL_POOL = LABEL_PREFIX + 'pool'
LABEL_OWNER_KIND = LABEL_PREFIX + 'owner-kind'
LABEL_OWNER = LABEL_PREFIX + 'owner'
LABEL_SCOPE = LABEL_PREFIX + 'scope'
LABEL_PURPOSE = LABEL_PREFIX + 'purpose'
LABEL_ADDRESS = LABEL_PREFIX + 'address'
LABEL_NODE = LABEL_PREFIX + 'node'
ANNOTATION_NETWORK = LABEL_PREFIX + 'network'
ANNOTATION_OWNER = LABEL_PREFIX + 'owner'
MANAGED_BY = {'app.kubernetes.io/managed-by': 'vmetal-ironic'}

COMPONENT_IPAM = 'ipam-pool'
COMPONENT_RESERVATIONS = 'dhcp-reservations'
COMPONENT_NETWORK_DATA = 'network-data'
COMPONENT_ADDRESS = 'address'
COMPONENT_RESERVATION = 'dhcp-reservation'
COMPONENT_ADDRESS_OWNER = 'address-owner'

# What an AddressClaim holds its address for (label and spec value).
PURPOSE_ALLOCATION = 'allocation'
PURPOSE_NETWORK_DATA = 'network-data'
PURPOSE_GATEWAY = 'gateway'
PURPOSE_RESERVED = 'reserved'

# The objects of this project's API group (etc/kubernetes/store).
API_GROUP = 'vmetal-ironic.io'
API_VERSION = 'v1alpha1'
ADDRESS_API = (API_GROUP, API_VERSION, 'addressclaims')
ADDRESS_KIND = 'AddressClaim'
OWNER_API = (API_GROUP, API_VERSION, 'addressowners')
OWNER_KIND = 'AddressOwner'
RESERVATION_API = (API_GROUP, API_VERSION, 'dhcpreservations')
RESERVATION_KIND = 'DHCPReservation'

POOL_PREFIX = 'vmetal-ipam-'
RESERVATIONS_NAME = 'vmetal-dhcp-reservations'
SECRET_PREFIX = 'vmetal-nd-'  # noqa: S105 - a name prefix
MAX_NAME = 253

# DNS-1123 subdomain: what object names may be.
_NAME_RE = re.compile(r'^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')


def _short_hash(text, length=10):
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _dns_name(prefix, text, original):
    """``prefix + text`` made a valid object name; a hash of ``original``
    is appended whenever characters had to be changed or cut, so distinct
    inputs never share a name."""
    cleaned = re.sub(r'[^a-z0-9.-]+', '-', text.lower()).strip('-.')
    name = prefix + cleaned
    if cleaned == text and len(name) <= MAX_NAME and _NAME_RE.match(name):
        return name
    suffix = '-' + _short_hash(original)
    return (name[:MAX_NAME - len(suffix)].rstrip('-.') + suffix)


def pool_configmap_name(pool_key):
    """ConfigMap that held the allocations of one pool (before 2026-12).

    ``198.51.100.0/24`` -> ``vmetal-ipam-198-51-100-0-24``: readable, unique
    per network, and a valid name (dots are allowed in names but would
    make it look like a domain, so they become dashes like the slash).
    """
    return POOL_PREFIX + re.sub(r'[^0-9a-z]+', '-', str(pool_key).lower())


def pool_label(pool_key):
    """Label value naming a pool (labels allow no ``/``)."""
    return re.sub(r'[^0-9a-z]+', '-', str(pool_key).lower())


def network_data_secret_name(owner):
    """Secret holding an owner's network_data, in the owner's namespace.

    ``BareMetalHost/metal3/worker-0`` -> ``vmetal-nd-baremetalhost-worker-0``.
    """
    parsed = owner_mod.parse(owner)
    kind, name = parsed.kind, parsed.name
    return _dns_name(SECRET_PREFIX, f'{kind.lower()}-{name}',
                     f'{kind}/{name}')


def claim_name(scope, address):
    """Name of the object holding ``address`` on the L2 ``scope``.

    ``default`` + ``192.0.2.7`` -> ``default.192.0.2.7``. The name is the
    uniqueness: whatever pool, prefix or range asks for an address, the
    API server refuses a second object of that name (409 AlreadyExists).
    The scope is a DNS label and the address always four numbers, so two
    (scope, address) pairs never share a name.
    """
    return f'{scope}.{address}'


def reservation_name(mac):
    """Name of the DHCP reservation of ``mac``: ``52-54-00-00-00-01``."""
    return mac_key(mac)


def mac_key(mac):
    """ConfigMap key of a MAC: keys may not hold colons."""
    return str(mac).lower().replace(':', '-')


def key_mac(key):
    """Inverse of :func:`mac_key`."""
    return key.replace('-', ':')
