import pytest

from vmetal_ironic import exception
from vmetal_ironic import host_network
from vmetal_ironic import properties as props
from vmetal_ironic.ipam import errors
from vmetal_ironic.store import local

CUSTOM = ('{"links": [{"id": "eth0"}], "networks": '
          '[{"id": "n", "link": "eth0", "type": "ipv4_dhcp"}], "services": []}')


@pytest.fixture
def store(tmp_path):
    db = local.LocalStore(path=str(tmp_path / 'vmetal.sqlite'))
    yield db
    db.close()


def test_ensure_allocates_and_stores_network_data(store):
    layer = {props.NETWORK_CIDR: '192.0.2.1/24', props.DNS_SERVERS: '192.0.2.53'}
    result = host_network.ensure(store, 'Machine/ns/a', mac='52:54:00:00:00:0A',
                                 layers=[layer])
    assert result.allocation.address == '192.0.2.2'
    assert result.network_data['links'][0]['ethernet_mac_address'] == (
        '52:54:00:00:00:0a')
    assert store.get_network_data('Machine/ns/a') == result.network_data
    again = host_network.ensure(store, 'Machine/ns/a', layers=[layer])
    assert again.network_data == result.network_data


def test_defaults_are_the_least_specific_layer(store):
    result = host_network.ensure(
        store, 'Machine/t/a', layers=[{props.NETWORK_IP_RANGE: '198.51.100.50-198.51.100.60'}],
        defaults={props.NETWORK_CIDR: '198.51.100.1/24',
                  props.NETWORK_IP_RANGE: '198.51.100.10-198.51.100.20'})
    assert result.allocation.address == '198.51.100.50'


def test_custom_network_data_takes_no_address(store):
    result = host_network.ensure(store, 'Machine/t/a', layers=[
        {props.NETWORK_DATA: CUSTOM, props.NETWORK_CIDR: '192.0.2.1/24'}])
    assert result.allocation is None
    assert store.list_allocations() == []
    assert store.get_network_data('Machine/t/a')['links'] == [{'id': 'eth0'}]


def test_switching_to_custom_network_data_returns_the_address(store):
    host_network.ensure(store, 'Machine/t/a', layers=[{props.NETWORK_CIDR: '192.0.2.1/24'}])
    host_network.ensure(store, 'Machine/t/a', layers=[{props.NETWORK_DATA: CUSTOM}])
    assert store.list_allocations() == []
    assert store.get_network_data('Machine/t/a')['networks'][0]['type'] == 'ipv4_dhcp'


def test_bad_input_writes_nothing(store):
    with pytest.raises(errors.MissingCidr):
        host_network.ensure(store, 'Machine/t/a', layers=[{}])
    with pytest.raises(exception.InvalidProperty) as info:
        host_network.ensure(store, 'Machine/t/a', mac='zz', layers=[
            {props.NETWORK_CIDR: '192.0.2.1/24'}])
    assert "MAC address 'zz' is not valid" in str(info.value)
    with pytest.raises(exception.InvalidProperty):
        host_network.ensure(store, 'Machine/t/a', layers=[
            {props.NETWORK_CIDR: '192.0.2.1/24', props.DNS_SERVERS: 'x'}])
    assert store.list_allocations() == []
    assert store.get_network_data('Machine/t/a') is None


def test_release(store):
    host_network.ensure(store, 'Machine/t/a', layers=[{props.NETWORK_CIDR: '192.0.2.1/24'}])
    assert host_network.release(store, 'Machine/t/a').address == '192.0.2.2'
    assert host_network.release(store, 'Machine/t/a') is None
