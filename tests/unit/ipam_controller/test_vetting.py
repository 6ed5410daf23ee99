"""What the controller leaves out, object by object (pure)."""

import pytest

from vmetal_ironic.ipam_controller import vetting


def _host(ref, spec=None):
    body = {'metadata': {'namespace': 'm3', 'name': 'h'},
            'spec': dict(spec or {})}
    if ref is not None:
        body['spec']['consumerRef'] = ref
    return body


@pytest.mark.parametrize('ref', [
    None, {}, {'kind': 'Metal3Machine', 'name': 'worker-1'},
    {'kind': 'Machine', 'name': 'w.1', 'namespace': 'other'},
    {'kind': 'Machine', 'name': 'w', 'namespace': ''}])
def test_a_host_unclaimed_or_claimed_by_an_object_is_fine(ref):
    assert vetting.host_problem(_host(ref)) is None


@pytest.mark.parametrize('ref, why', [
    ('Metal3Machine/worker-1', "spec.consumerRef 'Metal3Machine/worker-1' "
                               'is not an object reference'),
    ({'name': 'w'}, 'spec.consumerRef.kind None is not a Kubernetes kind'),
    ({'kind': 'Machine'}, 'spec.consumerRef.name None is not an object'),
    ({'kind': '3Machine', 'name': 'w'}, "kind '3Machine' is not"),
    ({'kind': 'Machine', 'name': 'W_1'}, "name 'W_1' is not an object name"),
    ({'kind': 'Machine', 'name': 'a/b'}, "name 'a/b' is not"),
    ({'kind': 'Machine', 'name': 'x' * 254}, 'is not an object name'),
    ({'kind': 'Machine', 'name': 5}, 'name 5 is not'),
    ({'kind': 'Machine', 'name': 'w', 'namespace': 'a.b'},
     "namespace 'a.b' is not a namespace"),
])
def test_a_bad_consumer_ref_is_named_with_its_value(ref, why):
    problem = vetting.host_problem(_host(ref))
    assert problem.reason == 'consumer_ref'
    assert problem.message.startswith('BareMetalHost m3/h spec.consumerRef')
    assert why in problem.message


def test_a_spec_that_is_not_an_object_is_one_problem():
    assert vetting.host_problem({'metadata': {'name': 'h'}, 'spec': [1]}) == (
        vetting.Problem('spec', 'BareMetalHost h spec [1] is not an object'))


@pytest.mark.parametrize('spec, reason, why', [
    ({'owner': 'Machine/m3/w1', 'host': 'm3/h1'}, None, None),
    ({'owner': 'Gateway/scope.192.0.2.1'}, None, None),
    ({'owner': 'Machine'}, 'owner', "owner 'Machine' is not"),
    ({'owner': 7}, 'owner', 'owner 7 is not'),
    ({'owner': 'Machine/m3/w1', 'host': 'h1'}, 'host',
     "spec.host 'h1' is not <namespace>/<name>"),
    ({'owner': 'Machine/m3/w1', 'host': 'M3/h1'}, 'host', "'M3/h1'"),
    ({'owner': 'Machine/m3/w1', 'host': {'ns': 'm3'}}, 'host',
     "spec.host {'ns': 'm3'}"),
])
def test_claims_and_records_need_an_owner_and_a_host_that_parse(
        spec, reason, why):
    claim = {'metadata': {'namespace': 'vs', 'name': 'c'}, 'spec': spec}
    problem = vetting.store_object_problem('AddressClaim', claim)
    if reason is None:
        assert problem is None
    else:
        assert problem.reason == reason
        assert problem.message.startswith('AddressClaim vs/c spec.')
        assert why in problem.message
