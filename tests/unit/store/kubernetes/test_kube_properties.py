"""Property layering of the Kubernetes store (pure part)."""

import json
import re

import pytest

from vmetal_ironic import exception
from vmetal_ironic import properties as props
from vmetal_ironic.store.kubernetes import kube_properties as kp

LABEL = 'vmetal-ironic.io/node-type'
DEFAULT = kp.DEFAULT_ENVIRONMENT_ANNOTATION


def host(labels=None, annotations=None):
    return {'metadata': {'name': 'h1', 'namespace': 'ns',
                         'labels': labels or {},
                         'annotations': annotations or {}}}


def provider(name, *node_types):
    return {'metadata': {'name': name},
            'spec': {'metal3': {'nodeTypes': list(node_types)}}}


def node_type(name, selector=None, **properties):
    result = {'name': name, 'properties': properties}
    if selector is not None:
        result['bareMetalHosts'] = {'selector': selector}
    return result


def environment(name, default=False, provider_ref=None, **properties):
    annotations = {DEFAULT: 'true'} if default else {}
    spec = {'properties': properties}
    if provider_ref:
        spec['providerRef'] = provider_ref
    return {'metadata': {'name': name, 'annotations': annotations},
            'spec': spec}


@pytest.mark.parametrize('selector, labels, expected', [
    (None, {'a': '1'}, False),
    ({}, {'a': '1'}, True),
    ({'matchLabels': {'a': '1'}}, {'a': '1'}, True),
    ({'matchLabels': {'a': '1'}}, {'a': '2'}, False),
    ({'matchExpressions': [{'key': 'a', 'operator': 'In',
                            'values': ['1', '2']}]}, {'a': '2'}, True),
    ({'matchExpressions': [{'key': 'a', 'operator': 'NotIn',
                            'values': ['1']}]}, {'a': '1'}, False),
    ({'matchExpressions': [{'key': 'a', 'operator': 'Exists'}]}, {}, False),
    ({'matchExpressions': [{'key': 'a', 'operator': 'DoesNotExist'}]}, {},
     True),
])
def test_match_selector(selector, labels, expected):
    assert kp.match_selector(selector, labels) is expected


def test_match_selector_rejects_unknown_operator():
    with pytest.raises(exception.InvalidProperty, match="'Gt'"):
        kp.match_selector({'matchExpressions': [{'key': 'a',
                                                 'operator': 'Gt'}]}, {})


def test_layers_order_host_then_node_type_then_default_environment():
    providers = [provider('p1', node_type(
        'small', {'matchLabels': {'size': 's'}},
        **{props.NETWORK_CIDR: '198.51.100.1/24',
           props.DNS_SERVERS: '198.51.100.53'}))]
    envs = [environment('env', default=True,
                        **{props.NETWORK_CIDR: '192.0.2.1/24',
                           props.NETWORK_IP_RANGE: '192.0.2.10-192.0.2.20',
                           props.DNS_SERVERS: '192.0.2.53'})]
    the_host = host({'size': 's'}, {props.DNS_SERVERS: '203.0.113.53'})
    merged = props.merge(*kp.layers(the_host, providers, envs, LABEL))
    assert merged[props.DNS_SERVERS] == '203.0.113.53'        # host
    assert merged[props.NETWORK_CIDR] == '198.51.100.1/24'    # node type
    assert merged[props.NETWORK_IP_RANGE] == '192.0.2.10-192.0.2.20'  # env


def test_label_names_node_type_over_selectors():
    providers = [provider('p1', node_type('a', {}, x='a'),
                          node_type('b', None, x='b'))]
    found = kp.find_node_type(providers, host({LABEL: 'p1_b'}), LABEL)
    assert found[1]['name'] == 'b'


_LABEL_VALUE = re.compile(r'^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$')


