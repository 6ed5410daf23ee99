"""The vmetal plugins inside a real Ironic 39 (API + conductor, SQLite).

One Ironic process serves the whole module; every test makes its own nodes
with their own MACs, so the tests do not depend on each other's order.
The store is read through the Store API, loaded from the same ironic.conf
as the conductor's; only the lock test is specific to the local store.
"""

import json
import time
import uuid

import pytest

from tests import store_lock
from tests.functional import ironic_fixture
from vmetal_ironic import properties as props

CIDR = '192.0.2.1/24'
DNS = '198.51.100.53'
NTP = '198.51.100.123'
NODE_PROPERTIES = {props.NETWORK_CIDR: CIDR, props.DNS_SERVERS: DNS,
                   props.NTP_SERVERS: NTP}
# The stock ipxe boot interface asks for this loader in UEFI mode.
UEFI_IPXE_LOADER = 'snponly.efi'
IPXE_SCRIPT_URL = f'{ironic_fixture.HTTP_URL}/boot.ipxe'
# A node with cpu_arch "odd" makes Ironic send a bootfile with a space,
# which the provider must skip without failing the deploy.
ODD_ARCH = 'odd'
ODD_BOOTFILE = 'bad name.efi'
WAIT = 90


@pytest.fixture(scope='module')
def ironic(tmp_path_factory):
    proc = ironic_fixture.IronicProcess(
        tmp_path_factory.mktemp('vir-ironic'),
        {'pxe': {'ipxe_bootfile_name_by_arch': f'{ODD_ARCH}:{ODD_BOOTFILE}'},
         'DEFAULT': {'enabled_inspect_interfaces': 'no-inspect,fake,agent'}})
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope='module')
def store(ironic):
    st = ironic.open_store()
    yield st
    st.close()


def _mac():
    raw = uuid.uuid4().bytes[:3]
    return '52:54:00:' + ':'.join(f'{byte:02x}' for byte in raw)


class Node:
    """What the tests need of a node: its UUID and name."""

    def __init__(self, body):
        self.id = body['uuid']
        self.name = body['name']


def make_node(ironic, driver='vmetal-manual-management', name=None,
              properties=None, port=True, **fields):
    mac = _mac() if port else None
    body = ironic.enroll(
        mac, driver=driver, name=name or f'vir-{uuid.uuid4().hex[:8]}',
        boot_interface='ipxe', deploy_interface='ramdisk',
        power_interface='fake', management_interface='fake',
        properties=NODE_PROPERTIES if properties is None else properties,
        **fields)
    return Node(body), mac


def deploy(ironic, node, wait=True, config_drive=None):
    """Ramdisk deploy; instance_info is wiped by every undeploy."""
    started = time.monotonic()
    ironic.deploy(node.id, config_drive=config_drive, wait=wait,
                  timeout=WAIT)
    return time.monotonic() - started


def undeploy(ironic, node, wait=True):
    ironic.provision(node.id, 'deleted', wait=wait, timeout=WAIT)


def node_json(ironic, node):
    return ironic.request('GET', f'/nodes/{node.id}')


def reservation_of(store, mac):
    found = [res for res in store.list_reservations() if res.mac == mac]
    return found[0] if found else None


def wait_state(ironic, node, states, timeout=WAIT):
    return ironic.wait_state(node.id, states, timeout)


@pytest.mark.parametrize('driver, fields', [
    ('vmetal-manual-management', {}),
    ('fake-hardware', {'network_interface': 'vmetal'}),
], ids=['vmetal-manual-management', 'fake-hardware'])
def test_deploy_undeploy_cycle(ironic, store, driver, fields):
    node, mac = make_node(ironic, driver=driver, **fields)
    assert node_json(ironic, node)['network_interface'] == 'vmetal'
    owner = f'Node/{node.id}'

    seconds = deploy(ironic, node)
    body = node_json(ironic, node)
    assert body['provision_state'] == 'active', body['last_error']
    print(f'deploy of {driver} node through the vmetal plugins: '
          f'{seconds:.2f}s')

    allocation = store.get_allocation(owner)
    assert allocation is not None and allocation.mac == mac
    res = reservation_of(store, mac)
    assert res is not None
    assert res.address == allocation.address
    assert res.address.startswith('192.0.2.')
    assert res.address not in ('192.0.2.0', '192.0.2.1', '192.0.2.255')
    assert (res.prefixlen, res.gateway) == (24, '192.0.2.1')
    assert res.dns_servers == (DNS,)
    # ntp-servers: handed out by the agent in option 42.
    assert res.ntp_servers == (NTP,)
    assert res.node == node.id
    assert res.hostname == node.name
    assert res.boot.bootfile == UEFI_IPXE_LOADER
    assert res.boot.ipxe_script_url == IPXE_SCRIPT_URL
    assert res.boot.tftp_server == ironic_fixture.TFTP_SERVER
    assert res.boot.http_boot_url is None

    document = store.get_network_data(owner)
    assert document['networks'][0]['ip_address'] == allocation.address
    assert document['links'][0]['ethernet_mac_address'] == mac
    assert body['network_data'] == document
    assert ironic.call_network_interface(
        node.id, 'get_node_network_data') == document

    undeploy(ironic, node)
    assert node_json(ironic, node)['provision_state'] == 'available'
    assert reservation_of(store, mac) is None
    # The address belongs to the machine, not to the deploy.
    assert store.get_allocation(owner) == allocation

    deploy(ironic, node)
    assert reservation_of(store, mac).address == allocation.address
    undeploy(ironic, node)
    assert reservation_of(store, mac) is None


