"""The claim-first protocol (:mod:`vmetal_ironic.store.kubernetes.
addresses`): the owner record's pure rules (what binds, what holds), then
the protocol driven through the fake API at the interleavings and lost
answers a real API server cannot be made to produce on demand: two
writers at one candidate, a lost answer at the claim's create, at the
record's bind and at the loser's delete, a writer stopped between its
create and its bind, and the controller's collect step racing a slow
writer."""

import threading

import pytest

from tests.unit.store.kubernetes import cluster as cl
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.ipam_controller import reconciler
from vmetal_ironic.store.kubernetes import addresses

POOL = ipam_pool.parse_pool('192.0.2.1/24')
OWNER = 'Machine/m3/w0'
OWNER_M0 = owner_mod.parse('Machine/ns/m0')
CLAIM = {'kind': 'AddressClaim',
         'metadata': {'name': 'default.192.0.2.7', 'uid': 'u1'},
         'spec': {'scope': 'default', 'address': '192.0.2.7',
                  'owner': 'Machine/ns/m0', 'purpose': 'allocation',
                  'pool': '192.0.2.0/24'}}


class Stopped(Exception):
    """A writer stopped at a request (its process died there)."""


def records(world):
    """``{owner: (claim name, claim UID)}`` of every record."""
    return {obj['spec']['owner']: (obj['spec']['claim'],
                                   obj['spec'].get('claimUID'))
            for obj in world.kube.items(cl.OWNERS, cl.NAMESPACE)}


def assert_bound(world):
    """Every owner's claim is bound by its record's UID, and no record
    names anything else."""
    claims = {obj['metadata']['name']: obj for obj in world.kube.items(
        cl.CLAIMS, cl.NAMESPACE) if obj['spec']['purpose'] != 'gateway'}
    bound = {}
    for owner, (name, uid) in records(world).items():
        assert name in claims and claims[name]['metadata']['uid'] == uid, (
            owner, name)
        bound[name] = owner
    assert {name: obj['spec']['owner'] for name, obj in claims.items()} == (
        bound)


def collect(store):
    """The controller's collect step, run once on ``store``."""
    return reconciler.Reconciler(store).collect()


def warm(store):
    """The first allocation of a process lists the held addresses and
    claims the gateway: done once, out of the way."""
    store.allocate(POOL, 'Machine/m3/warm')


def test_an_uncontended_allocation_is_two_creates_and_one_read():
    world = cl.Cluster()
    store = world.store()
    warm(store)
    before = dict(world.kube.requests)

    store.allocate(POOL, OWNER)

    spent = {key: count - before.get(key, 0)
             for key, count in world.kube.requests.items()
             if count != before.get(key, 0)}
    assert spent == {('create', cl.CLAIMS): 1, ('create', cl.OWNERS): 1,
                     ('get', cl.CLAIMS): 1}
    # An owner that holds one: its record and its claim, read.
    before = sum(world.kube.requests.values())
    assert store.allocate(POOL, OWNER).address == '192.0.2.3'
    assert sum(world.kube.requests.values()) - before == 2


def test_two_writers_racing_for_one_candidate_take_two_addresses():
    world = cl.Cluster()
    first, second = world.store(), world.store()
    warm(first)
    warm(second)
    # Both see 192.0.2.3 free; the second creates its claim first.
    world.kube.at('create', cl.CLAIMS, name='default.192.0.2.3',
                  action=lambda: second.allocate(POOL, 'Machine/m3/w1'))

    got = first.allocate(POOL, OWNER).address

    assert got != '192.0.2.3'
    assert world.claims()['192.0.2.3'] == 'Machine/m3/w1'
    assert world.claims()[got] == OWNER
    assert_bound(world)


@pytest.mark.parametrize('lose_the_delete', [
    False,
    # The loser's delete of its own claim is applied, its answer lost:
    # the retry meets 404, and it is done.
    True,
])
def test_two_writers_for_one_owner_agree_and_the_loser_gives_its_back(
        lose_the_delete):
    world = cl.Cluster()
    first, second = world.store(), world.store()
    warm(first)
    warm(second)
    answers = []
    # The second writer binds the owner between the first's create and
    # its bind.
    world.kube.at('create', cl.OWNERS, action=lambda: answers.append(
        second.allocate(POOL, OWNER).address))
    if lose_the_delete:
        world.kube.at('delete', cl.CLAIMS, lose=True)

    answers.append(first.allocate(POOL, OWNER).address)

    assert answers[0] == answers[1]
    assert [a for a, o in world.claims().items() if o == OWNER] == answers[:1]
    assert_bound(world)


@pytest.mark.parametrize('plural', [
    # The claim's create: the retry meets 409, the token says it is its own.
    cl.CLAIMS,
    # The record's bind: the retry meets 409, the record binds its UID.
    cl.OWNERS,
])
def test_a_lost_answer_to_a_create_is_read_back_as_its_own(plural):
    world = cl.Cluster()
    store = world.store()
    warm(store)
    world.kube.at('create', plural, lose=True)

    got = store.allocate(POOL, OWNER).address

    assert got == '192.0.2.3'
    assert world.claims() == {'192.0.2.2': 'Machine/m3/warm', got: OWNER}
    assert_bound(world)


def _stop_before_the_bind(world, store, owner):
    """Run ``store``'s allocation for ``owner`` and stop it between its
    claim's create and its record's bind (a writer killed there)."""
    def die():
        raise Stopped()

    world.kube.at('create', cl.OWNERS, action=die)
    with pytest.raises(Stopped):
        store.allocate(POOL, owner)


