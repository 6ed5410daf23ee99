"""The ``vmetal`` network interface.

Built on Ironic's :class:`NoopNetwork`: there is no SDN to program, the
provisioning L2 is flat. (``VIFPortIDMixin`` is not used: its
``vif_attach`` asks Neutron for physical networks.) It adds what vmetal
needs on top:

* :meth:`VmetalNetwork.validate` resolves the node's network properties
  (see :mod:`vmetal_ironic.ironic.nodes` for where they come from) and
  fails with Ironic's ``InvalidParameterValue`` and a one-line message when
  the cidr is missing or malformed;
* adding the provisioning, cleaning, inspection, rescuing or servicing
  network runs the provisioning hook (:func:`provisioning.prepare`): the
  host gets its address and network_data; removing one withdraws the
  node's DHCP reservations (the address stays);
* :meth:`VmetalNetwork.get_node_network_data` returns the host's document;
* a conductor periodic task releases the addresses of ``Node/<uuid>``
  owners whose node was deleted, because Ironic calls no driver on node
  deletion.

It does not claim the ``metadata`` capability: with it Ironic would
regenerate the config drive's network data from Neutron-style VIFs.
"""

from ironic.common import exception as ironic_exc
from ironic.conductor import periodics
from ironic.drivers.modules.network import noop
from ironic import objects
from oslo_log import log

from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.ironic import errors
from vmetal_ironic.ironic import nodes
from vmetal_ironic.ironic import provisioning
from vmetal_ironic.ironic import node_reservations
from vmetal_ironic.ironic import store_access

LOG = log.getLogger(__name__)

CONF = vmetal_conf.CONF


def _sweep_interval():
    return CONF.vmetal_ironic.release_deleted_nodes_interval


def _release_deleted(store, uuid, owner):
    # The node's own reservations only (label-selected on Kubernetes), not
    # the fleet's once per deleted node.
    for res in store.reservations_of(node=uuid):
        store.withdraw_reservation(res.mac)
    store.release(owner)
    return True


class VmetalNetwork(noop.NoopNetwork):
    """Network interface giving nodes their vmetal network identity."""

    capabilities = []

    def validate(self, task):
        """Check that the node's network properties resolve.

        :param task: a TaskManager instance.
        :raises ironic.common.exception.InvalidParameterValue: missing or
            malformed cidr, ranges, dns servers or custom network-data.
        :raises ironic.common.exception.NetworkError: store trouble.
        """
        nodes.resolve(task)

    def validate_inspection(self, task):
        """Inspection boots on the provisioning network too."""
        nodes.resolve(task)

    def validate_rescue(self, task):
        """Rescue boots on the provisioning network too."""
        nodes.resolve(task)

    def add_provisioning_network(self, task):
        provisioning.prepare(task)

    def add_cleaning_network(self, task):
        provisioning.prepare(task)

    def add_inspection_network(self, task):
        provisioning.prepare(task)

    def add_rescuing_network(self, task):
        provisioning.prepare(task)

    def add_servicing_network(self, task):
        provisioning.prepare(task)

    def _leave_provisioning_network(self, task):
        # The node stops PXE booting on the provisioning L2: withdraw its
        # reservations so the agent ignores it (Ironic does not call
        # clean_dhcp_opts when cleaning, inspection or rescue end or are
        # aborted). A failure only leaves a stale reservation behind, so
        # it is logged rather than failing the state change.
        errors.best_effort(task, 'withdraw the reservations of',
                           node_reservations.withdraw, task)

    def remove_provisioning_network(self, task):
        self._leave_provisioning_network(task)

    def remove_cleaning_network(self, task):
        self._leave_provisioning_network(task)

    def remove_inspection_network(self, task):
        self._leave_provisioning_network(task)

    def remove_rescuing_network(self, task):
        self._leave_provisioning_network(task)

    def remove_servicing_network(self, task):
        self._leave_provisioning_network(task)

    def configure_tenant_networks(self, task):
        # The ramdisk deploy boots the instance on the provisioning L2
        # without adding the provisioning network first.
        provisioning.prepare(task)

    def get_node_network_data(self, task):
        """The host's network_data.json.

        Network data the caller set on the node wins, as everywhere in
        vmetal; otherwise the host's document, allocating if needed.

        :returns: the document as a dict.
        """
        if provisioning.supplied_by_caller(task.node):
            return task.node.network_data
        return nodes.ensure(task).network_data

    @periodics.periodic(spacing=_sweep_interval)
    def release_deleted_nodes(self, manager, context):
        """Release addresses of ``Node/<uuid>`` owners whose node is gone.

        Safe with several conductors: releasing and withdrawing are
        idempotent, and an owner's allocation is only ever created after
        its node exists.
        """
        try:
            store = store_access.get_store()
            allocations = store.list_allocations()
        except Exception as exc:
            LOG.warning('vmetal: cannot list allocations to release those '
                        'of deleted nodes: %s', exc)
            return
        for allocation in allocations:
            uuid = owner_mod.node_uuid_of(allocation.owner)
            if uuid is None:
                continue
            try:
                objects.Node.get_by_uuid(context, uuid)
                continue
            except ironic_exc.NodeNotFound:
                pass
            if not errors.best_effort(
                    uuid, f'release {allocation.address} of deleted',
                    _release_deleted, store, uuid, allocation.owner,
                    default=False):
                continue
            LOG.info('vmetal: node %(node)s no longer exists; released '
                     '%(address)s', {'node': uuid,
                                     'address': allocation.address})
