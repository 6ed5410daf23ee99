"""What vmetal needs to know about an Ironic node, and the shared flow
that gives it its network identity.

Where a node's network properties come from, most specific first:

1. the node's ``extra`` field, keys named like the vMetal properties
   (``metal3.vcluster.com/network-cidr`` and friends);
2. the node's ``properties`` field, same keys;
3. the layers the store knows for the owner (on Kubernetes: the
   BareMetalHost's annotations, its node type, the default network
   environment; on the local store: none);
4. the ``[vmetal]`` options.

The owner of the address is ``BareMetalHost/<ns>/<host>`` for a Metal3
node (named ``<ns>~<host>`` by baremetal-operator), otherwise
``Node/<uuid>``. The boot MAC is the first PXE-enabled port's address.

Errors of the domain and the store are turned into Ironic's own
exception types by :mod:`vmetal_ironic.ironic.errors`, so Ironic reports
them on the node (``last_error``, the validate API) instead of logging a
traceback; a bad property is reported with the layer it came from.
"""

from oslo_log import log

from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import exception
from vmetal_ironic import host_network
from vmetal_ironic import network_data
from vmetal_ironic import owner as owner_mod
from vmetal_ironic import properties as props
from vmetal_ironic.ironic import errors
from vmetal_ironic.ironic import store_access

LOG = log.getLogger(__name__)

CONF = vmetal_conf.CONF

METAL3_SEPARATOR = owner_mod.METAL3_SEPARATOR


def owner_for(node):
    """The owner identity of ``node``'s address, an
    :class:`~vmetal_ironic.owner.Owner`
    (:func:`vmetal_ironic.owner.of_ironic_node`): the store resolves it to
    a subject once, in :func:`vmetal_ironic.host_network.ensure`."""
    return owner_mod.of_ironic_node(node.name, node.uuid)


def boot_macs(task):
    """Normalised MACs of the node's PXE-enabled ports, in port order.

    Ports whose address is not a MAC are logged and left out.
    """
    macs = []
    for port in task.ports:
        if not port.pxe_enabled:
            continue
        try:
            mac = network_data.normalize_mac(port.address)
        except exception.InvalidProperty as exc:
            LOG.warning('Node %(node)s: ignoring port %(port)s: %(err)s',
                        {'node': task.node.uuid, 'port': port.uuid,
                         'err': exc})
            continue
        if mac not in macs:
            macs.append(mac)
    return macs


def property_layers(node):
    """The node's own property layers, most specific first."""
    return [props.Layer(node.extra, f'node {node.uuid} extra'),
            props.Layer(node.properties, f'node {node.uuid} properties')]


def resolve(task):
    """Check that the node's properties resolve, without writing anything.

    :returns: the :class:`~vmetal_ironic.properties.NetworkSpec`.
    :raises ironic.common.exception.InvalidParameterValue: bad or missing
        properties (e.g. no network-cidr), with a one-line message naming
        the layer the bad value came from.
    :raises ironic.common.exception.NetworkError: store trouble.
    """
    store = store_access.get_store()
    owner = owner_for(task.node)
    return errors.call(
        task, 'resolve the network of', host_network.resolve_spec, store, owner,
        property_layers(task.node), host_network.defaults_from_conf(CONF))


def ensure(task):
    """Give the node its address and network_data; idempotent.

    :returns: a :class:`vmetal_ironic.host_network.HostNetwork`.
    :raises ironic.common.exception.InvalidParameterValue: bad properties
        or an exhausted pool.
    :raises ironic.common.exception.NetworkError: store trouble.
    """
    store = store_access.get_store()
    owner = owner_for(task.node)
    macs = boot_macs(task)
    return errors.call(
        task, 'allocate an address for', host_network.ensure, store, owner,
        mac=macs[0] if macs else None, layers=property_layers(task.node),
        defaults=host_network.defaults_from_conf(CONF), mtu=CONF.vmetal.mtu)
