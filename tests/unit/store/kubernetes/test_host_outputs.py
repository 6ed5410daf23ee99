"""What the store writes for a host (:mod:`vmetal_ironic.store.kubernetes.
host_outputs`), through the fake API: the Secret with its ownerReference,
replaced without being read; the outputs' compare-and-swap against a
concurrent writer of the host; and taking both back."""

import base64
import json

import pytest

from tests.unit.store.kubernetes import cluster as cl
from vmetal_ironic import exception
from vmetal_ironic import network_data
from vmetal_ironic import owner as owner_mod
from vmetal_ironic import properties as props
from vmetal_ironic.store.kubernetes import host_outputs

OWNER = owner_mod.for_host(cl.HOSTS, 'h1')
SECRET = 'vmetal-nd-baremetalhost-h1'  # noqa: S105 - a name
PRIMARY = network_data.PrimaryIPv4('192.0.2.5', 24, '192.0.2.1', ())


def document(address='192.0.2.5'):
    return {'links': [], 'networks': [{'ip_address': address}],
            'services': []}


def secret_document(world):
    secret = world.kube.get('secrets', cl.HOSTS, SECRET)
    return json.loads(base64.b64decode(
        secret['data'][host_outputs.SECRET_KEY]))


def test_the_secret_belongs_to_its_host():
    host = {'metadata': {'name': 'h1', 'namespace': cl.HOSTS, 'uid': 'u1'}}
    body = host_outputs.secret_body(OWNER, cl.HOSTS, document(), host)
    assert body['metadata']['name'] == SECRET
    assert body['metadata']['ownerReferences'] == [{
        'apiVersion': 'metal3.io/v1alpha1', 'kind': 'BareMetalHost',
        'name': 'h1', 'uid': 'u1'}]
    assert 'ownerReferences' not in host_outputs.secret_body(
        OWNER, cl.HOSTS, document())['metadata']


def test_a_save_is_the_secret_then_the_outputs_and_again_without_reads():
    world = cl.Cluster()
    outputs = world.store().outputs
    host = world.host('h1')
    outputs.save(OWNER, document(), host, PRIMARY)
    assert secret_document(world) == document()
    annotations = world.get_host('h1')['metadata']['annotations']
    assert annotations[props.IP_ADDRESS] == '192.0.2.5/24'

    before = dict(world.kube.requests)
    outputs.save(OWNER, document('192.0.2.6'), world.get_host('h1'),
                 network_data.PrimaryIPv4('192.0.2.6', 24))
    # The name is the store's: 409, then replaced, never read first.
    assert world.kube.requests.get(('get', 'secrets')) == before.get(
        ('get', 'secrets'))
    assert world.kube.requests[('replace', 'secrets')] == 1
    assert secret_document(world) == document('192.0.2.6')


def test_the_outputs_patch_reads_again_after_a_concurrent_write():
    world = cl.Cluster()
    outputs = world.store().outputs
    host = world.host('h1')
    # Metal3 writes the host between our read and our patch.
    world.kube.at('patch', cl.BMH, lambda: world.change_host(
        'h1', metadata={'annotations': {'metal3.io/x': 'y'}}))

    outputs.save(OWNER, document(), host, PRIMARY)

    annotations = world.get_host('h1')['metadata']['annotations']
    assert annotations['metal3.io/x'] == 'y'
    assert annotations[props.IP_ADDRESS] == '192.0.2.5/24'
    assert world.kube.requests[('patch', cl.BMH)] == 2


def test_clear_takes_the_outputs_back_and_deletes_the_secret():
    world = cl.Cluster()
    outputs = world.store().outputs
    outputs.save(OWNER, document(), world.host('h1'), PRIMARY)

    outputs.clear(OWNER, cl.HOSTS, 'h1')
    outputs.clear(OWNER, cl.HOSTS, 'h1')     # twice: nothing left to do

    host = world.get_host('h1')
    assert props.IP_ADDRESS not in host['metadata']['annotations']
    assert 'preprovisioningNetworkDataName' not in host['spec']
    assert world.kube.get('secrets', cl.HOSTS, SECRET) is None
    assert outputs.read_secret(OWNER, cl.HOSTS) is None


def test_a_secret_that_is_not_json_is_named():
    world = cl.Cluster()
    world.kube.put('secrets', {
        'metadata': {'name': SECRET, 'namespace': cl.HOSTS},
        'data': {host_outputs.SECRET_KEY: base64.b64encode(b'{').decode()}})
    with pytest.raises(exception.InvalidNetworkData,
                       match=f'Secret {cl.HOSTS}/{SECRET} key networkData'):
        world.store().outputs.read_secret(OWNER, cl.HOSTS)
