"""The vmetal network interface (VmetalNetwork), every method, on real
Ironic nodes and a real local store."""

from ironic.common import exception as ironic_exc

from tests.unit.ironic import base
from vmetal_ironic import properties as props
from vmetal_ironic import reservation
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.ironic import dhcp
from vmetal_ironic.ironic import network

ADD = ['add_provisioning_network', 'add_cleaning_network',
       'add_inspection_network', 'add_rescuing_network',
       'add_servicing_network', 'configure_tenant_networks']
REMOVE = ['remove_provisioning_network', 'remove_cleaning_network',
          'remove_inspection_network', 'remove_rescuing_network',
          'remove_servicing_network']
VALIDATE = ['validate', 'validate_inspection', 'validate_rescue']


class VmetalNetworkTestCase(base.PluginTestCase):

    def setUp(self):
        super().setUp()
        self.interface = network.VmetalNetwork()

    def test_the_interface_is_what_tasks_load(self):
        node = self.make_node()
        with self.task(node, shared=True) as task:
            self.assertIsInstance(task.driver.network, network.VmetalNetwork)
        self.assertEqual([], self.interface.capabilities)

    def test_validate_checks_properties_without_writing(self):
        node = self.make_node()
        for method in VALIDATE:
            with self.task(node, shared=True) as task:
                self.assertIsNone(getattr(self.interface, method)(task))
        self.assertEqual([], self.store.list_allocations())

    def test_validate_names_the_bad_value_and_its_layer(self):
        node = self.make_node(properties={},
                              extra={props.NETWORK_CIDR: '192.0.2.0/24'})
        for method in VALIDATE:
            with self.task(node, shared=True) as task:
                error = self.assertRaises(ironic_exc.InvalidParameterValue,
                                          getattr(self.interface, method),
                                          task)
            self.assertEqual(
                f'vmetal: cannot resolve the network of node {node.uuid}: '
                "network-cidr '192.0.2.0/24': gateway 192.0.2.0 is the network "
                'address; give the gateway, e.g. 192.0.2.1/24 (from node '
                f'{node.uuid} extra)', str(error))

    def test_adding_a_network_gives_the_node_its_identity(self):
        for index, method in enumerate(ADD):
            mac = f'52:54:00:12:35:{index:02x}'
            node = self.make_node(mac=mac)
            with self.task(node) as task:
                self.assertIsNone(getattr(self.interface, method)(task))
            allocation = self.store.get_allocation(f'Node/{node.uuid}')
            self.assertEqual(mac, allocation.mac, method)
            node.refresh()
            self.assertEqual(allocation.address,
                             node.network_data['networks'][0]['ip_address'])

    def test_removing_a_network_withdraws_and_keeps_the_address(self):
        node = self.make_node()
        for method in REMOVE:
            with self.task(node) as task:
                dhcp.VmetalDHCP().update_dhcp_opts(task, base.IPXE_OPTIONS)
                self.assertEqual(1, len(self.store.list_reservations()))
                self.assertIsNone(getattr(self.interface, method)(task))
            self.assertEqual([], self.store.list_reservations(), method)
        self.assertIsNotNone(self.store.get_allocation(f'Node/{node.uuid}'))

    def test_removing_on_store_trouble_does_not_fail_the_change(self):
        node = self.make_node()
        with self.task(node) as task:
            dhcp.VmetalDHCP().update_dhcp_opts(task, base.IPXE_OPTIONS)
            with self.store_locked():
                self.assertIsNone(
                    self.interface.remove_provisioning_network(task))
        # Left behind, to be withdrawn by the next clean_dhcp_opts.
        self.assertEqual(1, len(self.store.list_reservations()))

    def test_get_node_network_data(self):
        node = self.make_node()
        with self.task(node) as task:
            document = self.interface.get_node_network_data(task)
        self.assertEqual(self.store.get_network_data(f'Node/{node.uuid}'),
                         document)
        theirs = {'links': [], 'networks': [], 'services': []}
        other = self.make_node(mac='52:54:00:12:36:01',
                               network_data=theirs)
        with self.task(other) as task:
            self.assertEqual(theirs,
                             self.interface.get_node_network_data(task))

    def test_release_deleted_nodes(self):
        gone = self.make_node()
        kept = self.make_node(mac='52:54:00:12:36:02')
        for node in (gone, kept):
            with self.task(node) as task:
                dhcp.VmetalDHCP().update_dhcp_opts(task, base.IPXE_OPTIONS)
        self.store.allocate(ipam_pool.parse_pool(base.CIDR, None),
                            'BareMetalHost/ns/h')
        gone.destroy()
        self.interface.release_deleted_nodes(None, self.context)
        self.assertIsNone(self.store.get_allocation(f'Node/{gone.uuid}'))
        self.assertIsNotNone(self.store.get_allocation(f'Node/{kept.uuid}'))
        # Owners that are not Ironic nodes are not the sweep's business.
        self.assertIsNotNone(self.store.get_allocation('BareMetalHost/ns/h'))
        self.assertEqual([kept.uuid],
                         [r.node for r in self.store.list_reservations()])

    def test_release_deleted_nodes_on_store_trouble_keeps_going(self):
        gone = self.make_node()
        with self.task(gone) as task:
            self.interface.add_provisioning_network(task)
        self.store.publish_reservation(reservation.Reservation(
            mac=base.MAC, address='192.0.2.2', prefixlen=24, node=gone.uuid))
        gone.destroy()
        with self.store_locked():
            self.interface.release_deleted_nodes(None, self.context)
        self.assertIsNotNone(self.store.get_allocation(f'Node/{gone.uuid}'))
        self.interface.release_deleted_nodes(None, self.context)
        self.assertIsNone(self.store.get_allocation(f'Node/{gone.uuid}'))
        self.assertEqual([], self.store.list_reservations())

