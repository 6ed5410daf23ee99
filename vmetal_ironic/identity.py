"""A host's network identity: resolve its properties, hold its address,
keep its network_data.

This is the one flow the CLI, the Ironic plugins and the Kubernetes
reconciler share. It talks to a store and to the pure domain modules, and
does no I/O of its own.
"""

import dataclasses

from vmetal_ironic import network_data
from vmetal_ironic import properties as props


@dataclasses.dataclass(frozen=True)
class HostNetwork:
    """The outcome of :func:`ensure`.

    :ivar owner: the owner identity.
    :ivar allocation: the store's allocation, or ``None`` for a custom
        network_data document.
    :ivar network_data: the document the host boots with.
    :ivar spec: the resolved :class:`~vmetal_ironic.properties.NetworkSpec`.
    """

    owner: str
    allocation: object
    network_data: dict
    spec: props.NetworkSpec


def defaults_from_conf(conf):
    """The ``[vmetal]`` defaults as the least specific property layer."""
    group = conf.vmetal
    return {
        props.NETWORK_CIDR: group.network_cidr,
        props.NETWORK_IP_RANGE: group.network_ip_range,
        props.DNS_SERVERS: group.dns_servers,
    }


def resolve_spec(store, owner, layers=(), defaults=None):
    """Merge the property layers for ``owner`` and resolve them.

    Layers given by the caller are the most specific, then what the store
    knows of the owner, then ``defaults``.

    :raises vmetal_ironic.exception.PermanentError: bad or missing values.
    """
    merged = props.merge(*layers, *store.host_properties(owner), defaults)
    return props.resolve(merged)


def ensure(store, owner, mac=None, layers=(), defaults=None, mtu=1500):
    """Make sure ``owner`` has its address and network_data; idempotent.

    :param store: a :class:`~vmetal_ironic.store.base.Store`.
    :param owner: the owner identity, e.g. ``BareMetalHost/ns/name``.
    :param mac: the boot MAC the network_data link is keyed by.
    :param layers: extra property mappings, most specific first.
    :param defaults: the least specific layer (see :func:`defaults_from_conf`).
    :param mtu: link MTU for generated documents.
    :returns: a :class:`HostNetwork`.
    :raises vmetal_ironic.exception.VmetalError: bad properties, exhausted
        pool or store trouble. Bad properties write nothing; store trouble
        after the allocation leaves the address allocated (the next call
        completes the network_data, see below).
    """
    spec = resolve_spec(store, owner, layers, defaults)
    if mac:
        mac = network_data.normalize_mac(mac)
    if not spec.uses_ipam:
        # A custom document replaces IPAM: an address the owner held from
        # an earlier pool-based definition goes back to the pool.
        allocation = store.get_allocation(owner)
        if allocation is not None:
            store.release(owner)
        document = spec.custom_network_data
        store.save_network_data(owner, document)
        return HostNetwork(owner, None, document, spec)
    allocation = store.allocate(spec.pool, owner, mac=mac)
    document = network_data.build(mac or allocation.mac, allocation.address,
                                  spec.pool, spec.dns_servers, mtu=mtu)
    # Always handed to the store, even when its stored copy already
    # matches: saving may span several objects (Secret, then host
    # annotations on Kubernetes), and an earlier attempt cut short between
    # them must be completed now. Stores skip writes that change nothing.
    store.save_network_data(owner, document)
    return HostNetwork(owner, allocation, document, spec)


def release(store, owner):
    """Give the owner's address back; idempotent.

    :returns: the released allocation, or ``None``.
    """
    return store.release(owner)
