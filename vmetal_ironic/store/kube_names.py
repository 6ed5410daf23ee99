"""Names, labels and size limits of the Kubernetes store's objects (pure).

Everything here is arithmetic on strings, so the rules the store relies on
(object names, ConfigMap keys, the 1 MiB ceiling) are unit tested without
a cluster.

The ceiling: the API server rejects a ConfigMap whose ``data`` keys and
values add up to more than 1 MiB (1048576 bytes). The store stops at
:data:`DATA_BUDGET`, a little below, so a write is refused with a clear
error before the API server would truncate nothing but fail it. One
allocation entry costs ``len(address) + len(owner)`` bytes: with owners
like ``BareMetalHost/metal3/worker-0123`` (31 bytes) and addresses of up to
15 bytes that is 46 bytes, about 21,600 allocations per pool; with the
longest legal owner (``BareMetalHost/`` + a 63-byte namespace + ``/`` + a
253-byte name = 331 bytes) it is 346 bytes, still 2,900 allocations per
pool. :func:`max_entries` computes it for a given owner length.
"""

import hashlib
import re

from vmetal_ironic import exception

CONFIGMAP_LIMIT = 1024 * 1024
# Keep 32 KiB below the API server limit: room for a few more entries than
# the check saw if a caller races us, and never a request the server turns
# down for size.
DATA_BUDGET = CONFIGMAP_LIMIT - 32 * 1024

LABEL_PREFIX = 'vmetal-ironic.io/'
LABEL_COMPONENT = LABEL_PREFIX + 'component'
LABEL_POOL = LABEL_PREFIX + 'pool'
LABEL_OWNER_KIND = LABEL_PREFIX + 'owner-kind'
ANNOTATION_NETWORK = LABEL_PREFIX + 'network'
ANNOTATION_OWNER = LABEL_PREFIX + 'owner'
MANAGED_BY = {'app.kubernetes.io/managed-by': 'vmetal-ironic'}

COMPONENT_IPAM = 'ipam-pool'
COMPONENT_RESERVATIONS = 'dhcp-reservations'
COMPONENT_NETWORK_DATA = 'network-data'

POOL_PREFIX = 'vmetal-ipam-'
RESERVATIONS_NAME = 'vmetal-dhcp-reservations'
SECRET_PREFIX = 'vmetal-nd-'  # noqa: S105 - a name prefix
MAX_NAME = 253

# DNS-1123 subdomain: what object names may be.
_NAME_RE = re.compile(r'^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')
_OWNER_KIND_RE = re.compile(r'^[A-Za-z][A-Za-z0-9]*$')


class RecordFull(exception.DeploymentError):
    """An allocation or reservation ConfigMap would outgrow its ceiling.

    A stated ceiling of the store, not an exhausted pool: it is raised for
    the reservations ConfigMap too, where no pool is involved.
    """


def parse_owner(owner):
    """Split an owner identity into ``(kind, namespace, name)``.

    ``Kind/namespace/name`` is the convention for namespaced objects;
    ``Kind/name`` (e.g. ``Node/<uuid>``) is accepted with ``namespace``
    ``None``.

    :raises vmetal_ironic.exception.InvalidProperty: malformed owner.
    """
    text = str(owner or '').strip()
    parts = text.split('/')
    if len(parts) not in (2, 3) or not all(parts):
        raise exception.InvalidProperty(
            f'owner {owner!r} is not <Kind>/<namespace>/<name> or '
            '<Kind>/<name>')
    if not _OWNER_KIND_RE.match(parts[0]):
        raise exception.InvalidProperty(
            f'owner {owner!r}: kind {parts[0]!r} is not a Kubernetes kind')
    if len(parts) == 2:
        return parts[0], None, parts[1]
    return parts[0], parts[1], parts[2]


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
    """ConfigMap holding the allocations of one pool.

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
    kind, _, name = parse_owner(owner)
    return _dns_name(SECRET_PREFIX, f'{kind.lower()}-{name}',
                     f'{kind}/{name}')


def mac_key(mac):
    """ConfigMap key of a MAC: keys may not hold colons."""
    return str(mac).lower().replace(':', '-')


def data_size(data):
    """Bytes the API server counts for a ConfigMap's ``data``."""
    return sum(len(key.encode()) + len(value.encode())
               for key, value in (data or {}).items())


def max_entries(owner_length, address_length=15, budget=DATA_BUDGET):
    """How many allocations fit in one pool ConfigMap.

    :param owner_length: bytes of the owner identities stored.
    :param address_length: bytes of the address keys (at most 15 for IPv4).
    """
    return budget // (owner_length + address_length)


def check_ceiling(data, key, value, what, budget=DATA_BUDGET):
    """Refuse to add ``key: value`` to ``data`` past the size budget.

    :param what: the object named in the error, e.g. ``ConfigMap ns/name``.
    :raises RecordFull: when the entry does not fit.
    """
    size = data_size(data) + len(key.encode()) + len(value.encode())
    if size > budget:
        raise RecordFull(
            f'{what} would hold {size} bytes with {len(data or {}) + 1} '
            f'entries, beyond the {budget}-byte budget under the 1 MiB '
            'ConfigMap limit; split the pool into smaller networks')
