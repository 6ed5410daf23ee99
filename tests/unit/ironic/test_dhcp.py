"""The vmetal DHCP provider (VmetalDHCP) on real Ironic nodes and a real
local store."""

from ironic.common import exception as ironic_exc

from tests.unit.ironic import base
from vmetal_ironic import properties as props
from vmetal_ironic import reservation
from vmetal_ironic.ironic import dhcp
from vmetal_ironic.ironic import node_reservations

OTHER_MAC = '52:54:00:12:34:57'


class VmetalDHCPTestCase(base.PluginTestCase):

    def setUp(self):
        super().setUp()
        self.provider = dhcp.VmetalDHCP()

    def reservation(self, mac=base.MAC):
        found = [r for r in self.store.list_reservations() if r.mac == mac]
        return found[0] if found else None

    def test_update_dhcp_opts_publishes_the_allocation(self):
        node = self.make_node(name='metal3~worker-0')
        with self.task(node) as task:
            self.provider.update_dhcp_opts(task, base.IPXE_OPTIONS)
        allocation = self.store.get_allocation('BareMetalHost/metal3/worker-0')
        res = self.reservation()
        self.assertEqual(allocation.address, res.address)
        self.assertEqual((24, '192.0.2.1', (base.DNS,)),
                         (res.prefixlen, res.gateway, res.dns_servers))
        self.assertEqual(('worker-0', node.uuid), (res.hostname, res.node))
        self.assertEqual('snponly.efi', res.boot.bootfile)
        self.assertEqual(base.SCRIPT, res.boot.ipxe_script_url)
        self.assertEqual(base.TFTP, res.boot.tftp_server)
        # The provisioning hook ran too: the ramdisk's network_data.
        node.refresh()
        self.assertEqual(allocation.address,
                         node.network_data['networks'][0]['ip_address'])
        with self.task(node, shared=True) as task:
            self.assertEqual([allocation.address],
                             self.provider.get_ip_addresses(task))

    def test_update_dhcp_opts_without_pxe_port_publishes_nothing(self):
        node = self.make_node(pxe_enabled=False)
        with self.task(node) as task:
            self.provider.update_dhcp_opts(task, base.IPXE_OPTIONS)
        self.assertEqual([], self.store.list_reservations())

    def test_custom_document_without_ipv4_is_bad_input(self):
        custom = ('{"links": [{"id": "eth0"}], "networks": [{"id": "n", '
                  '"link": "eth0", "type": "ipv4_dhcp"}], "services": []}')
        node = self.make_node(properties={props.NETWORK_DATA: custom})
        with self.task(node) as task:
            error = self.assertRaises(ironic_exc.InvalidParameterValue,
                                      self.provider.update_dhcp_opts, task,
                                      base.IPXE_OPTIONS)
        self.assertIn(f'cannot answer DHCP for node {node.uuid}: the custom '
                      'network-data has no IPv4 network', str(error))
        self.assertEqual([], self.store.list_reservations())

    def test_publish_failure_is_failed_to_update(self):
        node = self.make_node()
        with self.task(node) as task:
            host = dhcp.provisioning.prepare(task)
            with self.store_locked():
                error = self.assertRaises(
                    ironic_exc.FailedToUpdateDHCPOptOnPort,
                    self.provider._publish, task, reservation.Reservation(
                        mac=base.MAC, address=host.allocation.address,
                        prefixlen=24))
        self.assertIn(f'cannot publish the reservation of {base.MAC} for '
                      f'node {node.uuid}', str(error))
        self.assertIn('stayed locked', str(error))

    def test_clean_dhcp_opts_withdraws_but_keeps_the_address(self):
        node = self.make_node()
        with self.task(node) as task:
            self.provider.update_dhcp_opts(task, base.IPXE_OPTIONS)
        # A reservation left under a MAC the node no longer has.
        self.store.publish_reservation(reservation.Reservation(
            mac=OTHER_MAC, address='192.0.2.99', prefixlen=24,
            node=node.uuid))
        with self.task(node) as task:
            self.provider.clean_dhcp_opts(task)
        self.assertEqual([], self.store.list_reservations())
        self.assertIsNotNone(self.store.get_allocation(f'Node/{node.uuid}'))
        with self.task(node, shared=True) as task:
            self.assertEqual([], self.provider.get_ip_addresses(task))

    def test_clean_dhcp_opts_store_trouble_is_failed_to_clean(self):
        node = self.make_node()
        with self.task(node) as task:
            self.provider.update_dhcp_opts(task, base.IPXE_OPTIONS)
            with self.store_locked():
                error = self.assertRaises(ironic_exc.FailedToCleanDHCPOpts,
                                          self.provider.clean_dhcp_opts, task)
        self.assertIn('cannot withdraw the reservations of node', str(error))
        self.assertIsNotNone(self.reservation())

    def test_withdraw_returns_the_macs(self):
        node = self.make_node()
        with self.task(node) as task:
            self.provider.update_dhcp_opts(task, base.IPXE_OPTIONS)
            self.assertEqual([base.MAC], node_reservations.withdraw(task))
            self.assertEqual([], node_reservations.find(task))
            self.assertEqual([base.MAC], node_reservations.withdraw(task))

    def test_get_ip_addresses_on_store_trouble_is_empty(self):
        node = self.make_node()
        with self.task(node) as task:
            self.provider.update_dhcp_opts(task, base.IPXE_OPTIONS)
        self._reset_store()
        self.config(database='/proc/vmetal.sqlite',
                    group='vmetal_local_store')
        with self.task(node, shared=True) as task:
            self.assertEqual([], self.provider.get_ip_addresses(task))

    def test_update_port_dhcp_opts_and_ipxe_tag(self):
        self.assertTrue(self.provider.supports_ipxe_tag())
        self.assertIsNone(self.provider.update_port_dhcp_opts(
            'port', base.IPXE_OPTIONS))
