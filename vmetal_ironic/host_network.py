"""A host's network identity: resolve its properties, hold its address,
keep its network_data.

This is the one flow the CLI, the Ironic plugins and the Kubernetes
reconciler share. It talks to a store and to the pure domain modules, and
does no I/O of its own.
"""

import dataclasses

from vmetal_ironic import network_data
from vmetal_ironic import properties as props
from vmetal_ironic.store import base


@dataclasses.dataclass(frozen=True)
class HostNetwork:
    """The outcome of :func:`ensure`.

    :ivar owner: the owner identity (text).
    :ivar allocation: the store's allocation, or ``None`` for a custom
        network_data document.
    :ivar network_data: the document the host boots with.
    :ivar spec: the resolved :class:`~vmetal_ironic.properties.NetworkSpec`.
    :ivar ipv4: the :class:`~vmetal_ironic.network_data.PrimaryIPv4` the
        host boots with, computed here once for every consumer (DHCP
        reservation, host annotations), or ``None`` when a custom document
        has no static IPv4 network.
    """

    owner: str
    allocation: base.Allocation | None
    network_data: dict
    spec: props.NetworkSpec
    ipv4: network_data.PrimaryIPv4 | None = None
    subject: base.Subject | None = None


def defaults_from_conf(conf):
    """The ``[vmetal]`` defaults as the least specific property layer."""
    group = conf.vmetal
    return props.Layer({
        props.NETWORK_CIDR: group.network_cidr,
        props.NETWORK_IP_RANGE: group.network_ip_range,
        props.DNS_SERVERS: group.dns_servers,
    }, source='[vmetal] defaults')


def resolve_spec(store, owner, layers=(), defaults=None):
    """Merge the property layers for ``owner`` (a
    :class:`~vmetal_ironic.store.base.Subject`, or an identity the store
    resolves) and resolve them.

    Layers given by the caller are the most specific, then what the store
    knows of the owner, then ``defaults``.

    :raises vmetal_ironic.exception.PermanentError: bad or missing values.
    """
    everything = (*layers, *store.host_properties(owner), defaults)
    return props.resolve(props.merge(*everything),
                         props.sources(*everything))


def ensure(store, owner, mac=None, layers=(), defaults=None, mtu=1500):
    """Make sure ``owner`` has its address and network_data; idempotent.

    :param store: a :class:`~vmetal_ironic.store.base.Store`.
    :param owner: a :class:`~vmetal_ironic.store.base.Subject`, or the
        owner identity (e.g. ``BareMetalHost/ns/name``) resolved here once.
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
    # Resolved once: every call below takes the same subject (on
    # Kubernetes the BareMetalHost read once, for its properties, its
    # holder and its outputs).
    subject = store.subject(owner)
    spec = resolve_spec(store, subject, layers, defaults)
    if mac:
        mac = network_data.normalize_mac(mac)
    if not spec.uses_ipam:
        # A custom document replaces IPAM. Its address is held like an
        # allocation (so no pool hands it to another host), in place of any
        # address the owner held from an earlier pool-based definition.
        document = spec.custom_network_data
        ipv4 = network_data.primary(document)
        if ipv4 is not None:
            store.hold(subject, ipv4.address,
                       f'network-data of {subject.owner} (ip_address)')
        elif store.get_allocation(subject) is not None:
            # No static address in it (DHCP): the pool address goes back.
            store.release(subject)
        store.save_network_data(subject, document, ipv4)
        return HostNetwork(str(subject.owner), None, document, spec, ipv4,
                           subject)
    allocation = store.allocate(spec.pool, subject, mac=mac)
    document = network_data.build(mac or allocation.mac, allocation.address,
                                  spec.pool, spec.dns_servers, mtu=mtu)
    ipv4 = network_data.PrimaryIPv4(
        allocation.address, spec.pool.prefixlen, str(spec.pool.gateway),
        tuple(spec.dns_servers), mac or allocation.mac)
    # Always handed to the store, even when its stored copy already
    # matches: saving may span several objects (Secret, then host
    # annotations on Kubernetes), and an earlier attempt cut short between
    # them must be completed now. Stores skip writes that change nothing.
    store.save_network_data(subject, document, ipv4)
    return HostNetwork(str(subject.owner), allocation, document, spec, ipv4,
                       subject)


def release(store, owner):
    """Give the owner's address back; idempotent.

    :returns: the released allocation, or ``None``.
    """
    return store.release(owner)
