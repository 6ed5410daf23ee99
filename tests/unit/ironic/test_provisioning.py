"""The provisioning hook (provisioning.prepare) on real Ironic nodes."""

from ironic.common import exception as ironic_exc

from tests.unit.ironic import base
from vmetal_ironic.ironic import provisioning


class PrepareTestCase(base.PluginTestCase):

    def test_prepare_allocates_and_writes_the_node_field(self):
        node = self.make_node(instance_info={'configdrive': {
            'meta_data': {'uuid': 'x'}}})
        with self.task(node) as task:
            host = provisioning.prepare(task)
        owner = f'Node/{node.uuid}'
        allocation = self.store.get_allocation(owner)
        self.assertEqual(host.allocation, allocation)
        self.assertEqual(base.MAC, allocation.mac)
        node.refresh()
        self.assertEqual(host.network_data, node.network_data)
        self.assertEqual(self.store.get_network_data(owner), node.network_data)
        self.assertEqual(host.network_data,
                         node.instance_info['configdrive']['network_data'])
        self.assertFalse(provisioning.supplied_by_caller(node))
        # Idempotent: the same address, nothing rewritten.
        with self.task(node) as task:
            again = provisioning.prepare(task)
        self.assertEqual(allocation, again.allocation)

    def test_caller_network_data_is_kept(self):
        theirs = {'links': [{'id': 'eth0', 'type': 'phy',
                             'ethernet_mac_address': base.MAC}],
                  'networks': [], 'services': []}
        node = self.make_node(network_data=theirs)
        with self.task(node) as task:
            host = provisioning.prepare(task)
        node.refresh()
        self.assertEqual(theirs, node.network_data)
        self.assertTrue(provisioning.supplied_by_caller(node))
        self.assertIsNotNone(host.allocation)

    def test_our_document_is_replaced_when_it_changes(self):
        node = self.make_node()
        with self.task(node) as task:
            first = provisioning.prepare(task)
        node.refresh()
        node.properties = dict(base.NODE_PROPERTIES,
                               **{base.props.DNS_SERVERS: '198.51.100.54'})
        node.save()
        with self.task(node) as task:
            second = provisioning.prepare(task)
        node.refresh()
        self.assertNotEqual(first.network_data, second.network_data)
        self.assertEqual(second.network_data, node.network_data)

    def test_bad_properties_name_value_and_layer_and_write_nothing(self):
        node = self.make_node(properties={
            base.props.NETWORK_CIDR: 'not-a-cidr'})
        with self.task(node) as task:
            error = self.assertRaises(ironic_exc.InvalidParameterValue,
                                      provisioning.prepare, task)
        self.assertEqual(
            f"vmetal: cannot allocate an address for node {node.uuid}: "
            "network-cidr 'not-a-cidr' is not <gateway>/<prefix>, e.g. "
            "192.0.2.1/24 "
            f"(from node {node.uuid} properties)", str(error))
        self.assertEqual([], self.store.list_allocations())
        node.refresh()
        self.assertEqual({}, node.network_data)

    def test_locked_store_is_temporary_trouble(self):
        node = self.make_node()
        with self.store_locked(), self.task(node) as task:
            error = self.assertRaises(ironic_exc.NetworkError,
                                      provisioning.prepare, task)
        self.assertIn('stayed locked', str(error))
        self.assertIn('(temporary: retry the operation)', str(error))
        with self.task(node) as task:
            self.assertIsNotNone(provisioning.prepare(task).allocation)
