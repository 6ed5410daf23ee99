"""The API server itself refuses a malformed AddressClaim, AddressOwner or
DHCPReservation (the CEL rules and OpenAPI bounds of etc/kubernetes/store).

Every case starts from the object the store's own code builds
(``claim_body``, ``record_body``, ``reservation_body``), which the API
server accepts, and breaks one thing; the answer must be 422 Invalid and
name the broken field. The rest of tests/functional/k8s/ shows that
nothing the store writes is refused.
"""

import copy
import json

import pytest
import yaml
from kubernetes import client as k8s_client

from tests import kubectl
from tests.functional import kube
from vmetal_ironic import owner as owner_mod
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.ipam_controller import reconciler
from vmetal_ironic.lab.observe import wait_for
from vmetal_ironic.store.kubernetes import addresses
from vmetal_ironic.store.kubernetes import kube_names
from vmetal_ironic.store.kubernetes import reservations

GROUP, VERSION = 'vmetal-ironic.io', 'v1alpha1'
SCOPE = 'default'
MAC = '52:54:00:00:07:01'


def _owner(namespace):
    return owner_mod.for_host(namespace, 'h0')


def claim(namespace):
    return addresses.claim_body(
        namespace, SCOPE, '198.51.100.7', _owner(namespace),
        kube_names.PURPOSE_ALLOCATION, pool_key='198.51.100.0/24', mac=MAC,
        host=f'{namespace}/h0')


def record(namespace):
    # Bound to the claim as its create answered (with its UID).
    made = claim(namespace)
    made['metadata']['uid'] = '6f1c2d9e-8b7a-4c3d-9e2f-0a1b2c3d4e5f'
    return addresses.record_body(namespace, SCOPE, _owner(namespace),
                                 addresses.binding(_owner(namespace), made))


def reservation(namespace):
    return reservations.reservation_body(namespace, reservation_mod.Reservation(
        mac=MAC, address='198.51.100.7', prefixlen=24,
        gateway='198.51.100.1', dns_servers=('198.51.100.53',),
        ntp_servers=('198.51.100.123',), hostname='h0', lease_time=600,
        boot=reservation_mod.BootOptions(bootfile='snponly.efi')),
        _owner(namespace))


BUILDERS = {'addressclaims': claim, 'addressowners': record,
            'dhcpreservations': reservation}


def _set(body, path, value):
    *parents, last = path.split('.')
    target = body
    for key in parents:
        target = target[key]
    target[last] = value