def test_a_claim_left_by_a_stopped_writer_is_bound_by_the_collector():
    world = cl.Cluster()
    store = world.store()
    warm(store)
    _stop_before_the_bind(world, store, OWNER)
    assert OWNER not in records(world)

    assert collect(store) == []

    assert_bound(world)
    # The owner's next allocation, from any process, finds it held.
    assert world.store().allocate(POOL, OWNER).address == '192.0.2.3'
    assert world.claims()['192.0.2.3'] == OWNER


def test_a_stopped_writers_claim_is_freed_when_its_owner_holds_another():
    world = cl.Cluster()
    store = world.store()
    warm(store)
    _stop_before_the_bind(world, store, OWNER)
    # Another process allocates for the owner before the collector runs.
    other = world.store()
    got = other.allocate(POOL, OWNER).address
    assert got != '192.0.2.3'

    freed = collect(store)

    assert [(a.owner, a.address) for a in freed] == [(OWNER, '192.0.2.3')]
    assert '192.0.2.3' not in world.claims()
    assert_bound(world)


def test_the_collector_never_frees_what_a_slow_writer_binds():
    # The collector marks the writer's unbound claim and finds its owner
    # holding another address (so the claim is surplus); that address is
    # released and the slow writer binds its claim before the collector's
    # delete. The writer's read-back takes the mark off: the delete at
    # the marked version fails and the writer's answer stands.
    world = cl.Cluster()
    writer, holder, controller = world.store(), world.store(), world.store()
    warm(writer)
    holder.allocate(POOL, OWNER)        # 192.0.2.3, bound
    paused, go, done = threading.Event(), threading.Event(), {}

    def pause():
        paused.set()
        assert go.wait(30)

    # The writer's process never saw OWNER hold anything: it creates.
    world.kube.at('create', cl.OWNERS, action=pause)
    thread = threading.Thread(target=lambda: done.update(
        got=writer.allocate(POOL, OWNER).address), daemon=True)
    thread.start()
    assert paused.wait(30)

    def release_then_let_the_writer_bind():
        holder.release(OWNER)
        go.set()
        thread.join(30)

    world.kube.at('delete', cl.CLAIMS, action=release_then_let_the_writer_bind,
                  name='default.192.0.2.4')
    assert collect(controller) == []

    assert done == {'got': '192.0.2.4'}
    assert world.claims() == {'192.0.2.2': 'Machine/m3/warm',
                              '192.0.2.4': OWNER}
    assert_bound(world)
    claim = world.kube.get(cl.CLAIMS, cl.NAMESPACE, 'default.192.0.2.4')
    assert addresses.COLLECTING not in claim['metadata'].get(
        'annotations', {})


def test_a_record_whose_claim_went_is_dropped_and_rebound():
    world = cl.Cluster()
    store = world.store()
    warm(store)
    store.allocate(POOL, OWNER)
    # A release stopped between deleting the claim and the record.
    claim = world.kube.get(cl.CLAIMS, cl.NAMESPACE, 'default.192.0.2.3')
    world.kube._delete(cl.CLAIMS, cl.NAMESPACE, 'default.192.0.2.3', None)
    record = world.kube.items(cl.OWNERS, cl.NAMESPACE)[-1]
    assert addresses.binds(record, claim) and not addresses.holds(record, None)

    assert store.get_allocation(OWNER) is None
    got = store.allocate(POOL, OWNER).address
    assert_bound(world)
    assert world.claims()[got] == OWNER


# -- the owner record's pure rules ----------------------------------------


def test_a_binding_names_the_claims_uid():
    spec = addresses.binding(OWNER_M0, CLAIM)
    assert spec == {'owner': 'Machine/ns/m0', 'claim': 'default.192.0.2.7',
                    'claimUID': 'u1', 'address': '192.0.2.7',
                    'purpose': 'allocation', 'pool': '192.0.2.0/24'}


def test_a_record_holds_the_claim_of_its_uid_while_it_names_the_owner():
    record = {'kind': 'AddressOwner',
              'spec': addresses.binding(OWNER_M0, CLAIM)}
    assert addresses.holds(record, CLAIM)
    # The same address claimed anew (another UID): not this binding's.
    again = dict(CLAIM, metadata={'name': 'default.192.0.2.7', 'uid': 'u2'})
    assert not addresses.binds(record, again)
    assert not addresses.holds(record, again)
    # Handed to another owner: bound by UID, held by it no more.
    handed = dict(CLAIM, spec=dict(CLAIM['spec'], owner='Machine/ns/m1'))
    assert addresses.binds(record, handed)
    assert not addresses.holds(record, handed)
    assert not addresses.holds(record, None)
    assert not addresses.holds(None, CLAIM)
    # A declined inspection lease is held for nobody.
    declined = dict(CLAIM, spec=dict(CLAIM['spec'], declined=True))
    assert addresses.binds(record, declined)
    assert not addresses.holds(record, declined)


def test_a_record_of_the_old_form_binds_by_name_and_owner():
    old = {'spec': {'owner': 'Machine/ns/m0', 'claim': 'default.192.0.2.7'}}
    assert addresses.holds(old, CLAIM)
    other = dict(CLAIM, spec=dict(CLAIM['spec'], owner='Machine/ns/m1'))
    assert not addresses.binds(old, other)


def test_records_and_claims_match_on_uid_and_owner():
    record = {'kind': 'AddressOwner',
              'spec': addresses.binding(OWNER_M0, CLAIM)}
    assert addresses.key_of(record) == addresses.key_of(CLAIM) == (
        'u1', 'Machine/ns/m0')
    assert addresses.owner_of(CLAIM) == OWNER_M0
    assert addresses.owner_of({'spec': {'owner': 'not an owner'}}) is None
