"""The owner record's pure rules: what it binds, and when it holds."""

from vmetal_ironic import owner as owner_mod
from vmetal_ironic.store.kubernetes import allocation
from vmetal_ironic.store.kubernetes import owners

OWNER = owner_mod.parse('Machine/ns/m')
CLAIM_SPEC = {'scope': 'default', 'address': '192.0.2.7', 'owner': str(OWNER),
              'purpose': 'allocation', 'pool': '192.0.2.0/24',
              'mac': '52:54:00:00:00:01', 'host': 'ns/h'}


def test_a_binding_carries_what_the_claim_is_made_of():
    spec = owners.binding(OWNER, CLAIM_SPEC, 'token', now=0)
    assert spec == {'owner': 'Machine/ns/m', 'claim': 'default.192.0.2.7',
                    'binder': 'token', 'boundAt': '1970-01-01T00:00:00Z',
                    'address': '192.0.2.7', 'purpose': 'allocation',
                    'pool': '192.0.2.0/24', 'mac': '52:54:00:00:00:01',
                    'host': 'ns/h'}
    record = {'spec': spec}
    # The claim made from the record is the one the binder makes.
    assert allocation.claim_spec_of(record, 'default') == CLAIM_SPEC
    assert 'binder' not in owners.binding(OWNER, CLAIM_SPEC, None)


def test_standing_against_the_claim_named():
    record = {'spec': owners.binding(OWNER, CLAIM_SPEC, 'token')}
    assert owners.standing(record, None) == owners.PENDING
    assert owners.standing(record, {'spec': CLAIM_SPEC}) == owners.HELD
    other = dict(CLAIM_SPEC, owner='Machine/ns/other')
    assert owners.standing(record, {'spec': other}) == owners.LOST


def test_settled_after_the_grace_since_the_last_bind():
    record = {'spec': owners.binding(OWNER, CLAIM_SPEC, 'token', now=1000)}
    assert not owners.settled(record, 1000 + 60, 60)
    assert owners.settled(record, 1000 + 61, 60)
    # Records written before boundAt existed: their creation time.
    old = {'metadata': {'creationTimestamp': '1970-01-01T00:16:40Z'},
           'spec': {'owner': str(OWNER), 'claim': 'default.192.0.2.7'}}
    assert owners.bound_since(old) == 1000
    assert owners.settled({'spec': {}}, 0, 60)
