"""The vmetal plugins in a real Ironic 39 on the Kubernetes store.

A Metal3-style node (Ironic name ``<namespace>~<host>``) on the STOCK
manual-management hardware type, whose BareMetalHost carries the network
properties as annotations: the deploy must claim an address (AddressClaim),
write the network-data Secret and the host annotations, publish the DHCP
reservation, and fill the node's and the config drive's network_data —
all visible through the Kubernetes API. Deleting the host must release its
address through vmetal-ipam-controller (the conductor starts no thread of
the store's: it only calls it).
"""

import base64
import json
import os
import uuid

import pytest

from tests.functional import ironic_fixture
from vmetal_ironic.lab.observe import wait_for
from vmetal_ironic import properties as props
from vmetal_ironic.store.kubernetes import kube_names

WAIT = 120
CIDR = '198.51.100.1/24'
DNS = '198.51.100.53'


@pytest.fixture(scope='module')
def space(admin):
    name = f'vk8s-ir-{os.getpid()}-{os.urandom(2).hex()}'
    admin.create_namespace(name)
    yield name
    admin.core.delete_namespace(name)


@pytest.fixture(scope='module')
def ironic(kube_cluster, space, tmp_path_factory):
    settings = kube_cluster.settings(namespace=space)
    proc = ironic_fixture.IronicProcess(
        tmp_path_factory.mktemp('vk8s-ironic'),
        {'vmetal': {'store': 'kubernetes'},
         'vmetal_kubernetes': {key: str(value)
                               for key, value in settings.items()}})
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


def _mac():
    return '52:54:00:' + ':'.join(f'{b:02x}' for b in uuid.uuid4().bytes[:3])


def test_stock_node_deploys_on_the_kubernetes_store(ironic, admin, space,
                                                    start_controller):
    mac = _mac()
    admin.create_host(space, 'host-a', mac, annotations={
        props.NETWORK_CIDR: CIDR, props.DNS_SERVERS: DNS})
    node = ironic.enroll(
        mac, driver='manual-management', name=f'{space}~host-a',
        boot_interface='ipxe', deploy_interface='ramdisk',
        power_interface='fake', management_interface='fake')
    meta = {'uuid': node['uuid'], 'name': node['name']}
    body = ironic.deploy(node['uuid'], config_drive={'meta_data': meta},
                         timeout=WAIT)

    owner = f'BareMetalHost/{space}/host-a'
    pool = admin.pool_data(space, '198.51.100.0/24')
    assert list(pool.values()) == [owner]
    address = next(iter(pool))

    host = admin.get_host(space, 'host-a')
    annotations = host['metadata']['annotations']
    assert annotations[props.IP_ADDRESS] == f'{address}/24'
    assert annotations[props.GATEWAY] == '198.51.100.1'

    secret = admin.secret(space, kube_names.network_data_secret_name(owner))
    document = json.loads(base64.b64decode(secret.data['networkData']))
    assert document['networks'][0]['ip_address'] == address
    assert document['links'][0]['ethernet_mac_address'] == mac
    assert body['network_data'] == document
    assert ironic.instance_info_in_db(node['uuid'])['configdrive'][
        'network_data'] == document
    assert host['spec']['preprovisioningNetworkDataName'] == \
        secret.metadata.name

    store = ironic.open_store()
    try:
        reservations = {r.mac: r for r in store.list_reservations()}
        assert reservations[mac].address == address
        assert reservations[mac].node == node['uuid']
        assert reservations[mac].hostname == 'host-a'

        ironic.provision(node['uuid'], 'deleted', timeout=WAIT)
        assert mac not in {r.mac for r in store.list_reservations()}
        # The address belongs to the machine, not to the deploy.
        assert admin.pool_data(space, '198.51.100.0/24') == pool
    finally:
        store.close()

    start_controller(namespace=space, follow_claims_namespaces=[space])
    admin.delete_host(space, 'host-a')
    wait_for(lambda: admin.pool_data(space, '198.51.100.0/24') == {},
             timeout=60, what=f'the controller to release {address}')
