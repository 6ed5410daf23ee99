"""The ``vmetal`` DHCP provider (``[dhcp]dhcp_provider = vmetal``).

It replaces Ironic's dnsmasq provider: instead of writing dnsmasq host and
option files it publishes one reservation per PXE-enabled MAC to the store,
where the vmetal DHCP agent picks it up; withdrawing the reservation makes
the agent ignore the MAC again. Being the one provider of the conductor,
whatever the node's hardware type, it is also where the provisioning hook
runs (see :mod:`vmetal_ironic.ironic.provisioning`).

Lifecycle: ``update_dhcp_opts`` (deploy, clean, inspect, rescue) ensures
the address and publishes; ``clean_dhcp_opts`` (which Ironic calls when it
cleans up a deployment: undeploy, a failed or aborted deploy - not at the
end of a successful one) withdraws the reservation but keeps the address:
it belongs to the machine, not to one deploy.
"""

import re
import time

from ironic.common import exception as ironic_exc
from ironic.dhcp import base
from oslo_log import log

from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import exception
from vmetal_ironic import reservation
from vmetal_ironic.ironic import dhcp_options
from vmetal_ironic.ironic import errors
from vmetal_ironic.ironic import nodes
from vmetal_ironic.ironic import provisioning
from vmetal_ironic.ironic import node_reservations
from vmetal_ironic.ironic import store_access

LOG = log.getLogger(__name__)

CONF = vmetal_conf.CONF

_HOSTNAME_BAD = re.compile(r'[^a-z0-9-]+')


def hostname_for(node_name):
    """A DHCP host name (option 12) from an Ironic node name.

    A Metal3 name ``<ns>~<host>`` gives ``<host>``; characters a host name
    may not hold become ``-``; ``None`` when nothing usable is left.
    """
    if not node_name:
        return None
    name = str(node_name).rpartition(nodes.METAL3_SEPARATOR)[2].lower()
    name = _HOSTNAME_BAD.sub('-', name).strip('-')[:63].strip('-')
    return name or None


def _address_of(host):
    """``(address, prefixlen, gateway, dns)`` of a HostNetwork, as the
    domain computed it (:attr:`~vmetal_ironic.host_network.HostNetwork.ipv4`).

    :raises vmetal_ironic.exception.InvalidNetworkData: a custom document
        without a static IPv4 network the agent could answer with.
    """
    ipv4 = host.ipv4
    if ipv4 is not None and ipv4.prefixlen is None and ipv4.netmask:
        raise exception.InvalidNetworkData(
            f'the custom network-data netmask {ipv4.netmask!r} is not valid')
    if ipv4 is None or ipv4.prefixlen is None:
        raise exception.InvalidNetworkData(
            'the custom network-data has no IPv4 network with ip_address '
            'and netmask to answer DHCP with')
    return ipv4.address, ipv4.prefixlen, ipv4.gateway, ipv4.dns_servers


class VmetalDHCP(base.BaseDHCP):
    """Publishes per-MAC reservations for the vmetal DHCP agent."""

    def supports_ipxe_tag(self):
        """The agent tells iPXE clients apart (option 175 / user class)."""
        return True

    def update_port_dhcp_opts(self, port_id, dhcp_options, context=None):
        """Ironic calls this for a Neutron VIF whose port changed.

        The vmetal agent has no per-VIF options: everything a MAC gets is
        published by :meth:`update_dhcp_opts`, so this only logs.
        """
        LOG.debug('vmetal DHCP: ignoring per-port options %(opts)s for '
                  '%(port)s', {'opts': dhcp_options, 'port': port_id})

    def update_dhcp_opts(self, task, options, vifs=None):
        """Run the provisioning hook and publish the node's reservations.

        :param task: a TaskManager instance.
        :param options: Ironic's DHCP option list.
        :param vifs: ignored; the PXE-enabled ports are used.
        :raises ironic.common.exception.InvalidParameterValue: bad network
            properties of the node.
        :raises ironic.common.exception.NetworkError: store trouble while
            allocating.
        :raises ironic.common.exception.FailedToUpdateDHCPOptOnPort: the
            reservation could not be published.
        """
        started = time.monotonic()
        node = task.node
        parsed = dhcp_options.parse(options)
        for skipped in parsed.skipped:
            LOG.warning('vmetal DHCP: node %(node)s: skipping option '
                        '%(skip)s', {'node': node.uuid, 'skip': skipped})
        host = provisioning.prepare(task)
        macs = nodes.boot_macs(task)
        if not macs:
            LOG.warning('vmetal DHCP: node %s has no PXE-enabled port; no '
                        'reservation published', node.uuid)
            return
        address, prefixlen, gateway, dns = errors.call(
            task, 'answer DHCP for', _address_of, host)
        published = []
        # One address per machine: every PXE-enabled NIC is offered it, and
        # whichever one the firmware boots from takes it.
        for mac in macs:
            try:
                res = reservation.Reservation(
                    mac=mac, address=address, prefixlen=prefixlen,
                    gateway=gateway, dns_servers=dns,
                    hostname=hostname_for(node.name), node=node.uuid,
                    lease_time=CONF.vmetal_ironic.lease_time,
                    boot=parsed.boot,
                    ntp_servers=tuple(host.spec.ntp_servers))
            except exception.VmetalError as exc:
                # A value DHCP cannot carry (a boot URL over 255 bytes...).
                raise ironic_exc.InvalidParameterValue(
                    err=f'vmetal: node {node.uuid}: {exc}') from None
            # The subject ensure() resolved: the store parses nothing again.
            self._publish(task, res, host.subject or host.owner)
            published.append(mac)
        LOG.info('vmetal DHCP: node %(node)s: %(address)s/%(prefix)s '
                 'reserved for %(macs)s, boot %(boot)s (%(ms).1f ms)',
                 {'node': node.uuid, 'address': address, 'prefix': prefixlen,
                  'macs': ', '.join(published), 'boot': parsed.boot.to_dict(),
                  'ms': (time.monotonic() - started) * 1000})

    @staticmethod
    def _publish(task, res, owner=None):
        errors.call(task, f'publish the reservation of {res.mac} for',
                    lambda: store_access.get_store().publish_reservation(
                        res, owner=owner),
                    failure=ironic_exc.FailedToUpdateDHCPOptOnPort)

    def clean_dhcp_opts(self, task):
        """Withdraw the node's reservations; the address stays allocated.

        :raises ironic.common.exception.FailedToCleanDHCPOpts: store
            trouble; the reservations may still be published.
        """
        errors.call(task, 'withdraw the reservations of',
                    node_reservations.withdraw, task,
                    failure=ironic_exc.FailedToCleanDHCPOpts)

    def get_ip_addresses(self, task):
        """The addresses reserved for the node's MACs.

        Store trouble is logged and gives an empty list, which Ironic
        treats as "no address known" (it only links PXE config files by
        address with it).
        """
        reservations = errors.best_effort(
            task, 'read the reservations of', node_reservations.find, task,
            default=[])
        return sorted({res.address for res in reservations})