def test_stock_manual_management_gets_reservation_and_config_drive(
        ironic, store):
    node, mac = make_node(ironic, driver='manual-management',
                          name='vir-ns~host-a')
    assert node_json(ironic, node)['network_interface'] == 'noop'
    meta = {'uuid': node.id, 'name': node.name}
    deploy(ironic, node, config_drive={'meta_data': meta,
                                     'user_data': '#cloud-config\n'})
    body = node_json(ironic, node)
    assert body['provision_state'] == 'active', body['last_error']

    owner = 'BareMetalHost/vir-ns/host-a'
    document = store.get_network_data(owner)
    assert document is not None
    res = reservation_of(store, mac)
    assert res.address == store.get_allocation(owner).address
    assert res.hostname == 'host-a'
    assert res.boot.ipxe_script_url == IPXE_SCRIPT_URL
    assert body['network_data'] == document
    configdrive = ironic.instance_info_in_db(node.id)['configdrive']
    assert configdrive['network_data'] == document
    assert configdrive['meta_data'] == meta

    undeploy(ironic, node)
    assert reservation_of(store, mac) is None


def test_caller_network_data_is_never_overwritten(ironic, store):
    node, mac = make_node(ironic, driver='manual-management')
    theirs = {
        'links': [{'id': 'eth0', 'type': 'phy',
                   'ethernet_mac_address': mac}],
        'networks': [{'id': 'n0', 'link': 'eth0', 'type': 'ipv4',
                      'network_id': 'n0',
                      'ip_address': '203.0.113.7',
                      'netmask': '255.255.255.0'}],
        'services': []}
    status, body = ironic.api('PATCH', f'/nodes/{node.id}', [
        {'op': 'add', 'path': '/network_data', 'value': theirs}])
    assert status == 200, body
    drive_data = dict(theirs, services=[{'type': 'dns',
                                         'address': '203.0.113.53'}])
    deploy(ironic, node, config_drive={'meta_data': {'uuid': node.id},
                                     'network_data': drive_data})
    body = node_json(ironic, node)
    assert body['provision_state'] == 'active', body['last_error']
    assert body['network_data'] == theirs
    configdrive = ironic.instance_info_in_db(node.id)['configdrive']
    assert configdrive['network_data'] == drive_data
    # The DHCP reservation still comes from IPAM.
    assert reservation_of(store, mac).address.startswith('192.0.2.')
    undeploy(ironic, node)


def test_custom_network_data_overrides_ipam(ironic, store):
    mac = _mac()
    custom = {
        'links': [{'id': 'eth0', 'type': 'phy', 'ethernet_mac_address': mac}],
        'networks': [{'id': 'n0', 'link': 'eth0', 'type': 'ipv4',
                      'network_id': 'n0', 'ip_address': '198.51.100.20',
                      'netmask': '255.255.255.192',
                      'routes': [{'network': '0.0.0.0', 'netmask': '0.0.0.0',
                                  'gateway': '198.51.100.1'}]}],
        'services': [{'type': 'dns', 'address': '198.51.100.53'}]}
    node, _ = make_node(ironic, port=False, properties={
        props.NETWORK_CIDR: CIDR, props.NETWORK_DATA: json.dumps(custom)})
    ironic.request('POST', '/ports', {'node_uuid': node.id, 'address': mac,
                                      'pxe_enabled': True})
    deploy(ironic, node)
    body = node_json(ironic, node)
    assert body['provision_state'] == 'active', body['last_error']
    owner = f'Node/{node.id}'
    # No pool address: the document's own is held instead, so that no
    # pool hands it to another host (issue 9 item 11).
    held = store.get_allocation(owner)
    assert (held.address, held.pool_key) == ('198.51.100.20', '')
    assert store.get_network_data(owner) == custom
    assert body['network_data'] == custom
    res = reservation_of(store, mac)
    assert (res.address, res.prefixlen, res.gateway, res.dns_servers) == (
        '198.51.100.20', 26, '198.51.100.1', ('198.51.100.53',))
    undeploy(ironic, node)
    assert reservation_of(store, mac) is None


