"""Who holds a BareMetalHost's address: the Machine in its consumerRef."""

import pytest

from vmetal_ironic import exception
from vmetal_ironic.store import kubernetes as kube_store


def _host(ref):
    return {'metadata': {'namespace': 'metal3', 'name': 'host-0'},
            'spec': {'consumerRef': ref} if ref is not None else {}}


def test_the_consumer_is_the_owner_in_the_host_namespace_by_default():
    owner = kube_store.consumer_of(_host({'kind': 'Metal3Machine',
                                          'name': 'worker-0'}))
    assert str(owner) == 'Metal3Machine/metal3/worker-0'
    owner = kube_store.consumer_of(_host({'kind': 'Machine', 'name': 'w',
                                          'namespace': 'team-a'}))
    assert str(owner) == 'Machine/team-a/w'


@pytest.mark.parametrize('ref', [None, {}, {'kind': 'Machine'},
                                 {'name': 'w'}])
def test_no_consumer_while_no_machine_claims_the_host(ref):
    assert kube_store.consumer_of(_host(ref)) is None


@pytest.mark.parametrize('kind', ['9Machine', 'Machine-x', 'M' * 64])
def test_a_bad_consumer_kind_is_one_line_naming_the_host(kind):
    with pytest.raises(exception.InvalidProperty) as caught:
        kube_store.consumer_of(_host({'kind': kind, 'name': 'w'}))
    message = str(caught.value)
    assert message.startswith(
        'BareMetalHost metal3/host-0 spec.consumerRef: owner ')
    assert repr(kind) in message and '\n' not in message
