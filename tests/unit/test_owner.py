"""The owner identity shared by both stores and the Ironic adapters."""

import pytest

from vmetal_ironic import exception
from vmetal_ironic import owner

UUID = '1be26c0b-03f2-4d2e-ae87-c02d7f33c123'


@pytest.mark.parametrize('text, kind, namespace, name', [
    ('BareMetalHost/metal3/worker-0', 'BareMetalHost', 'metal3', 'worker-0'),
    ('Machine/default/worker-0', 'Machine', 'default', 'worker-0'),
    (f'Node/{UUID}', 'Node', None, UUID),
])
def test_parse_and_format_round_trip(text, kind, namespace, name):
    parsed = owner.parse(text)
    assert (parsed.kind, parsed.namespace, parsed.name) == (kind, namespace,
                                                            name)
    assert str(parsed) == text
    assert owner.parse(parsed) is parsed


@pytest.mark.parametrize('text', ['', 'worker-0', 'A/b/c/d', 'Kind//x',
                                  '9Kind/ns/x', 'K' * 64 + '/ns/x', None])
def test_malformed_owner_is_one_line_naming_it(text):
    with pytest.raises(exception.InvalidProperty, match='owner'):
        owner.parse(text)


def test_label_is_a_legal_label_value_and_distinct():
    first = owner.parse('Machine/default/' + 'w' * 253)
    second = owner.parse('Machine/default/' + 'w' * 252)
    assert len(first.label) <= 63 and first.label.isalnum()
    assert first.label != second.label


def test_ironic_node_owners():
    assert str(owner.of_ironic_node('metal3~host-0', UUID)) == (
        'BareMetalHost/metal3/host-0')
    for name in (None, '', 'plain', '~x', 'a~', 'a~b~c'):
        assert str(owner.of_ironic_node(name, UUID)) == f'Node/{UUID}'


def test_node_uuid_only_for_node_owners():
    assert owner.node_uuid_of(f'Node/{UUID}') == UUID
    assert owner.node_uuid_of('BareMetalHost/a/b') is None
    assert owner.node_uuid_of('not an owner') is None


def test_infrastructure_owners():
    gateway = owner.for_infrastructure(owner.GATEWAY, 'default', '192.0.2.1')
    assert str(gateway) == 'Gateway/default.192.0.2.1'
    assert gateway.is_infrastructure
    assert not owner.parse('Machine/a/b').is_infrastructure
