"""Names and size ceiling of the Kubernetes store's objects."""

from vmetal_ironic.store.kubernetes import kube_names as names


def test_pool_configmap_name_is_readable_and_valid():
    assert (names.pool_configmap_name('198.51.100.0/24')
            == 'vmetal-ipam-198-51-100-0-24')
    assert names.pool_label('198.18.0.0/15') == '198-18-0-0-15'


def test_distinct_pools_get_distinct_names():
    assert (names.pool_configmap_name('198.51.100.0/24')
            != names.pool_configmap_name('198.51.100.0/25'))


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


def test_mac_key_roundtrip():
    key = names.mac_key('52:54:00:AA:bb:0c')
    assert key == '52-54-00-aa-bb-0c'
    assert names.key_mac(key) == '52:54:00:aa:bb:0c'


def test_claim_name_is_scope_and_address():
    # The name is the uniqueness: one object per address on one L2,
    # whatever pool it was asked from.
    assert names.claim_name('default', '192.0.2.7') == 'default.192.0.2.7'
    assert names.claim_name('rack-1', '192.0.2.7') != names.claim_name(
        'rack', '1.192.0.2')


def test_reservation_name_is_the_mac():
    assert names.reservation_name('52:54:00:aa:bb:0c') == '52-54-00-aa-bb-0c'
