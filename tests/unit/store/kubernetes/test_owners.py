"""The owner record's pure rules: what binds, what holds."""

from vmetal_ironic import owner as owner_mod
from vmetal_ironic.store.kubernetes import owners

OWNER = owner_mod.parse('Machine/ns/m0')
CLAIM = {'kind': 'AddressClaim',
         'metadata': {'name': 'default.192.0.2.7', 'uid': 'u1'},
         'spec': {'scope': 'default', 'address': '192.0.2.7',
                  'owner': 'Machine/ns/m0', 'purpose': 'allocation',
                  'pool': '192.0.2.0/24'}}


def test_a_binding_names_the_claims_uid():
    spec = owners.binding(OWNER, CLAIM)
    assert spec == {'owner': 'Machine/ns/m0', 'claim': 'default.192.0.2.7',
                    'claimUID': 'u1', 'address': '192.0.2.7',
                    'purpose': 'allocation', 'pool': '192.0.2.0/24'}


def test_a_record_holds_the_claim_of_its_uid_while_it_names_the_owner():
    record = {'kind': 'AddressOwner', 'spec': owners.binding(OWNER, CLAIM)}
    assert owners.holds(record, CLAIM)
    # The same address claimed anew (another UID): not this binding's.
    again = dict(CLAIM, metadata={'name': 'default.192.0.2.7', 'uid': 'u2'})
    assert not owners.binds(record, again)
    assert not owners.holds(record, again)
    # Handed to another owner: bound by UID, held by it no more.
    handed = dict(CLAIM, spec=dict(CLAIM['spec'], owner='Machine/ns/m1'))
    assert owners.binds(record, handed)
    assert not owners.holds(record, handed)
    assert not owners.holds(record, None)
    assert not owners.holds(None, CLAIM)


def test_a_record_of_the_old_form_binds_by_name_and_owner():
    old = {'spec': {'owner': 'Machine/ns/m0', 'claim': 'default.192.0.2.7'}}
    assert owners.holds(old, CLAIM)
    other = dict(CLAIM, spec=dict(CLAIM['spec'], owner='Machine/ns/m1'))
    assert not owners.binds(old, other)


def test_records_and_claims_match_on_uid_and_owner():
    record = {'kind': 'AddressOwner', 'spec': owners.binding(OWNER, CLAIM)}
    assert owners.key_of(record) == owners.key_of(CLAIM) == (
        'u1', 'Machine/ns/m0')
    assert owners.owner_of(CLAIM) == OWNER
    assert owners.owner_of({'spec': {'owner': 'not an owner'}}) is None
