"""``vmetal-ipam migrate`` (:mod:`vmetal_ironic.store.kubernetes.
migration`) through the fake API: the ConfigMaps of earlier releases
become claims, owner records and reservations; a second run changes
nothing; an address two old pools both handed out stays with its first
holder; an old ConfigMap is deleted only once all of it moved."""

from tests.unit.store.kubernetes import cluster as cl
from vmetal_ironic import reservation
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import migration

MAC = '52:54:00:00:09:01'


def old_pool(world, name, network, data):
    """A pool ConfigMap as an earlier release wrote it."""
    return world.kube.put('configmaps', {'metadata': {
        'name': name, 'namespace': cl.NAMESPACE,
        'labels': {names.LABEL_COMPONENT: names.COMPONENT_IPAM},
        'annotations': {names.ANNOTATION_NETWORK: network}}, 'data': data})


def outcomes(steps):
    return sorted((step.key, step.outcome) for step in steps)


def test_a_pool_becomes_claims_bound_to_their_owners():
    world = cl.Cluster()
    store = world.store()
    old_pool(world, 'vmetal-ipam-192-0-2-0-24', '192.0.2.0/24', {
        '192.0.2.5': 'BareMetalHost/m3/h1', '192.0.2.6': 'Machine/m3/w1',
        '192.0.2.300': 'Machine/m3/w2', '192.0.2.7': 'nobody'})

    steps = migration.migrate(store)

    assert outcomes(steps) == [
        ('192.0.2.300', migration.INVALID), ('192.0.2.5', migration.CREATED),
        ('192.0.2.6', migration.CREATED), ('192.0.2.7', migration.INVALID)]
    assert world.claims() == {'192.0.2.5': 'BareMetalHost/m3/h1',
                              '192.0.2.6': 'Machine/m3/w1'}
    # Bound: each owner holds its address as if allocated by this release.
    held = store.get_allocation('Machine/m3/w1')
    assert (held.address, held.pool_key) == ('192.0.2.6', '192.0.2.0/24')
    assert migration.summary(steps) == {
        migration.CREATED: 2, migration.PRESENT: 0, migration.CONFLICT: 0,
        migration.INVALID: 2}


def test_twice_is_once_and_only_whole_configmaps_are_deleted():
    world = cl.Cluster()
    store = world.store()
    old_pool(world, 'whole', '192.0.2.0/24', {'192.0.2.5': 'Machine/m3/w1'})
    old_pool(world, 'partly-bad', '192.0.2.0/24',
             {'192.0.2.6': 'Machine/m3/w2', 'x': 'Machine/m3/w3'})
    migration.migrate(store)
    before = world.kube.items(cl.CLAIMS, cl.NAMESPACE)

    steps = migration.migrate(store, delete=True)

    assert outcomes(steps) == [('192.0.2.5', migration.PRESENT),
                               ('192.0.2.6', migration.PRESENT),
                               ('x', migration.INVALID)]
    assert world.kube.items(cl.CLAIMS, cl.NAMESPACE) == before
    assert [obj['metadata']['name'] for obj in world.kube.items(
        'configmaps', cl.NAMESPACE)] == ['partly-bad']


def test_an_address_two_old_pools_handed_out_stays_with_the_first():
    world = cl.Cluster()
    store = world.store()
    old_pool(world, 'older', '192.0.2.0/24', {'192.0.2.5': 'Machine/m3/w1'})
    old_pool(world, 'newer', '192.0.2.0/23', {'192.0.2.5': 'Machine/m3/w2'})

    steps = migration.migrate(store, delete=True)

    [conflict] = [step for step in steps
                  if step.outcome == migration.CONFLICT]
    assert conflict.source.endswith('/newer')
    assert 'Machine/m3/w2 also held it; Machine/m3/w1 keeps it' in (
        conflict.detail)
    assert world.claims() == {'192.0.2.5': 'Machine/m3/w1'}
    assert store.get_allocation('Machine/m3/w2') is None
    # The ConfigMap with the conflict stays, for the operator.
    assert [obj['metadata']['name'] for obj in world.kube.items(
        'configmaps', cl.NAMESPACE)] == ['newer']


def test_old_reservations_are_published_unless_newer_ones_exist():
    world = cl.Cluster()
    store = world.store()
    old = reservation.Reservation(mac=MAC, address='192.0.2.9', prefixlen=24)
    newer = reservation.Reservation(mac='52:54:00:00:09:02',
                                    address='192.0.2.10', prefixlen=24)
    store.publish_reservation(newer)
    stale = reservation.Reservation(mac=newer.mac, address='192.0.2.11',
                                    prefixlen=24)
    world.kube.put('configmaps', {
        'metadata': {'name': names.RESERVATIONS_NAME,
                     'namespace': cl.NAMESPACE},
        'data': {names.mac_key(MAC): old.to_json(),
                 names.mac_key(newer.mac): stale.to_json(),
                 'bad': '{'}})

    steps = migration.migrate(store)

    assert outcomes(steps) == [(MAC, migration.CREATED),
                               (newer.mac, migration.PRESENT),
                               ('bad', migration.INVALID)]
    assert sorted(store.list_reservations(), key=lambda r: r.mac) == [
        old, newer]