@pytest.mark.parametrize('properties, expected', [
    ({}, 'network-cidr is not set'),
    ({props.NETWORK_CIDR: '192.0.2.0/24'},
     "gateway 192.0.2.0 is the network address"),
    ({props.NETWORK_CIDR: 'not-a-cidr'},
     "network-cidr 'not-a-cidr' is not <gateway>/<prefix>"),
], ids=['missing', 'network-address', 'garbage'])
def test_bad_cidr_fails_validation_through_rest_api(
        ironic, store, properties, expected):
    node, mac = make_node(ironic, properties=properties)
    status, result = ironic.api('GET', f'/nodes/{node.id}/validate')
    assert status == 200
    assert result['network']['result'] is False
    reason = result['network']['reason']
    assert expected in reason
    assert node.id in reason and '\n' not in reason

    deploy(ironic, node, wait=False)
    body = wait_state(ironic, node, ('deploy failed',))
    assert expected in body['last_error']
    assert reservation_of(store, mac) is None
    assert store.get_allocation(f'Node/{node.id}') is None


def test_malformed_option_is_skipped(ironic, store):
    node, mac = make_node(
        ironic, properties=dict(NODE_PROPERTIES, cpu_arch=ODD_ARCH))
    deploy(ironic, node)
    body = node_json(ironic, node)
    assert body['provision_state'] == 'active', body['last_error']
    res = reservation_of(store, mac)
    assert res.boot.bootfile is None
    assert res.boot.ipxe_script_url == IPXE_SCRIPT_URL
    log = ironic.log_text()
    assert f'vmetal DHCP: node {node.id}: skipping option' in log
    assert ODD_BOOTFILE in log
    undeploy(ironic, node)


def test_store_trouble_does_not_crash_the_conductor(ironic, store):
    node, mac = make_node(ironic)
    with store_lock.held(ironic.vmetal_db):
        deploy(ironic, node, wait=False)
        body = wait_state(ironic, node, ('deploy failed',))
    assert 'stayed locked' in body['last_error']
    assert f'vmetal: cannot allocate an address for node {node.id}' in (
        body['last_error'])
    assert ironic.alive() and ironic.api_up()

    # Once the store answers again the same node deploys.
    deploy(ironic, node)
    assert node_json(ironic, node)['provision_state'] == 'active'
    assert reservation_of(store, mac) is not None

    # Undeploy while the store is stuck: Ironic records the failure, the
    # process stays up, and a retry withdraws the reservation.
    with store_lock.held(ironic.vmetal_db):
        undeploy(ironic, node, wait=False)
        body = wait_state(ironic, node, ('error',))
    assert 'cannot withdraw the reservations' in body['last_error']
    assert ironic.alive() and ironic.api_up()
    undeploy(ironic, node)
    assert node_json(ironic, node)['provision_state'] == 'available'
    assert reservation_of(store, mac) is None


@pytest.mark.parametrize('driver', ['manual-management',
                                    'vmetal-manual-management'])
@pytest.mark.parametrize('flow', ['clean', 'inspect'])
def test_cleaning_and_inspection_boot_with_reservation(
        ironic, store, driver, flow):
    mac = _mac()
    node = Node(ironic.request('POST', '/nodes', {
        'driver': driver, 'name': f'vir-{flow}-{uuid.uuid4().hex[:6]}',
        'boot_interface': 'ipxe', 'deploy_interface': 'direct',
        'power_interface': 'fake', 'management_interface': 'fake',
        'inspect_interface': 'agent', 'properties': NODE_PROPERTIES,
        'driver_info': {'deploy_kernel': ironic.image_url('kernel'),
                        'deploy_ramdisk': ironic.image_url('ramdisk')}}))
    ironic.request('POST', '/ports', {'node_uuid': node.id, 'address': mac,
                                      'pxe_enabled': True})
    ironic.provision(node.id, 'manage', timeout=WAIT)
    if flow == 'clean':
        ironic.provision(node.id, 'clean', clean_steps=[
            {'interface': 'deploy', 'step': 'erase_devices_metadata'}])
    else:
        ironic.provision(node.id, 'inspect')
    # The ramdisk would now PXE boot; no agent runs here, so it waits.
    body = wait_state(ironic, node, (f'{flow} wait',))

    owner = f'Node/{node.id}'
    document = store.get_network_data(owner)
    res = reservation_of(store, mac)
    assert res.address == store.get_allocation(owner).address
    assert res.boot.ipxe_script_url == IPXE_SCRIPT_URL
    assert body['network_data'] == document

    ironic.provision(node.id, 'abort')
    wait_state(ironic, node, (f'{flow} failed',))
    if driver.startswith('vmetal-'):
        # The vmetal network interface withdraws when the node leaves the
        # cleaning/inspection network; Ironic calls no DHCP provider then.
        assert reservation_of(store, mac) is None
    assert store.get_allocation(owner) is not None


def test_deleting_a_node_releases_its_address(ironic, store):
    node, _mac = make_node(ironic)
    deploy(ironic, node)
    owner = f'Node/{node.id}'
    assert store.get_allocation(owner) is not None
    undeploy(ironic, node)
    ironic.request('DELETE', f'/nodes/{node.id}')
    # The conductor's sweep runs every 2 s in this configuration.
    deadline = time.monotonic() + 30
    while store.get_allocation(owner) is not None:
        assert time.monotonic() < deadline, 'address not released'
        time.sleep(0.5)
    assert store.get_network_data(owner) is None
