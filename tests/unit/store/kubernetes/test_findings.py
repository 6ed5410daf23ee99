"""The review's findings on the Kubernetes store (reviews/2026-12-06
reliability-security), each driven through the fake API at the exact
interleaving, or with the lost answer, that caused it."""

import netaddr

from tests.unit.store.kubernetes import cluster as cl
from vmetal_ironic import owner as owner_mod
from vmetal_ironic import reservation
from vmetal_ironic.ironic import network
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.ipam_controller import reconciler as rec
from vmetal_ironic.store.kubernetes import addresses


def test_1_a_pass_never_frees_the_claim_a_machine_was_just_handed():
    # The pass lists the claims, then the records; a Machine adopts the
    # host's address in between (another process's flow).
    world = cl.Cluster(follow_claims_namespaces=[])
    a, b = world.store(), world.store()
    world.host('h1')
    assert cl.give(b, 'h1').allocation.address == '192.0.2.2'
    world.claim('h1', 'Machine/m3/worker-0')
    world.kube.at('list', cl.OWNERS, lambda: cl.give(b, 'h1'))

    released = a.reconcile()

    assert released == []
    assert world.claims()['192.0.2.2'] == 'Machine/m3/worker-0'
    world.host('h2')
    assert cl.give(a, 'h2').allocation.address == '192.0.2.3'


def test_2_one_failing_release_does_not_stop_the_others():
    world = cl.Cluster(follow_claims_namespaces=['m3'])
    store = world.store()
    for name in ('h1', 'h2', 'h3'):
        world.host(name)
        cl.give(store, name)
    # h1's Machine lives in a namespace the store may not write Secrets in.
    world.claim('h1', 'Machine/tenant/w1')
    cl.give(store, 'h1')
    world.kube.deny('delete', 'secrets', 'tenant')
    world.let_go('h1')
    world.delete_host('h3')
    world.host('h4', consumer='Machine/m3/w4')

    released = {(a.owner, a.address) for a in store.reconcile()}

    assert released == {('Machine/tenant/w1', '192.0.2.2'),
                        ('BareMetalHost/m3/h3', '192.0.2.4')}
    # The claim follow-up ran too.
    assert world.claims()['192.0.2.2'] == 'Machine/m3/w4'


def test_7_a_lost_answer_to_the_hand_over_keeps_one_address():
    world = cl.Cluster(follow_claims_namespaces=[])
    store = world.store()
    world.host('h1')
    assert cl.give(store, 'h1').allocation.address == '192.0.2.2'
    world.claim('h1', 'Machine/m3/w')
    # The hand-over patch is applied; its answer is lost; the retry of the
    # compare-and-swap then meets its own write (409).
    world.kube.at('patch', cl.CLAIMS, lose=True)

    given = cl.give(store, 'h1')

    assert given.allocation.address == '192.0.2.2'
    assert world.claims() == {'192.0.2.2': 'Machine/m3/w'}
    assert store.reconcile() == []


def test_9_the_retain_mark_goes_once_the_host_is_neither_paused_nor_detached():
    world = cl.Cluster(follow_claims_namespaces=[])
    store = world.store()
    world.host('h1', annotations={rec.PAUSED: ''})
    world.host('h2')
    cl.give(store, 'h1')
    cl.give(store, 'h2')
    store.reconcile()
    world.change_host('h1', metadata={'annotations': {rec.PAUSED: None}})
    store.reconcile()
    world.delete_host('h1')
    world.delete_host('h2')

    released = {(a.owner, a.address) for a in store.reconcile()}

    assert released == {('BareMetalHost/m3/h1', '192.0.2.2'),
                        ('BareMetalHost/m3/h2', '192.0.2.3')}
    assert world.claims() == {}


def test_10_an_allocation_never_iterates_a_set_other_threads_change():
    # Conductor threads share the store: an allocation that lost a race
    # counts the held addresses while another thread learns one. It must
    # count its own copy (iterating a set another thread grows raises
    # RuntimeError); which thread runs when cannot be forced, so the test
    # checks the copy, and that the shared view still learns the result.
    world = cl.Cluster()
    store = world.store()
    world.host('h1')
    book = store.addresses
    shared = book.used_addresses()
    attempt = addresses.Allocation(book,
                                   ipam_pool.parse_pool('192.0.2.1/24'),
                                   owner_mod.parse('BareMetalHost/m3/h1'))
    assert attempt.used is not shared
    attempt.used.add(7)
    assert 7 not in book.used_addresses()
    cl.give(store, 'h1')
    assert int(netaddr.IPAddress('192.0.2.2')) in book.used_addresses()