def test_the_advised_label_value_is_a_legal_label_value():
    # Issue 9 item 15: the value the error advises must be one the API
    # server accepts (apimachinery IsValidLabelValue).
    providers = [provider('p1', node_type('a', {}), node_type('b', {}))]
    with pytest.raises(exception.InvalidProperty) as info:
        kp.find_node_type(providers, host(), LABEL)
    advised = str(info.value).rsplit('=', 1)[1]
    assert advised == '<provider>_<node type>'
    assert _LABEL_VALUE.match('p1_b') and len('p1_b') <= 63
    found = kp.find_node_type(
        [provider('p1', node_type('b')), provider('p2', node_type('b'))],
        host({LABEL: 'p2_b'}), LABEL)
    assert found[0] == 'p2'


def test_unknown_node_type_label_is_an_error():
    with pytest.raises(exception.InvalidProperty, match="'nope'"):
        kp.find_node_type([provider('p1', node_type('a'))],
                          host({LABEL: 'nope'}), LABEL)


def test_several_matching_node_types_is_an_error():
    providers = [provider('p1', node_type('a', {}), node_type('b', {}))]
    with pytest.raises(exception.InvalidProperty, match='p1_a, p1_b'):
        kp.find_node_type(providers, host(), LABEL)


def test_no_node_type_and_no_environment_give_empty_layers():
    assert kp.layers(host(), [], [], LABEL) == [{}, {}, {}]


def test_named_environment_wins_over_default():
    envs = [environment('dflt', default=True, x='d'), environment('lab')]
    the_host = host(annotations={kp.ENVIRONMENT_PROPERTY: 'lab'})
    assert kp.find_environment(envs, 'lab')['metadata']['name'] == 'lab'
    layers = kp.layers(the_host, [], envs, LABEL)
    assert layers[2] == {}


def test_unknown_named_environment_is_an_error():
    with pytest.raises(exception.InvalidProperty, match="'gone'"):
        kp.find_environment([environment('x', default=True)], 'gone')


def test_several_defaults_prefer_the_providers_own():
    envs = [environment('e1', default=True, provider_ref='p1'),
            environment('e2', default=True, provider_ref={'name': 'p2'})]
    assert kp.find_environment(envs, provider='p2')['metadata']['name'] == 'e2'
    with pytest.raises(exception.InvalidProperty, match='e1, e2'):
        kp.find_environment(envs)


def test_values_the_store_wrote_are_not_user_properties():
    written = {props.DNS_SERVERS: '192.0.2.53'}
    annotations = {props.DNS_SERVERS: '192.0.2.53',
                   'vmetal-ironic.io/written': json.dumps(written)}
    assert props.DNS_SERVERS not in kp.user_annotations(
        annotations, 'vmetal-ironic.io/written')
    annotations[props.DNS_SERVERS] = '198.51.100.53'   # the user changed it
    assert kp.user_annotations(annotations, 'vmetal-ironic.io/written')[
        props.DNS_SERVERS] == '198.51.100.53'


def test_14_one_bad_node_type_breaks_no_other_host():
    # Another team writes ``operator: in`` (and a node type that is not an
    # object); hosts it cannot be selecting keep working, and it is named.
    bad = provider('team-b', node_type(
        'odd', {'matchExpressions': [{'key': 'a', 'operator': 'in',
                                      'values': ['x']}]}))
    bad['spec']['metal3']['nodeTypes'].append('not a node type')
    good = provider('team-a', node_type(
        'small', {'matchLabels': {'size': 's'}},
        **{props.NETWORK_CIDR: '198.51.100.1/24'}))
    providers = [bad, good]
    assert kp.find_node_type(providers, host({'size': 's'}), LABEL)[0] == (
        'team-a')
    assert kp.find_node_type(providers, host({}), LABEL) is None
    [(provider_name, type_name, message)] = kp.bad_node_types(providers)
    assert (provider_name, type_name) == ('team-b', 'odd')
    assert message.startswith("NodeProvider team-b node type 'odd' ")
    assert "'in'" in message
