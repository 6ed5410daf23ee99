import pytest

from vmetal_ironic import exception
from vmetal_ironic import properties as props
from vmetal_ironic.ipam import errors


def test_most_specific_layer_wins_and_blanks_do_not_hide():
    host = {props.NETWORK_CIDR: '192.0.2.1/24', props.DNS_SERVERS: '  '}
    node_type = {props.NETWORK_CIDR: '198.51.100.1/24',
                 props.DNS_SERVERS: '192.0.2.53',
                 props.NETWORK_IP_RANGE: '192.0.2.10-192.0.2.20'}
    environment = {props.DNS_SERVERS: '203.0.113.53', 'unrelated': 'x'}
    merged = props.merge(host, None, node_type, environment)
    assert merged == {props.NETWORK_CIDR: '192.0.2.1/24',
                      props.DNS_SERVERS: '192.0.2.53',
                      props.NETWORK_IP_RANGE: '192.0.2.10-192.0.2.20'}


def test_resolve_pool_spec():
    spec = props.resolve({props.NETWORK_CIDR: '192.0.2.1/24',
                          props.DNS_SERVERS: '192.0.2.53'})
    assert spec.uses_ipam
    assert spec.pool.key == '192.0.2.0/24'
    assert spec.dns_servers == ('192.0.2.53',)


def test_custom_network_data_overrides_ipam_even_with_a_bad_cidr():
    spec = props.resolve({
        props.NETWORK_CIDR: 'garbage',
        props.NETWORK_DATA: '{"links": [], "networks": [], "services": []}'})
    assert not spec.uses_ipam
    assert spec.custom_network_data == {'links': [], 'networks': [],
                                        'services': []}


def test_resolve_without_cidr():
    with pytest.raises(errors.MissingCidr):
        props.resolve({})


def test_parse_assignments():
    assert props.parse_assignments(['network-cidr=192.0.2.1/24',
                                     'example.com/x=a=b']) == {
        props.NETWORK_CIDR: '192.0.2.1/24', 'example.com/x': 'a=b'}
    with pytest.raises(exception.InvalidProperty) as info:
        props.parse_assignments(['network-cidr'])
    assert "property 'network-cidr' is not key=value" in str(info.value)


def test_ntp_servers_are_parsed_for_dhcp_option_42():
    spec = props.resolve({props.NETWORK_CIDR: '192.0.2.1/24',
                          props.NTP_SERVERS: '192.0.2.123, 198.51.100.123'})
    assert spec.ntp_servers == ('192.0.2.123', '198.51.100.123')
    custom = props.resolve({
        props.NETWORK_DATA: '{"links": [], "networks": [], "services": []}',
        props.NTP_SERVERS: '192.0.2.123'})
    assert custom.ntp_servers == ('192.0.2.123',)
    with pytest.raises(exception.InvalidProperty,
                       match=r"ntp-servers entry 'pool\.ntp\.org' is not an "
                             "IPv4 address"):
        props.resolve({props.NETWORK_CIDR: '192.0.2.1/24',
                       props.NTP_SERVERS: 'pool.ntp.org'})


def test_a_bad_value_names_the_layer_it_came_from():
    # Issue 9: one line naming the value and where to fix it.
    from vmetal_ironic.ipam import errors as ipam_errors

    layers = (props.Layer({}, 'BareMetalHost ns/h annotations'),
              props.Layer({props.NETWORK_CIDR: '192.0.2.0/24'},
                          'node type p1_small'),
              props.Layer({props.NETWORK_CIDR: '198.51.100.1/24',
                           props.DNS_SERVERS: '192.0.2.999'},
                          'NetworkEnvironment default'))
    with pytest.raises(ipam_errors.InvalidGateway) as info:
        props.resolve(props.merge(*layers), props.sources(*layers))
    assert str(info.value) == (
        "network-cidr '192.0.2.0/24': gateway 192.0.2.0 is the network "
        'address; give the gateway, e.g. 192.0.2.1/24 (from node type '
        'p1_small)')
    fixed = (layers[0], props.Layer({props.NETWORK_CIDR: '192.0.2.1/24'},
                                    'node type p1_small'), layers[2])
    with pytest.raises(exception.InvalidProperty) as info:
        props.resolve(props.merge(*fixed), props.sources(*fixed))
    assert str(info.value).endswith('(from NetworkEnvironment default)')
    assert len(str(info.value).splitlines()) == 1
