"""Pure parts of the Ironic adapters: owners, host names, injection rules,
hardware types and entry points."""

import types

import pytest
from ironic import objects
from stevedore import driver as stevedore_driver

from vmetal_ironic import exception
from vmetal_ironic import host_network
from vmetal_ironic import network_data
from vmetal_ironic import owner as owner_mod
from vmetal_ironic import properties as props
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.ironic import dhcp
from vmetal_ironic.ironic import hardware
from vmetal_ironic.ironic import network
from vmetal_ironic.ironic import nodes
from vmetal_ironic.ironic import provisioning
from vmetal_ironic.store import base

objects.register_all()
UUID = '1be26c0b-03f2-4d2e-ae87-c02d7f33c123'
MAC = '52:54:00:aa:bb:cc'


def document(address='192.0.2.5', mac=MAC):
    pool = ipam_pool.parse_pool('192.0.2.1/24', None)
    return network_data.build(mac, address, pool, ('198.51.100.53',))


def node(**fields):
    # A real Ironic Node object, never saved: the rules below only read
    # and set its fields.
    values = {'uuid': UUID, 'name': None, 'network_data': {},
              'driver_internal_info': {}, 'instance_info': {}}
    values.update(fields)
    return objects.Node(**values)


@pytest.mark.parametrize('name, owner', [
    (None, f'Node/{UUID}'),
    ('worker-0', f'Node/{UUID}'),
    ('metal3~worker-0', 'BareMetalHost/metal3/worker-0'),
    ('~worker-0', f'Node/{UUID}'),
    ('metal3~', f'Node/{UUID}'),
    ('a~b~c', f'Node/{UUID}'),
])
def test_owner_for(name, owner):
    node = types.SimpleNamespace(name=name, uuid=UUID)
    assert str(nodes.owner_for(node)) == owner


@pytest.mark.parametrize('owner, uuid', [
    (f'Node/{UUID}', UUID),
    ('BareMetalHost/ns/host', None),
    ('Node/', None),
    ('Node/a/b', None),
    ('Machine/x', None),
])
def test_node_uuid_of(owner, uuid):
    assert owner_mod.node_uuid_of(owner) == uuid


def test_property_layers_extra_before_properties():
    n = node(extra={'metal3.vcluster.com/network-cidr': '192.0.2.1/24'},
             properties={'metal3.vcluster.com/network-cidr': '198.51.100.1/24',
                         'cpu_arch': 'x86_64'})
    layers = nodes.property_layers(n)
    assert layers[0]['metal3.vcluster.com/network-cidr'] == '192.0.2.1/24'
    assert layers[1]['metal3.vcluster.com/network-cidr'] == '198.51.100.1/24'


@pytest.mark.parametrize('name, host', [
    ('worker-0', 'worker-0'),
    ('metal3~Worker_0', 'worker-0'),
    ('node.example', 'node-example'),
    ('___', None),
    (None, None),
    ('x' * 80, 'x' * 63),
])
def test_hostname_for(name, host):
    assert dhcp.hostname_for(name) == host


def test_fingerprint_ignores_key_order():
    doc = document()
    shuffled = dict(reversed(list(doc.items())))
    assert provisioning.fingerprint(doc) == provisioning.fingerprint(shuffled)
    assert provisioning.fingerprint(doc) != provisioning.fingerprint(
        document('192.0.2.6'))


def test_empty_node_field_is_filled_and_fingerprinted():
    n = node()
    assert provisioning._inject_node_field(n, document())
    assert n.network_data == document()
    assert n.driver_internal_info[provisioning.FINGERPRINT_KEY] == (
        provisioning.fingerprint(document()))


def test_our_own_old_document_is_replaced():
    old = document('192.0.2.5')
    n = node(network_data=old, driver_internal_info={
        provisioning.FINGERPRINT_KEY: provisioning.fingerprint(old)})
    assert provisioning._inject_node_field(n, document('192.0.2.6'))
    assert n.network_data == document('192.0.2.6')


def test_caller_document_is_kept():
    theirs = document('203.0.113.7')
    n = node(network_data=theirs)
    assert not provisioning._inject_node_field(n, document())
    assert n.network_data == theirs


def test_document_ironic_would_reject_is_not_written():
    # A link without a MAC fails Ironic's network_data schema.
    n = node()
    assert not provisioning._inject_node_field(n, document(mac=None))
    assert n.network_data == {}


