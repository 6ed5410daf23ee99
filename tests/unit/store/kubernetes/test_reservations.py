"""Reading DHCPReservations: the one reservation of a MAC is the object
named after it, whatever other objects say in their ``spec.mac``.

The API server refuses such a copy where the CRD has its naming rule
(tests/functional/k8s/test_crd_validation.py); a cluster whose CRD
predates the rule, or a fake API as here, lets it be written.

Publishing many at once: each reservation ends as one publish of it
would leave it, whatever the threads meet."""

import threading

import pytest

from tests.unit.store.kubernetes import cluster as cl
from tests.unit.store.kubernetes import fake_api
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.dhcp_agent import cache as cache_mod
from vmetal_ironic.store.kubernetes import kube_client
from vmetal_ironic.store.kubernetes import reservations

MAC = '52:54:00:00:07:01'
OTHER = '52:54:00:00:07:02'


def impostor(name='52-54-00-00-07-02', mac=MAC, address='192.0.2.66'):
    """Someone else's object claiming ``mac`` under another name."""
    return {'metadata': {'name': name, 'namespace': cl.NAMESPACE,
                         'labels': {'vmetal-ironic.io/component':
                                    'dhcp-reservation',
                                    'vmetal-ironic.io/node': 'n1'}},
            'spec': {'mac': mac, 'address': address, 'prefixlen': 24}}


def setup():
    world = cl.Cluster()
    store = world.store()
    store.publish_reservation(reservation_mod.Reservation(
        mac=MAC, address='192.0.2.10', prefixlen=24, node='n1'))
    world.kube.put(cl.RESERVATIONS, impostor())
    return world, store


def test_a_copy_under_another_name_never_wins_the_macs_reservation():
    _, store = setup()
    _, listed = store.reservations_snapshot()
    assert [(r.mac, r.address) for r in listed] == [(MAC, '192.0.2.10')]
    assert store.reservations.skipped == {'52-54-00-00-07-02'}
    assert store.skipped_reservations == 1
    # By node label and by MAC, the same answer.
    assert [r.address for r in store.reservations_of(node='n1')] == [
        '192.0.2.10']
    assert [r.address for r in store.reservations_of(macs=[MAC])] == [
        '192.0.2.10']
    # The agent's cache, loaded from that listing, serves the MAC's own.
    cache = cache_mod.ReservationCache()
    cache.load(listed)
    [binding] = cache.bindings()
    assert (binding.mac, binding.address_text) == (MAC, '192.0.2.10')


def test_the_copy_going_or_turning_bad_removes_only_its_own_name():
    changes = []
    for kind in ('DELETED', 'MODIFIED'):
        obj = impostor()
        changes.append((kind, reservations._mac_of(obj),
                        reservations.parse(obj)))
    # Its own name's MAC, never the spec.mac it claimed.
    assert changes == [('DELETED', OTHER, None), ('MODIFIED', OTHER, None)]
    # A name that is no MAC at all removes nothing.
    assert reservations._mac_of(impostor(name='not-a-mac')) is None


def test_an_object_named_after_its_mac_reads_as_it_was_written():
    obj = impostor(name='52-54-00-00-07-01')
    found = reservations.parse(obj)
    assert (found.mac, found.address) == (MAC, '192.0.2.66')
    assert reservations._mac_of(obj) == MAC


# -- many at once ---------------------------------------------------------

def _res(index, address=None):
    return reservation_mod.Reservation(
        mac=f'52:54:00:00:08:{index:02x}',
        address=address or f'192.0.2.{10 + index}', prefixlen=24,
        node=f'n{index}')


def _name(index):
    return f'52-54-00-00-08-{index:02x}'


def test_many_published_four_in_flight_each_as_a_single_publish_would():
    """Races met by the threads of one bulk publish are settled as a
    single publish settles them: a name taken meanwhile, an answer lost
    after the write landed (a create and a replace), a body the API
    server refuses. The fake API (tests/unit/store/kubernetes/fake_api)
    is what can lose an answer or run another writer at an exact point."""
    world = cl.Cluster()
    store, other = world.store(), world.store()
    store.publish_reservation(_res(3))                      # as wanted
    store.publish_reservation(_res(4, address='192.0.2.99'))  # older
    unchanged = world.kube.get(cl.RESERVATIONS, cl.NAMESPACE, _name(3))

    # Two creates are in flight at once, or neither goes on.
    both = threading.Barrier(2, timeout=5)
    for index in (1, 2):
        world.kube.at('create', cl.RESERVATIONS, name=_name(index),
                      action=both.wait)
    # Another writer publishes #5 just before this create: 409, read,
    # replaced by ours (published last, as one after the other).
    world.kube.at('create', cl.RESERVATIONS, name=_name(5), action=(
        lambda: other.publish_reservation(_res(5, address='192.0.2.98'))))
    # #7's create and #4's replace land; their answers are lost.
    world.kube.at('create', cl.RESERVATIONS, name=_name(7), lose=True)
    world.kube.at('replace', cl.RESERVATIONS, name=_name(4), lose=True)

    # The API server refuses #9's body (its CRD's rules; the fake has
    # none, so the refusal is injected).
    def refuse():
        raise fake_api._error(422, 'Invalid', 'spec.node: Too long')
    world.kube.at('create', cl.RESERVATIONS, name=_name(9), action=refuse)

    items = [(_res(0, address='192.0.2.200'), None)]
    items += [(_res(index), None) for index in range(24)]
    published = store.reservations.publish_many(items, in_flight=4)

    assert published.count == 23
    [(mac, reason)] = published.skipped
    assert mac == '52:54:00:00:08:09'
    assert '422 Invalid' in reason and 'spec.node' in reason
    assert world.reservations() == sorted(
        (_res(index).mac, _res(index).address)
        for index in range(24) if index != 9)
    # Nothing written where it stood as wanted.
    assert world.kube.get(cl.RESERVATIONS, cl.NAMESPACE, _name(3))[
        'metadata']['resourceVersion'] == unchanged['metadata'][
        'resourceVersion']


def test_a_failure_that_is_not_bad_input_stops_the_publish():
    world = cl.Cluster()
    store = world.store()
    world.kube.deny('create', cl.RESERVATIONS, cl.NAMESPACE)
    with pytest.raises(kube_client.Forbidden):
        store.publish_reservations([(_res(index), None)
                                    for index in range(6)])
    assert world.reservations() == []
