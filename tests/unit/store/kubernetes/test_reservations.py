"""Reading DHCPReservations: the one reservation of a MAC is the object
named after it, whatever other objects say in their ``spec.mac``.

The API server refuses such a copy where the CRD has its naming rule
(tests/functional/k8s/test_crd_validation.py); a cluster whose CRD
predates the rule, or a fake API as here, lets it be written."""

from tests.unit.store.kubernetes import cluster as cl
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.dhcp_agent import cache as cache_mod
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
