"""Issue 9 on a real kube-apiserver: an address never goes to two hosts,
release takes back only what the store wrote, the Machine owns the
address, reservations are one object per MAC followed by list-then-watch.

Each test names the numbered item of issue 9 it covers; each failed on
the ConfigMap store it replaces.
"""

import json
import threading
import time

import pytest

from tests.functional import kube
from vmetal_ironic import exception
from vmetal_ironic import host_network
from vmetal_ironic import properties as props
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.ipam import errors as ipam_errors
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.lab.observe import wait_for
from vmetal_ironic.store import kubernetes as kube_store
from vmetal_ironic.store.kubernetes import kube_names

BMH = ('metal3.io', 'v1alpha1', 'baremetalhosts')


def mac_of(index):
    return f'52:54:00:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}'


def _patch_host(admin, namespace, name, body):
    return admin.custom.patch_namespaced_custom_object(
        *BMH[:2], namespace, BMH[2], name, body,
        _content_type='application/merge-patch+json')


def _custom_document(mac, address):
    """A user's own network_data: one link, one static /24 address."""
    return {'links': [{'id': 'nic0', 'type': 'phy',
                       'ethernet_mac_address': mac}],
            'networks': [{'id': 'n', 'link': 'nic0', 'type': 'ipv4',
                          'ip_address': address,
                          'netmask': '255.255.255.0'}],
            'services': []}


def _reservation(mac, address, node=None):
    return reservation_mod.Reservation(mac=mac, address=address,
                                       prefixlen=24, gateway='192.0.2.1',
                                       node=node)


def allocate_from(settings, cidr, owners, gate):
    """Worker body: allocate ``owners`` from ``cidr`` once released."""
    from vmetal_ironic.ipam import pool as pool_mod
    from vmetal_ironic.store import kubernetes as store_mod

    store = store_mod.KubernetesStore(kube.store_conf(settings))
    pool = pool_mod.parse_pool(cidr)
    try:
        gate[0].put(1)
        gate[1].wait(120)
        result = []
        for owner in owners:
            result.append(_allocate(store, pool, owner))
        return result
    finally:
        store.close()


def _allocate(store, pool, owner, tries=2):
    """``(owner, address, None)`` or ``(owner, None, error's name)``.

    A temporary error (the store's bounded retries lost to the other
    writers: StoreConflict) is tried once more, as the Ironic adapter
    does (``ironic/errors.py``); the tests check what stands, never a
    second address.
    """
    for attempt in range(tries):
        try:
            return owner, store.allocate(pool, owner).address, None
        except exception.TemporaryError as exc:
            if attempt == tries - 1:
                return owner, None, type(exc).__name__
        except exception.VmetalError as exc:
            return owner, None, type(exc).__name__


# -- item 1 and 7: uniqueness by construction ---------------------------------

def test_item1_a_24_and_a_23_pool_racing_never_share_an_address(
        kube_cluster, admin, namespace):
    # Two node types on one L2 (or a pool widened while hosts hold
    # addresses): 4 processes on the /24 and 4 on the /23, released
    # together by a barrier, each taking the lowest free address.
    settings = kube_cluster.settings(namespace=namespace)
    results, _ = kube.run_together(
        8, allocate_from,
        lambda i: (settings, '192.0.2.1/24' if i % 2 else '192.0.2.1/23',
                   [f'Machine/w{i}/m{n}' for n in range(12)]))
    pairs = [pair for chunk in results for pair in chunk]
    assert [p for p in pairs if p[2] is not None] == []
    addresses = [address for _, address, _ in pairs]
    assert len(addresses) == 96 == len(set(addresses))
    claims = admin.claims(namespace)
    assert sorted(c['spec']['address'] for c in claims
                  if c['spec']['purpose'] == 'allocation') == sorted(addresses)