# (plural, {dotted path: value}, text the refusal must hold)
BAD = [
    ('addressclaims', {'metadata.name': 'default.198.51.100.8'},
     'metadata.name must be <spec.scope>.<spec.address>'),
    ('addressclaims', {'spec.address': '198.51.100.300',
                       'metadata.name': 'default.198.51.100.300'},
     'address is not an IPv4 address'),
    ('addressclaims', {'spec.address': '2001:db8::7',
                       'metadata.name': 'default.2001-db8--7'},
     'address is not an IPv4 address'),
    ('addressclaims', {'spec.address': 7}, 'spec.address: Invalid value'),
    ('addressclaims', {'spec.purpose': 'lunch'}, 'spec.purpose: Unsupported'),
    ('addressclaims', {'spec.expires': 1900000000},
     'only inspection leases expire'),
    ('addressclaims', {'spec.pool': '203.0.113.0/24'},
     'address is not in pool'),
    ('addressclaims', {'spec.pool': '198.51.100.7/24'},
     'pool is not an IPv4 network'),
    ('addressclaims', {'spec.owner': 'nobody'}, 'spec.owner'),
    ('addressclaims', {'spec.mac': '52:54:00:00:07:0G'}, 'spec.mac'),
    ('addressclaims', {'spec.scope': 'Bad_Scope',
                       'metadata.name': 'Bad_Scope.198.51.100.7'},
     'spec.scope'),
    ('addressclaims', {'spec.purpose': 'inspection', 'spec.expires': -1},
     'spec.expires'),
    ('addressowners', {'metadata.name': 'default.not-a-hash'},
     'metadata.name must be <scope>.<40 hex digits'),
    ('addressowners', {'spec.claim': 'other.198.51.100.7',
                       'spec.address': '198.51.100.7'},
     "spec.claim is not in the record's scope"),
    ('addressowners', {'spec.claim': 'default.198.51.100'},
     'claim is not <scope>.<IPv4 address>'),
    ('addressowners', {'spec.claim': 'default.198.51.100.9'},
     'spec.claim does not name spec.address'),
    ('addressowners', {'spec.pool': '203.0.113.0/24'},
     'address is not in pool'),
    ('addressowners', {'spec.purpose': 'lunch'}, 'spec.purpose: Unsupported'),
    ('dhcpreservations', {'metadata.name': '52-54-00-00-07-02'},
     'metadata.name must be spec.mac with dashes'),
    ('dhcpreservations', {'spec.mac': '52-54-00-00-07-01'}, 'spec.mac'),
    ('dhcpreservations', {'spec.prefixlen': 33},
     'prefixlen is longer than the address allows'),
    ('dhcpreservations', {'spec.prefixlen': '24'},
     'spec.prefixlen: Invalid value'),
    ('dhcpreservations', {'spec.address': '198.51.100'},
     'address is not an IP address'),
    ('dhcpreservations', {'spec.gateway': 'router'},
     'gateway is not an IP address'),
    ('dhcpreservations', {'spec.gateway': '2001:db8::1'},
     "gateway is not of the address's family"),
    ('dhcpreservations', {'spec.dns_servers': ['198.51.100.53.1']},
     'a DNS server is not an IP address'),
    ('dhcpreservations', {'spec.dns_servers': ['198.51.100.53'] * 64},
     'spec.dns_servers'),
    ('dhcpreservations', {'spec.ntp_servers': ['2001:db8::123']},
     "an NTP server is not of the address's family"),
    ('dhcpreservations', {'spec.lease_time': 0}, 'spec.lease_time'),
    ('dhcpreservations', {'spec.lease_time': 2 ** 32}, 'spec.lease_time'),
    ('dhcpreservations', {'spec.hostname': ''}, 'spec.hostname'),
    ('dhcpreservations', {'spec.boot.bootfile': 'x' * 256},
     'spec.boot.bootfile'),
]


def _message(error):
    return json.loads(error.body)['message']


def _create(admin, namespace, plural, body):
    return admin.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body)


@pytest.mark.parametrize('plural', sorted(BUILDERS))
def test_what_the_store_builds_is_accepted(admin, namespace, plural):
    body = BUILDERS[plural](namespace)
    created = _create(admin, namespace, plural, body)
    assert created['spec'] == body['spec']


@pytest.mark.parametrize('plural,changes,message', BAD,
                         ids=[f'{p}:{",".join(c)}={list(c.values())[-1]!s:.20}'
                              for p, c, _ in BAD])
def test_a_malformed_object_is_refused(admin, namespace, plural, changes,
                                       message):
    body = copy.deepcopy(BUILDERS[plural](namespace))
    for path, value in changes.items():
        _set(body, path, value)
    with pytest.raises(k8s_client.ApiException) as caught:
        _create(admin, namespace, plural, body)
    assert caught.value.status == 422, caught.value.body
    assert message in _message(caught.value), caught.value.body
    assert admin.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, plural)['items'] == []


def test_a_refused_change_leaves_the_object_as_it_was(admin, namespace):
    """A transition is checked too: patching a held claim to an address
    its name does not describe is refused, the claim unchanged."""
    created = _create(admin, namespace, 'addressclaims', claim(namespace))
    with pytest.raises(k8s_client.ApiException) as caught:
        admin.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, 'addressclaims',
            created['metadata']['name'], {'spec': {'address': '198.51.100.8'}},
            _content_type='application/merge-patch+json')
    assert caught.value.status == 422
    assert 'metadata.name must be' in _message(caught.value)
    now = admin.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, 'addressclaims',
        created['metadata']['name'])
    assert now['spec'] == created['spec']


