"""Names and size ceiling of the Kubernetes store's objects."""

import pytest

from vmetal_ironic import exception
from vmetal_ironic.ipam import errors as ipam_errors
from vmetal_ironic.store import kube_names as names


def test_pool_configmap_name_is_readable_and_valid():
    assert (names.pool_configmap_name('198.51.100.0/24')
            == 'vmetal-ipam-198-51-100-0-24')
    assert names.pool_label('198.18.0.0/15') == '198-18-0-0-15'


def test_distinct_pools_get_distinct_names():
    assert (names.pool_configmap_name('198.51.100.0/24')
            != names.pool_configmap_name('198.51.100.0/25'))


@pytest.mark.parametrize('owner, kind, namespace, name', [
    ('BareMetalHost/metal3/worker-0', 'BareMetalHost', 'metal3', 'worker-0'),
    ('Node/1be26c0b-03f2-4d2e-ae87-c02d7f33c123', 'Node', None,
     '1be26c0b-03f2-4d2e-ae87-c02d7f33c123'),
])
def test_parse_owner(owner, kind, namespace, name):
    assert names.parse_owner(owner) == (kind, namespace, name)


@pytest.mark.parametrize('owner', ['', 'worker-0', 'A/b/c/d', 'Kind//x',
                                   '9Kind/ns/x', None])
def test_parse_owner_rejects_malformed(owner):
    with pytest.raises(exception.InvalidProperty, match='owner'):
        names.parse_owner(owner)


def test_secret_name_of_a_host():
    assert (names.network_data_secret_name('BareMetalHost/metal3/worker-0')
            == 'vmetal-nd-baremetalhost-worker-0')


def test_secret_name_of_an_odd_owner_is_valid_and_unique():
    first = names.network_data_secret_name('Node/Foo_Bar')
    second = names.network_data_secret_name('Node/foo-bar')
    assert first != second
    assert first.startswith('vmetal-nd-node-foo-bar-')


def test_secret_name_is_cut_to_253_characters():
    name = names.network_data_secret_name('BareMetalHost/ns/' + 'a' * 253)
    assert len(name) <= 253
    assert name != names.network_data_secret_name(
        'BareMetalHost/ns/' + 'a' * 252)


def test_mac_key_is_a_valid_configmap_key():
    assert names.mac_key('52:54:00:AA:bb:0c') == '52-54-00-aa-bb-0c'


def test_data_size_counts_keys_and_values():
    assert names.data_size({'192.0.2.10': 'BareMetalHost/a/b'}) == 10 + 17
    assert names.data_size(None) == 0


def test_max_entries_documented_figures():
    # The module docstring promises these; keep them true.
    assert names.max_entries(len('BareMetalHost/metal3/worker-0123')) > 21000
    assert names.max_entries(331) > 2900


def test_ceiling_refuses_before_the_limit():
    owner = 'BareMetalHost/metal3/' + 'w' * 200
    budget = 1000
    data = {}
    count = 0
    with pytest.raises(names.RecordFull, match='budget'):
        for value in range(10000):
            key = f'198.18.{value // 256}.{value % 256}'
            names.check_ceiling(data, key, owner, 'ConfigMap x/y',
                                budget=budget)
            data[key] = owner
            count += 1
    assert names.data_size(data) <= budget
    assert count == budget // (len(owner) + len('198.18.0.0'))


def test_ceiling_error_is_deployment_trouble_not_an_exhausted_pool():
    # Raised for the reservations ConfigMap too, where there is no pool.
    assert issubclass(names.RecordFull, exception.DeploymentError)
    assert not issubclass(names.RecordFull, ipam_errors.PoolExhausted)
    assert not issubclass(names.RecordFull, exception.PermanentError)