def test_item7_one_owner_racing_two_pools_holds_one_address(
        kube_cluster, admin, namespace):
    # A property changed while two conductors run: the same owner asks
    # two pools at once, from 6 processes released together.
    settings = kube_cluster.settings(namespace=namespace)
    owners = [f'Machine/default/worker-{n}' for n in range(10)]
    results, _ = kube.run_together(
        6, allocate_from,
        lambda i: (settings, '192.0.2.1/24' if i % 2 else '198.51.100.1/24',
                   owners))
    claims = [c for c in admin.claims(namespace)
              if c['spec']['purpose'] == 'allocation']
    held = {}
    for claim in claims:
        held.setdefault(claim['spec']['owner'], []).append(
            claim['spec']['address'])
    assert sorted(held) == sorted(owners)
    assert all(len(addresses) == 1 for addresses in held.values()), held
    # Every process that got an answer got the address that stands.
    for chunk in results:
        for owner, address, error in chunk:
            if error is None:
                assert held[owner] == [address]
            else:
                assert error == 'OwnerElsewhere'


def test_item11_custom_document_address_is_held(admin, namespace, make_store):
    store = make_store()
    custom = _custom_document(mac_of(1), '192.0.2.2')
    admin.create_host(namespace, 'custom', mac_of(1), annotations={
        props.NETWORK_DATA: json.dumps(custom)})
    admin.create_host(namespace, 'pooled', mac_of(2), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    host_network.ensure(store, f'BareMetalHost/{namespace}/custom', mac_of(1))
    pooled = host_network.ensure(store, f'BareMetalHost/{namespace}/pooled',
                                 mac_of(2))
    assert pooled.allocation.address == '192.0.2.3'
    # Another document naming it is refused, naming value and source.
    with pytest.raises(ipam_errors.AddressTaken) as info:
        store.hold('Machine/x/y', '192.0.2.3', 'network-data of Machine/x/y')
    assert str(info.value) == (
        f'network-data of Machine/x/y names 192.0.2.3, which '
        f'BareMetalHost/{namespace}/pooled holds; choose another address')


def test_item12_infrastructure_addresses_are_never_handed_out(
        kube_cluster, admin, namespace):
    # The shipped agent address and the mission's example network.
    conf = kube.store_conf(kube_cluster.settings(namespace=namespace))
    conf.set_override('reserved_addresses', ['192.168.100.3'],
                      group='vmetal')
    store = kube_store.KubernetesStore(conf)
    pool = ipam_pool.parse_pool('192.168.100.1/24')
    got = [store.allocate(pool, f'Machine/t/h{n}').address for n in range(3)]
    assert got == ['192.168.100.2', '192.168.100.4', '192.168.100.5']
    purposes = {c['spec']['address']: c['spec']['purpose']
                for c in admin.claims(namespace)}
    assert purposes['192.168.100.1'] == 'gateway'
    assert purposes['192.168.100.3'] == 'reserved'
    store.close()


# -- items 2, 4, 8: reservations ---------------------------------------------

def test_item2_release_withdraws_every_reservation_of_owner_and_address(
        admin, namespace, make_store):
    admin.create_host(namespace, 'old', mac_of(1), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    store = make_store()
    owner = f'BareMetalHost/{namespace}/old'
    address = host_network.ensure(store, owner, mac_of(1)).allocation.address
    store.publish_reservation(_reservation(mac_of(1), address), owner=owner)
    # A stale one for the same address under another MAC.
    store.publish_reservation(_reservation(mac_of(9), address))
    store.publish_reservation(_reservation(mac_of(3), '192.0.2.200'))
    admin.delete_host(namespace, 'old')
    released = store.reconcile()
    assert [(a.owner, a.address) for a in released] == [(owner, address)]
    assert [r.mac for r in store.list_reservations()] == [mac_of(3)]


def test_item4_reservations_are_one_object_per_mac(admin, namespace,
                                                   make_store):
    store = make_store()
    for index in range(5):
        store.publish_reservation(_reservation(mac_of(index),
                                               f'192.0.2.{10 + index}'))
    store.publish_reservation(_reservation(mac_of(0), '192.0.2.10'))  # no-op
    names = sorted(o['metadata']['name'] for o in admin.reservations(namespace))
    assert names == [kube_names.reservation_name(mac_of(i)) for i in range(5)]
    revision, listed = store.reservations_snapshot()
    assert revision and len(listed) == 5
    # A node's reservations by label and name, not by reading the fleet.
    store.publish_reservation(_reservation(mac_of(7), '192.0.2.30',
                                           node='node-7'))
    found = store.reservations_of(node='node-7', macs=[mac_of(1), mac_of(99)])
    assert [r.mac for r in found] == [mac_of(1), mac_of(7)]


def test_item8_follow_from_the_list_and_relist_after_410(admin, namespace,
                                                          make_store):
    store = make_store()
    revision, _ = store.reservations_snapshot()
    # A change after the list is seen, without a second list.
    start = time.monotonic()
    store.publish_reservation(_reservation(mac_of(1), '192.0.2.10'))
    changes = []
    for change in store.follow_reservations(revision, 5):
        changes.append(change)
        if change.changed is not None:
            break
    assert changes[-1].changed.mac == mac_of(1)
    assert time.monotonic() - start < 5
    # A position older than the API server's window (its watch cache
    # begins where it first listed the resource, long after revision 1):
    # 410 Gone, and following from it says so instead of silently polling.
    with pytest.raises(exception.RevisionExpired):
        for _ in store.follow_reservations('1', 5):
            pass
    fresh, listed = store.reservations_snapshot()
    assert len(listed) == 1
    store.withdraw_reservation(mac_of(1))
    removed = next(c for c in store.follow_reservations(fresh, 5)
                   if c.removed)
    assert removed.removed == mac_of(1)


# -- item 3: release touches only what the store wrote -------------------------

def test_item3_release_restores_the_users_annotations(admin, namespace,
                                                      make_store):
    admin.create_host(namespace, 'h', mac_of(1), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24',
        props.DNS_SERVERS: '203.0.113.53',
        props.GATEWAY: '192.0.2.254'})
    store = make_store()
    owner = f'BareMetalHost/{namespace}/h'
    host_network.ensure(store, owner, mac_of(1))
    annotations = admin.get_host(namespace, 'h')['metadata']['annotations']
    # The user's dns-servers is the user's input; the gateway output
    # replaced the user's value (recorded to come back).
    assert annotations[props.DNS_SERVERS] == '203.0.113.53'
    assert annotations[props.GATEWAY] == '192.0.2.1'
    store.release(owner)
    after = admin.get_host(namespace, 'h')['metadata']['annotations']
    assert after[props.DNS_SERVERS] == '203.0.113.53'
    assert after[props.GATEWAY] == '192.0.2.254'
    assert props.IP_ADDRESS not in after
    assert admin.claims(namespace) == [] or all(
        c['spec']['purpose'] == 'gateway' for c in admin.claims(namespace))


def test_item3_custom_document_keeps_the_users_annotations(
        admin, namespace, make_store):
    custom = _custom_document(mac_of(2), '203.0.113.7')
    admin.create_host(namespace, 'h', mac_of(2), annotations={
        props.NETWORK_DATA: json.dumps(custom),
        props.DNS_SERVERS: '9.9.9.9', props.GATEWAY: '203.0.113.1'})
    store = make_store()
    host_network.ensure(store, f'BareMetalHost/{namespace}/h', mac_of(2))
    annotations = admin.get_host(namespace, 'h')['metadata']['annotations']
    assert annotations[props.IP_ADDRESS] == '203.0.113.7/24'
    assert annotations[props.DNS_SERVERS] == '9.9.9.9'
    assert annotations[props.GATEWAY] == '203.0.113.1'


# -- items 13 and 16: lifecycle --------------------------------------------------

def test_item16_the_machine_owns_the_address_and_it_follows_the_claim(
        admin, namespace, make_store):
    admin.create_host(namespace, 'h', mac_of(1), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    store = make_store()
    host_owner = f'BareMetalHost/{namespace}/h'
    # Inspection: no Machine yet, the host holds it.
    inspected = host_network.ensure(store, host_owner, mac_of(1))
    assert store.get_allocation(host_owner).owner == host_owner
    # A Machine claims the host: it takes over the same address.
    _patch_host(admin, namespace, 'h', {'spec': {'consumerRef': {
        'kind': 'Metal3Machine', 'name': 'worker-0',
        'apiVersion': 'infrastructure.cluster.x-k8s.io/v1beta1'}}})
    admin.set_host_state(namespace, 'h', 'provisioning')
    deployed = host_network.ensure(store, host_owner, mac_of(1))
    assert deployed.allocation.address == inspected.allocation.address
    machine = f'Metal3Machine/{namespace}/worker-0'
    assert [c['spec']['owner'] for c in admin.claims(namespace)
            if c['spec']['purpose'] == 'allocation'] == [machine]
    # The Machine lets go while the host deprovisions: kept.
    _patch_host(admin, namespace, 'h', {'spec': {'consumerRef': None}})
    admin.set_host_state(namespace, 'h', 'deprovisioning')
    assert store.reconcile() == []
    # Deprovisioned (available): released, outputs gone.
    admin.set_host_state(namespace, 'h', 'available')
    released = store.reconcile()
    assert [(a.owner, a.address) for a in released] == [
        (machine, inspected.allocation.address)]
    annotations = admin.get_host(namespace, 'h')['metadata']['annotations']
    assert props.IP_ADDRESS not in annotations


def test_item13_a_detached_host_deleted_keeps_its_address(
        admin, namespace, make_store):
    admin.create_host(namespace, 'h', mac_of(1), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24',
        'baremetalhost.metal3.io/detached': ''})
    store = make_store()
    owner = f'BareMetalHost/{namespace}/h'
    address = host_network.ensure(store, owner, mac_of(1)).allocation.address
    assert store.reconcile() == []   # marks it retained
    admin.delete_host(namespace, 'h')
    assert store.reconcile() == []
    assert store.get_allocation(owner).address == address
    # The next host does not get it.
    admin.create_host(namespace, 'next', mac_of(2), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    got = host_network.ensure(store, f'BareMetalHost/{namespace}/next', mac_of(2))
    assert got.allocation.address != address


# -- items 6, 10, 14: the reconciler -------------------------------------------

def test_item6_reconcile_never_frees_a_host_created_during_the_pass(
        admin, namespace, make_store):
    # Hosts are created and given addresses WHILE passes run back to back,
    # not created first: every live host keeps its address.
    reconciling = make_store()
    writer = make_store()
    stop = time.monotonic() + 20
    passes = [0]

    def loop():
        while time.monotonic() < stop and not done.is_set():
            reconciling.reconcile()
            passes[0] += 1

    done = threading.Event()
    thread = threading.Thread(target=loop)
    thread.start()
    try:
        for index in range(25):
            admin.create_host(namespace, f'h{index}', mac_of(index),
                              annotations={props.NETWORK_CIDR:
                                           '192.0.2.1/24'})
            host_network.ensure(writer, f'BareMetalHost/{namespace}/h{index}',
                                mac_of(index))
    finally:
        done.set()
        thread.join(timeout=60)
    assert passes[0] >= 2
    owners = {c['spec']['owner'] for c in admin.claims(namespace)
              if c['spec']['purpose'] == 'allocation'}
    assert owners == {f'BareMetalHost/{namespace}/h{i}' for i in range(25)}


def test_item14_a_host_deleted_before_the_controller_starts_is_released(
        admin, namespace, make_store, start_controller):
    admin.create_host(namespace, 'gone', mac_of(1), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    store = make_store()
    host_network.ensure(store, f'BareMetalHost/{namespace}/gone', mac_of(1))
    admin.delete_host(namespace, 'gone')
    start_controller(reconcile_interval=0)
    wait_for(lambda: store.get_allocation(
        f'BareMetalHost/{namespace}/gone') is None,
        timeout=30, what='the first judgement of the controller')


# -- migration from the ConfigMaps of earlier releases -------------------------

def test_migrate_from_the_old_configmaps_is_idempotent(
        kube_cluster, admin, namespace, tmp_path, capsys):
    from vmetal_ironic.cmd import ipam as ipam_cmd

    labels = {'app.kubernetes.io/managed-by': 'vmetal-ironic',
              kube_names.LABEL_COMPONENT: kube_names.COMPONENT_IPAM}
    # The duplicate the old per-pool records allowed: .2 in both pools.
    for network, data in (('192.0.2.0/24', {'192.0.2.2': 'BareMetalHost/m/a',
                                            '192.0.2.3': 'BareMetalHost/m/b'}),
                          ('192.0.2.0/23', {'192.0.2.2': 'BareMetalHost/m/c'})):
        admin.core.create_namespaced_config_map(namespace, {'metadata': {
            'name': kube_names.pool_configmap_name(network), 'labels': labels,
            'annotations': {kube_names.ANNOTATION_NETWORK: network}},
            'data': data})
    old = _reservation(mac_of(1), '192.0.2.2')
    admin.core.create_namespaced_config_map(namespace, {'metadata': {
        'name': kube_names.RESERVATIONS_NAME},
        'data': {kube_names.mac_key(old.mac): old.to_json()}})
    settings = kube_cluster.settings(namespace=namespace)
    config = tmp_path / 'vmetal.conf'
    config.write_text('[vmetal]\nstore = kubernetes\n[vmetal_kubernetes]\n'
                      + ''.join(f'{key} = {value}\n'
                                for key, value in settings.items()))
    argv = ['--config-file', str(config), '--json', 'migrate']
    assert ipam_cmd.main(argv) == 0
    first = {(s['key'], s['outcome']) for s in json.loads(
        capsys.readouterr().out)}
    assert first == {('192.0.2.2', 'created'), ('192.0.2.3', 'created'),
                     ('192.0.2.2', 'conflict'), (mac_of(1), 'created')}
    assert ipam_cmd.main([*argv, '--delete']) == 0
    second = {(s['key'], s['outcome']) for s in json.loads(
        capsys.readouterr().out)}
    assert second == {('192.0.2.2', 'present'), ('192.0.2.3', 'present'),
                      ('192.0.2.2', 'conflict'), (mac_of(1), 'present')}
    assert admin.pool_data(namespace, '192.0.2.0/24') == {
        '192.0.2.2': 'BareMetalHost/m/a', '192.0.2.3': 'BareMetalHost/m/b'}
    # Fully migrated ConfigMaps are gone; the one with a conflict stays.
    left = {c.metadata.name for c in admin.core.list_namespaced_config_map(
        namespace).items if c.metadata.name.startswith('vmetal-')}
    assert left == {kube_names.pool_configmap_name('192.0.2.0/23')}


def test_malformed_reservations_reach_the_agents_skipped_metric(
        admin, namespace, make_store):
    from vmetal_ironic.dhcp_agent import cache as cache_mod
    from vmetal_ironic.dhcp_agent import metrics as metrics_mod

    writer, agent = make_store(), make_store()
    writer.publish_reservation(_reservation(mac_of(1), '192.0.2.10'))
    # Passes the CRD's rules, not the store's reading of it: the schema
    # counts 200 characters, DHCP option 12 counts 400 bytes.
    bad_mac = mac_of(2)
    admin.custom.create_namespaced_custom_object(
        *kube_names.RESERVATION_API[:2], namespace,
        kube_names.RESERVATION_API[2], {
            'apiVersion': 'vmetal-ironic.io/v1alpha1',
            'kind': 'DHCPReservation',
            'metadata': {'name': kube_names.reservation_name(bad_mac),
                         'labels': dict(kube_names.MANAGED_BY, **{
                             kube_names.LABEL_COMPONENT:
                             kube_names.COMPONENT_RESERVATION})},
            'spec': {'mac': bad_mac, 'address': '192.0.2.11',
                     'prefixlen': 24, 'hostname': '\u00e9' * 200}})
    metrics = metrics_mod.Metrics()
    cache = cache_mod.ReservationCache()
    poller = cache_mod.RevisionPoller(agent, cache, interval=0.2,
                                      metrics=metrics)

    def skipped():
        return metrics.registry.get_sample_value(
            'vmetal_dhcp_reservations_skipped')

    poller.refresh(force=True)
    assert len(cache) == 1
    assert agent.skipped_reservations == 1
    assert skipped() == 1
    # Followed: the bad object fixed, the metric falls back to 0.
    poller.start()
    try:
        writer.publish_reservation(_reservation(bad_mac, '192.0.2.11'))
        wait_for(lambda: cache.get(bad_mac) is not None, timeout=10,
                 what='the fixed reservation in the cache')
        wait_for(lambda: skipped() == 0, timeout=10, what='skipped back to 0')
    finally:
        poller.stop()
