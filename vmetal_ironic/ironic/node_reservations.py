"""The node's reservations in the store: which they are, withdrawing them.

Shared by the ``vmetal`` DHCP provider (``clean_dhcp_opts``) and the
``vmetal`` network interface (leaving the provisioning network), so that
neither has to import the other. Publishing stays in the provider: it is
the one that knows the DHCP options.
"""

from oslo_log import log

from vmetal_ironic.ironic import nodes
from vmetal_ironic.ironic import store_access

LOG = log.getLogger(__name__)


def find(task):
    """The node's current reservations: by its MACs or by its UUID."""
    return store_access.get_store().reservations_of(
        node=task.node.uuid, macs=nodes.boot_macs(task))


def withdraw(task):
    """Withdraw every reservation of the node, so the agent ignores it.

    Reservations recorded for the node under a MAC it no longer has are
    withdrawn too. The address stays allocated.

    :returns: the sorted MACs withdrawn.
    :raises Exception: whatever the store raises; callers translate
        (:mod:`vmetal_ironic.ironic.errors`).
    """
    store = store_access.get_store()
    macs = set(nodes.boot_macs(task))
    macs.update(res.mac for res in find(task))
    for mac in sorted(macs):
        store.withdraw_reservation(mac)
    LOG.info('vmetal: node %(node)s: reservations of %(macs)s '
             'withdrawn', {'node': task.node.uuid,
                           'macs': ', '.join(sorted(macs)) or 'no MAC'})
    return sorted(macs)