def test_18_a_deleted_node_reads_its_own_reservations_not_the_fleets():
    world = cl.Cluster()
    store = world.store()
    for number in range(3):
        store.publish_reservation(reservation.Reservation(
            mac=f'52:54:00:00:01:0{number}', address=f'192.0.2.{10 + number}',
            prefixlen=24, node=f'node-{number}'))
    world.kube.selectors.clear()

    network._release_deleted(store, 'node-1', 'Node/node-1')

    assert world.reservations() == [('52:54:00:00:01:00', '192.0.2.10'),
                                    ('52:54:00:00:01:02', '192.0.2.12')]
    lists = [selector for plural, selector in world.kube.selectors
             if plural == cl.RESERVATIONS]
    # Each list names the node or the owner, never only the kind.
    assert any('node=node-1' in selector for selector in lists)
    assert all(',' in selector for selector in lists)


def test_8_releasing_the_previous_machine_keeps_the_current_ones_outputs():
    world = cl.Cluster(follow_claims_namespaces=[])
    store = world.store()
    world.host('h1', consumer='Machine/m3/old')
    assert cl.give(store, 'h1').allocation.address == '192.0.2.2'
    # The old Machine lets go, a new one claims the host before the old
    # one is released (a missed event, a late judgement).
    world.claim('h1', 'Machine/m3/new')
    assert cl.give(store, 'h1').allocation.address == '192.0.2.3'
    store.publish_reservation(reservation.Reservation(
        mac='52:54:00:00:00:01', address='192.0.2.3', prefixlen=24),
        owner='BareMetalHost/m3/h1')
    before = world.get_host('h1')

    released = store.reconcile()

    assert [(a.owner, a.address) for a in released] == [
        ('Machine/m3/old', '192.0.2.2')]
    after = world.get_host('h1')
    assert after['metadata']['annotations'] == before['metadata'][
        'annotations']
    assert after['spec'].get('networkData') == before['spec']['networkData']
    assert world.kube.get('secrets', cl.HOSTS,
                          'vmetal-nd-baremetalhost-h1') is not None
    assert world.reservations() == [('52:54:00:00:00:01', '192.0.2.3')]


def test_16_a_machine_on_another_pool_frees_the_hosts_inspection_address():
    world = cl.Cluster(follow_claims_namespaces=[])
    store = world.store()
    world.host('h1')
    assert cl.give(store, 'h1').allocation.address == '192.0.2.2'
    world.claim('h1', 'Machine/m3/w')
    world.change_host('h1', metadata={'annotations': {
        'metal3.vcluster.com/network-cidr': '198.51.100.1/24'}})

    assert cl.give(store, 'h1').allocation.address == '198.51.100.2'

    assert world.claims() == {'198.51.100.2': 'Machine/m3/w'}
    assert store.reconcile() == []


def test_a_lost_answer_to_the_claims_create_is_read_back_as_held():
    # The claim is created, its answer lost; the retried create meets it
    # (409): read back, it is the owner's. One claim, no second address.
    world = cl.Cluster()
    store = world.store()
    world.host('h1')
    world.kube.at('create', cl.CLAIMS, lose=True,
                  name='default.192.0.2.2')
    assert cl.give(store, 'h1').allocation.address == '192.0.2.2'
    assert world.claims() == {'192.0.2.2': 'BareMetalHost/m3/h1'}
    assert store.reconcile() == []


def test_a_candidate_taken_just_before_the_claims_create_moves_on():
    world = cl.Cluster()
    first, second = world.store(), world.store()
    world.host('h1')
    world.host('h2')
    # The gateway first, as every process claims it once.
    cl.give(first, 'h1')
    first.release('BareMetalHost/m3/h1')
    # h2's writer takes 192.0.2.2 just before h1's creates its claim.
    world.kube.at('create', cl.CLAIMS, lambda: cl.give(second, 'h2'),
                  name='default.192.0.2.2')
    assert cl.give(first, 'h1').allocation.address == '192.0.2.3'
    assert world.claims() == {'192.0.2.2': 'BareMetalHost/m3/h2',
                              '192.0.2.3': 'BareMetalHost/m3/h1'}
    assert store_records(world) == {'BareMetalHost/m3/h1': '192.0.2.3',
                                    'BareMetalHost/m3/h2': '192.0.2.2'}


def store_records(world):
    return {obj['spec']['owner']: obj['spec']['address']
            for obj in world.kube.items(cl.OWNERS, cl.NAMESPACE)}
