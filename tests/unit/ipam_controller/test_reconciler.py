"""The reconciler's rules, on plain dicts."""

import pytest

from vmetal_ironic.ipam_controller import reconciler as rec


def claim(owner, host=None, retained=False, purpose='allocation'):
    labels = {rec.LABEL_RETAIN: 'detached'} if retained else {}
    spec = {'owner': owner, 'address': '192.0.2.2', 'purpose': purpose}
    if host:
        spec['host'] = host
    return {'metadata': {'labels': labels}, 'spec': spec}


def view(consumer=None, state='available', detached=False):
    return rec.HostView(consumer, state, detached)


@pytest.mark.parametrize('the_claim, hosts, expected', [
    # A host holding its own address: goes with the host.
    (claim('BareMetalHost/ns/h'), {'ns/h': view()}, rec.KEEP),
    (claim('BareMetalHost/ns/h'), {}, rec.RELEASE),
    # A Machine's: kept while it claims the host or the host runs it.
    (claim('Machine/ns/m', 'ns/h'), {'ns/h': view('Machine/ns/m',
                                                  'provisioned')}, rec.KEEP),
    (claim('Machine/ns/m', 'ns/h'), {'ns/h': view(None, 'provisioned')},
     rec.KEEP),
    (claim('Machine/ns/m', 'ns/h'), {'ns/h': view(None, 'deprovisioning')},
     rec.KEEP),
    (claim('Machine/ns/m', 'ns/h'), {'ns/h': view(None, 'available')},
     rec.RELEASE),
    (claim('Machine/ns/m', 'ns/h'), {'ns/h': view('Machine/ns/other',
                                                  'ready')}, rec.RELEASE),
    (claim('Machine/ns/m', 'ns/h'), {}, rec.RELEASE),
    # Detached or paused: the server may run unseen.
    (claim('Machine/ns/m', 'ns/h'), {'ns/h': view(None, 'available', True)},
     rec.RETAIN),
    (claim('BareMetalHost/ns/h', retained=True), {}, rec.KEEP),
    # Not the reconciler's to judge.
    (claim('Node/1234'), {}, rec.KEEP),
    (claim('Machine/default/worker-0'), {}, rec.KEEP),
    (claim('Gateway/default.192.0.2.1', purpose='gateway'), {}, rec.KEEP),
    (claim('not an owner'), {}, rec.KEEP),
])
def test_verdict(the_claim, hosts, expected):
    assert rec.verdict(the_claim, hosts) == expected


def test_view_of_a_host():
    host = {'metadata': {'namespace': 'ns', 'annotations': {rec.PAUSED: ''}},
            'spec': {'consumerRef': {'kind': 'Machine', 'name': 'm'}},
            'status': {'provisioning': {'state': 'provisioned'}}}
    assert rec.view_of(host) == rec.HostView('Machine/ns/m', 'provisioned',
                                             True)


def test_an_owners_claim_is_unbound_when_no_record_binds_its_uid():
    unbound = claim('Machine/ns/m', 'ns/h')
    unbound['metadata'].update(uid='u1', name='default.192.0.2.2')
    assert rec.is_unbound(unbound, set())
    assert not rec.is_unbound(unbound, {('u1', 'Machine/ns/m')})
    # A record binding the UID for another owner (the host's, before the
    # hand-over) does not bind it for this one.
    assert rec.is_unbound(unbound, {('u1', 'BareMetalHost/ns/h')})
    # Infrastructure and leases have no records: never unbound.
    gateway = claim('Gateway/default.192.0.2.1', purpose='gateway')
    gateway['metadata'].update(uid='g')
    assert not rec.is_unbound(gateway, set())