def test_ntp_servers_survive_the_round_trip(admin, namespace, make_store):
    """Review finding 17: the schema declared no ``ntp_servers`` and the
    API server pruned it, so option 42 never reached hosts served from the
    Kubernetes store, and every publish rewrote the object."""
    store = make_store()
    wanted = reservation_mod.Reservation(
        mac=MAC, address='198.51.100.7', prefixlen=24,
        ntp_servers=('198.51.100.123', '198.51.100.124'))
    store.publish_reservation(wanted)
    assert store.list_reservations() == [wanted]
    name = MAC.replace(':', '-')
    before = admin.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, 'dhcpreservations', name)
    store.publish_reservation(wanted)   # the same again: nothing to write
    after = admin.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, 'dhcpreservations', name)
    assert after['metadata']['resourceVersion'] == before[
        'metadata']['resourceVersion']


# The AddressOwner fields of the releases before the claim-first protocol,
# as their schema declared them.
EARLIER_FIELDS = {
    'binder': {'type': 'string', 'pattern': '^[0-9a-f]{32}$'},
    'completer': {'type': 'string', 'pattern': '^[0-9a-f]{32}$'},
    'boundAt': {'type': 'string', 'format': 'date-time'},
}
EARLIER_VALUES = {'binder': '0123456789abcdef' * 2,
                  'boundAt': '2026-11-30T12:00:00Z'}


def _owner_schema(crd):
    return crd['spec']['versions'][0]['schema']['openAPIV3Schema'][
        'properties']['spec']['properties']


def _declares_earlier_fields(admin, namespace, record_body):
    """Whether the AddressOwner schema in effect keeps ``binder``: a
    server-side dry run (nothing is stored) of a record like
    ``record_body``, for an owner of its own (the name is free)."""
    probe = copy.deepcopy(record_body)
    probe['metadata']['name'] = addresses.record_name(
        SCOPE, owner_mod.for_host(namespace, 'schema-probe'))
    answer = admin.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, 'addressowners', probe, dry_run='All')
    return 'binder' in answer['spec']


def test_a_record_stored_by_an_earlier_release_is_read_after_the_upgrade(
        kube_cluster, admin, namespace, make_store):
    """The schema no longer declares ``binder``, ``completer`` and
    ``boundAt``. A record an earlier release stored with them (and without
    ``claimUID``) under the schema of then still holds its address after
    the upgrade, and the collect step's rebind stores it without them."""
    current = yaml.safe_load(
        (kube.MANIFESTS / 'store' / 'addressowner.yaml').read_text())
    assert not set(EARLIER_FIELDS) & set(_owner_schema(current))
    earlier = copy.deepcopy(current)
    _owner_schema(earlier).update(EARLIER_FIELDS)
    made = _create(admin, namespace, 'addressclaims', claim(namespace))
    old = addresses.record_body(namespace, SCOPE, _owner(namespace),
                                addresses.binding(_owner(namespace), made))
    del old['spec']['claimUID']
    old['spec'].update(EARLIER_VALUES)
    kubectl.apply([earlier], kube_cluster.kubeconfig)
    try:
        wait_for(lambda: _declares_earlier_fields(admin, namespace, old),
                 timeout=30, what='the earlier AddressOwner schema')
        stored = _create(admin, namespace, 'addressowners', old)
        assert stored['spec']['binder'] == EARLIER_VALUES['binder']
    finally:
        kubectl.apply([current], kube_cluster.kubeconfig)
    wait_for(lambda: not _declares_earlier_fields(admin, namespace, old),
             timeout=30, what='the current AddressOwner schema')

    owner = str(_owner(namespace))
    # Read at once, before anything writes it again: the API server drops
    # the fields the schema no longer declares when it reads the object.
    as_stored = admin.owner_records(namespace)[owner]
    assert not set(EARLIER_FIELDS) & set(as_stored['spec'])
    assert 'claimUID' not in as_stored['spec']

    admin.create_host(namespace, 'h0', MAC)
    store = make_store()
    assert store.get_allocation(owner).address == '198.51.100.7'
    assert reconciler.Reconciler(store).collect() == []
    record = admin.owner_records(namespace)[owner]
    assert record['spec']['claimUID'] == made['metadata']['uid']
    assert not set(EARLIER_FIELDS) & set(record['spec'])
    assert store.allocate(ipam_pool.parse_pool('198.51.100.1/24'),
                          owner).address == '198.51.100.7'