def test_generated_document_passes_ironic_schema():
    assert provisioning.acceptable_to_ironic(document())


@pytest.mark.parametrize('configdrive, expected', [
    ({'meta_data': {'uuid': UUID}}, True),
    ({'meta_data': {}, 'network_data': {'links': []}}, False),
    ('H4sIAAAAAAAA', False),
    ('http://192.0.2.1/cd.iso', False),
    (None, False),
])
def test_configdrive_injection(configdrive, expected):
    info = {} if configdrive is None else {'configdrive': configdrive}
    n = node(instance_info=info)
    assert provisioning._inject_configdrive(n, document()) is expected
    if expected:
        assert n.instance_info['configdrive']['network_data'] == document()
        assert n.instance_info['configdrive']['meta_data'] == {'uuid': UUID}
    else:
        assert n.instance_info == info


@pytest.mark.parametrize('cls', [
    hardware.VmetalManualManagementHardware,
    hardware.VmetalIPMIHardware,
    hardware.VmetalRedfishHardware,
])
def test_hardware_types_list_vmetal_first_once(cls):
    supported = cls().supported_network_interfaces
    assert supported[0] is network.VmetalNetwork
    assert supported.count(network.VmetalNetwork) == 1
    stock = cls.__mro__[2]().supported_network_interfaces
    assert supported[1:] == stock


def test_network_interface_does_not_claim_metadata():
    assert 'metadata' not in network.VmetalNetwork.capabilities


@pytest.mark.parametrize('namespace, name, cls', [
    ('ironic.dhcp', 'vmetal', dhcp.VmetalDHCP),
    ('ironic.hardware.interfaces.network', 'vmetal', network.VmetalNetwork),
    ('ironic.hardware.types', 'vmetal-manual-management',
     hardware.VmetalManualManagementHardware),
    ('ironic.hardware.types', 'vmetal-ipmi', hardware.VmetalIPMIHardware),
    ('ironic.hardware.types', 'vmetal-redfish',
     hardware.VmetalRedfishHardware),
])
def test_entry_points(namespace, name, cls):
    manager = stevedore_driver.DriverManager(namespace, name,
                                             invoke_on_load=False)
    assert manager.driver is cls


def test_dhcp_provider_supports_ipxe_tag():
    assert dhcp.VmetalDHCP().supports_ipxe_tag() is True


def _host(doc, allocation=None, spec=None):
    # As host_network.ensure computes it: from the pool for an allocation, from
    # the document for a custom one.
    if allocation is not None:
        ipv4 = network_data.PrimaryIPv4(
            allocation.address, spec.pool.prefixlen, str(spec.pool.gateway),
            tuple(spec.dns_servers))
    else:
        ipv4 = network_data.primary(doc)
    return host_network.HostNetwork('Node/x', allocation, doc,
                                    spec or props.NetworkSpec(custom_network_data=doc),
                                    ipv4)


def test_address_of_custom_document():
    doc = document('203.0.113.9')
    assert dhcp._address_of(_host(doc)) == (
        '203.0.113.9', 24, '192.0.2.1', ('198.51.100.53',))


def test_address_of_allocation():
    pool = ipam_pool.parse_pool('192.0.2.1/24', None)
    spec = props.NetworkSpec(pool=pool, dns_servers=('192.0.2.53',))
    allocation = base.Allocation('Node/x', pool.key, '192.0.2.7', MAC)
    assert dhcp._address_of(_host(document('192.0.2.7'), allocation, spec)) == (
        '192.0.2.7', 24, '192.0.2.1', ('192.0.2.53',))


@pytest.mark.parametrize('doc, message', [
    ({'links': [], 'networks': [], 'services': []}, 'has no IPv4 network'),
    ({'links': [{'id': 'l'}], 'services': [],
      'networks': [{'link': 'l', 'type': 'ipv4', 'ip_address': '192.0.2.3'}]},
     'has no IPv4 network'),
    ({'links': [{'id': 'l'}], 'services': [],
      'networks': [{'link': 'l', 'type': 'ipv4', 'ip_address': '192.0.2.3',
                    'netmask': 'bogus'}]},
     "netmask 'bogus' is not valid"),
])
def test_address_of_unusable_custom_document(doc, message):
    with pytest.raises(exception.InvalidNetworkData, match=message):
        dhcp._address_of(_host(doc))
