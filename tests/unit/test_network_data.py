import json

import pytest

from vmetal_ironic import exception
from vmetal_ironic import network_data
from vmetal_ironic.ipam import pool as ipam_pool


def test_build_follows_openstack_network_data():
    pool = ipam_pool.parse_pool('192.0.2.1/24')
    document = network_data.build('52-54-00-AA-BB-CC', '192.0.2.10', pool,
                                  ('192.0.2.53', '198.51.100.53'), mtu=9000)
    assert document == {
        'links': [{'id': 'nic0', 'type': 'phy', 'mtu': 9000,
                   'ethernet_mac_address': '52:54:00:aa:bb:cc'}],
        'networks': [{
            'id': 'provisioning', 'link': 'nic0', 'type': 'ipv4',
            # Required by Ironic's network_data schema (node PATCH).
            'network_id': 'provisioning',
            'ip_address': '192.0.2.10', 'netmask': '255.255.255.0',
            'routes': [{'network': '0.0.0.0', 'netmask': '0.0.0.0',
                        'gateway': '192.0.2.1'}],
            'services': [{'type': 'dns', 'address': '192.0.2.53'},
                         {'type': 'dns', 'address': '198.51.100.53'}]}],
        'services': [{'type': 'dns', 'address': '192.0.2.53'},
                     {'type': 'dns', 'address': '198.51.100.53'}],
    }
    assert network_data.parse_custom(json.dumps(document)) == document
    assert network_data.primary_ipv4(document) == (
        '192.0.2.10', '255.255.255.0', '192.0.2.1', '52:54:00:aa:bb:cc')


def test_build_without_dns_has_empty_services():
    pool = ipam_pool.parse_pool('198.51.100.1/25')
    document = network_data.build(None, '198.51.100.2', pool)
    assert document['services'] == []
    assert document['networks'][0]['netmask'] == '255.255.255.128'
    assert 'ethernet_mac_address' not in document['links'][0]


@pytest.mark.parametrize('text, fragment', [
    ('{not json', 'network-data is not valid JSON'),
    ('[]', 'must be a JSON object with links, networks and services, not list'),
    ('{"links": []}', 'network-data lacks networks, services'),
    ('{"links": {}, "networks": [], "services": []}',
     "network-data 'links' must be a list, not dict"),
    ('{"links": [{}], "networks": [], "services": []}',
     'network-data links[0] has no id'),
    ('{"links": [{"id": "a"}], "networks": [{"link": "b"}], "services": []}',
     "network-data networks[0] names link 'b', which is not in links"),
    ('{"links": [], "networks": [1], "services": []}',
     'network-data networks[0] is not an object'),
])
def test_custom_document_errors_name_the_problem(text, fragment):
    with pytest.raises(exception.InvalidNetworkData) as info:
        network_data.parse_custom(text)
    assert fragment in str(info.value)


def test_dns_servers_parsing():
    assert network_data.parse_dns_servers(' 192.0.2.1 ,198.51.100.1') == (
        '192.0.2.1', '198.51.100.1')
    assert network_data.parse_dns_servers('') == ()
    assert network_data.parse_dns_servers(None) == ()
    with pytest.raises(exception.InvalidProperty) as info:
        network_data.parse_dns_servers('192.0.2.1,dns.example')
    assert "dns-servers entry 'dns.example' is not an IPv4 address" in str(
        info.value)
    with pytest.raises(exception.InvalidProperty):
        network_data.parse_dns_servers('192.0.2.1,,192.0.2.2')


def test_normalize_mac():
    assert network_data.normalize_mac('52:54:00:AA:BB:0C') == '52:54:00:aa:bb:0c'
    with pytest.raises(exception.InvalidProperty) as info:
        network_data.normalize_mac('52:54:00')
    assert "MAC address '52:54:00' is not valid" in str(info.value)


def test_primary_ipv4_of_a_document_without_one():
    assert network_data.primary_ipv4(
        {'links': [], 'networks': [{'type': 'ipv4_dhcp'}], 'services': []}
    ) is None


def test_a_custom_documents_addresses_are_canonical_or_refused():
    document = {'links': [{'id': 'l'}], 'networks': [{
        'link': 'l', 'type': 'ipv4', 'ip_address': '2001:DB8::0:1',
        'netmask': '255.255.255.0',
        'routes': [{'gateway': '192.0.2.1'}]}], 'services': []}
    parsed = network_data.parse_custom(json.dumps(document))
    assert parsed['networks'][0]['ip_address'] == '2001:db8::1'
    document['networks'][0]['ip_address'] = '192.0.2.010'
    with pytest.raises(exception.InvalidNetworkData,
                       match=r"networks\[0\] ip_address '192.0.2.010' is not"):
        network_data.parse_custom(json.dumps(document))
    document['networks'][0]['ip_address'] = '192.0.2.10'
    document['networks'][0]['routes'][0]['gateway'] = 'gw'
    with pytest.raises(exception.InvalidNetworkData,
                       match=r"routes\[0\] gateway 'gw'"):
        network_data.parse_custom(json.dumps(document))
