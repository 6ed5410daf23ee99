"""Inspection leases (:mod:`vmetal_ironic.store.kubernetes.inspection`)
through the fake API: a claim someone else wrote is judged field by
field; two agents answering one DISCOVER end on one lease, whichever
binds second; a renewal and a removal race at one version; a declined
address is held for nobody and its MAC gets another."""

import pytest

from tests.unit.store.kubernetes import cluster as cl
from vmetal_ironic import exception
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.store.kubernetes import inspection

MAC = '52:54:00:00:0a:01'
EXPIRES = 2_000_000_000
GOOD = {'metadata': {'name': 'default.192.0.2.200', 'resourceVersion': '7'},
        'spec': {'mac': MAC, 'owner': f'Inspection/{MAC}',
                 'address': '192.0.2.200', 'expires': EXPIRES}}


def leases(world):
    """``{address: owner}`` of every inspection lease."""
    return {obj['spec']['address']: obj['spec']['owner']
            for obj in world.kube.items(cl.CLAIMS, cl.NAMESPACE)
            if obj['spec']['purpose'] == inspection.PURPOSE_INSPECTION}


def records(world):
    return [obj['spec']['claim']
            for obj in world.kube.items(cl.OWNERS, cl.NAMESPACE)]


def test_a_good_claim_is_a_lease():
    lease = inspection.lease_of(GOOD)
    assert (lease.mac, lease.address, lease.expires, lease.version,
            lease.key, lease.declined) == (
        MAC, '192.0.2.200', float(EXPIRES), '7', 'default.192.0.2.200',
        False)


@pytest.mark.parametrize('field, value, message', [
    ('mac', 'not-a-mac', 'spec.mac'),
    ('owner', 'Inspection/52:54:00:00:0a:02', 'is not Inspection/'),
    ('address', '2001:db8::7', 'spec.address'),
    ('expires', True, 'spec.expires'),
    ('expires', '2000000000', 'spec.expires'),
])
def test_a_claim_someone_else_wrote_is_judged_field_by_field(field, value,
                                                             message):
    claim = dict(GOOD, spec=dict(GOOD['spec'], **{field: value}))
    with pytest.raises(exception.InvalidProperty) as caught:
        inspection.lease_of(claim)
    assert str(caught.value).startswith('AddressClaim default.192.0.2.200: ')
    assert message in str(caught.value)


def test_two_agents_for_one_mac_end_on_the_lease_bound_first():
    world = cl.Cluster()
    first = world.store().inspection_leases()
    second = world.store().inspection_leases()
    answers = {}

    def second_agent_answers():
        answers['second'] = second.claim(MAC, ['192.0.2.201'], EXPIRES)

    # The first agent made its claim; the second answers the same
    # DISCOVER (another candidate) and binds the MAC before it.
    world.kube.at('create', cl.OWNERS, action=second_agent_answers)
    lease, taken, created = first.claim(MAC, ['192.0.2.200'], EXPIRES)

    assert (lease.address, taken, created) == ('192.0.2.201', [], False)
    assert answers['second'][0] == lease and answers['second'][2] is True
    # The first agent's own claim went back: one lease, one record.
    assert leases(world) == {'192.0.2.201': f'Inspection/{MAC}'}
    assert records(world) == ['default.192.0.2.201']


def test_a_renewal_wins_over_a_removal_at_the_old_version():
    world = cl.Cluster()
    agent, other = (world.store().inspection_leases() for _ in range(2))
    lease = agent.claim(MAC, ['192.0.2.200'], EXPIRES)[0]

    renewed = other.renew(lease, EXPIRES + 60)

    assert renewed.expires == EXPIRES + 60
    assert agent.remove(lease) is False
    assert agent.renew(lease, EXPIRES + 90) is None
    assert leases(world) == {'192.0.2.200': f'Inspection/{MAC}'}
    assert agent.remove(renewed) is True
    assert leases(world) == {} and records(world) == []


def test_a_declined_address_is_held_for_nobody_and_the_mac_moves_on():
    world = cl.Cluster()
    agent = world.store().inspection_leases()
    lease = agent.claim(MAC, ['192.0.2.200'], EXPIRES)[0]

    declined = agent.decline(lease, EXPIRES + 300)

    assert declined.declined and records(world) == []
    again, taken, created = agent.claim(
        MAC, ['192.0.2.200', '192.0.2.201'], EXPIRES)
    assert (again.address, taken, created) == ('192.0.2.201', [], True)
    assert records(world) == ['default.192.0.2.201']


def test_a_record_left_by_a_decline_cut_short_holds_nothing():
    world = cl.Cluster()
    agent = world.store().inspection_leases()
    agent.claim(MAC, ['192.0.2.200'], EXPIRES)
    # Declined, and the writer stopped before deleting the MAC's record.
    world.kube._patch(cl.CLAIMS, cl.NAMESPACE, 'default.192.0.2.200',
                      {'spec': {'declined': True}})

    lease = agent.claim(MAC, ['192.0.2.200', '192.0.2.201'], EXPIRES)[0]

    assert lease.address == '192.0.2.201'
    assert records(world) == ['default.192.0.2.201']


def test_a_candidate_held_otherwise_is_reported_taken():
    world = cl.Cluster()
    store = world.store()
    store.addresses.hold_infrastructure(ipam_pool.parse_pool('192.0.2.1/24'))

    lease, taken, _ = store.inspection_leases().claim(
        MAC, ['192.0.2.1', '192.0.2.202'], EXPIRES)

    assert (lease.address, taken) == ('192.0.2.202', ['192.0.2.1'])
