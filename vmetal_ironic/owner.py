"""Who holds an address: the owner identity shared by every store and
adapter (pure).

An owner is written ``<Kind>/<namespace>/<name>`` for a namespaced object
(``Machine/default/worker-0``, ``BareMetalHost/metal3/host-0``) or
``<Kind>/<name>`` for a cluster-wide one (``Node/<uuid>`` for a standalone
Ironic node, ``Gateway/<scope>.<address>`` for the addresses the store
keeps out of every pool). Parsing it in one place gives both stores the
same rule and saves every caller comparing kind strings.
"""

import dataclasses
import hashlib
import re

from vmetal_ironic import exception

NODE = 'Node'
BAREMETALHOST = 'BareMetalHost'
# Addresses nobody may be given: a pool's gateway, an infrastructure
# address from [vmetal]reserved_addresses.
GATEWAY = 'Gateway'
RESERVED = 'Reserved'
INFRASTRUCTURE_KINDS = frozenset({GATEWAY, RESERVED})

METAL3_SEPARATOR = '~'

# The kind is written lowercased as a label value: 63 characters at most.
_KIND_RE = re.compile(r'^[A-Za-z][A-Za-z0-9]{0,62}$')


@dataclasses.dataclass(frozen=True)
class Owner:
    """An owner identity.

    :ivar kind: a Kubernetes-style kind, e.g. ``Machine``.
    :ivar namespace: the namespace, or ``None`` for a cluster-wide owner.
    :ivar name: the object's name.
    """

    kind: str
    namespace: str | None
    name: str

    def __str__(self):
        if self.namespace is None:
            return f'{self.kind}/{self.name}'
        return f'{self.kind}/{self.namespace}/{self.name}'

    @property
    def label(self):
        """A legal label value standing for the owner (a hash: owners are
        longer than the 63 characters and richer than the characters a
        label value allows). Lookups by it are confirmed against the full
        owner the object records."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:40]

    @property
    def is_infrastructure(self):
        """Whether this stands for an address kept out of the pools rather
        than for a host."""
        return self.kind in INFRASTRUCTURE_KINDS

    @property
    def node_uuid(self):
        """The Ironic node UUID of a ``Node/<uuid>`` owner, else ``None``."""
        if self.kind == NODE and self.namespace is None:
            return self.name
        return None


def parse(text):
    """Parse an owner identity.

    :param text: ``Kind/namespace/name`` or ``Kind/name`` (an
        :class:`Owner` is returned as it is).
    :returns: an :class:`Owner`.
    :raises vmetal_ironic.exception.InvalidProperty: malformed owner.
    """
    if isinstance(text, Owner):
        return text
    value = str(text or '').strip()
    parts = value.split('/')
    if len(parts) not in (2, 3) or not all(parts):
        raise exception.InvalidProperty(
            f'owner {text!r} is not <Kind>/<namespace>/<name> or '
            '<Kind>/<name>')
    if not _KIND_RE.match(parts[0]):
        raise exception.InvalidProperty(
            f'owner {text!r}: kind {parts[0]!r} is not a Kubernetes kind')
    if len(parts) == 2:
        return Owner(parts[0], None, parts[1])
    return Owner(parts[0], parts[1], parts[2])


def for_node(uuid):
    """The owner of a standalone Ironic node's address."""
    return Owner(NODE, None, str(uuid))


def for_host(namespace, name):
    """The owner standing for a BareMetalHost no Machine has claimed."""
    return Owner(BAREMETALHOST, namespace, name)


def for_infrastructure(kind, scope, address):
    """The owner of a gateway or reserved address in ``scope``."""
    return Owner(kind, None, f'{scope}.{address}')


def metal3_host_of(node_name):
    """``(namespace, host)`` of a node named ``<ns>~<host>`` by
    baremetal-operator, else ``None``."""
    namespace, sep, host = (node_name or '').partition(METAL3_SEPARATOR)
    if sep and namespace and host and METAL3_SEPARATOR not in host:
        return namespace, host
    return None


def of_ironic_node(name, uuid):
    """The owner identity an Ironic node's address is asked for.

    A node baremetal-operator named ``<ns>~<host>`` stands for its
    BareMetalHost (the Kubernetes store then finds the Machine claiming
    it); any other node is a standalone ``Node/<uuid>``.
    """
    host = metal3_host_of(name)
    if host is not None:
        return for_host(*host)
    return for_node(uuid)


def node_uuid_of(text):
    """The node UUID of a ``Node/<uuid>`` owner, else ``None`` (also for
    text that is no owner at all)."""
    try:
        return parse(text).node_uuid
    except exception.InvalidProperty:
        return None
