import netaddr
import pytest

from vmetal_ironic.ipam import errors
from vmetal_ironic.ipam import pool as ipam_pool


def test_cidr_mode_skips_network_gateway_and_broadcast():
    pool = ipam_pool.parse_pool('192.0.2.1/29')
    assert pool.key == '192.0.2.0/29'
    assert str(pool.gateway) == '192.0.2.1'
    assert pool.size == 5  # .2 .. .6
    assert not pool.contains('192.0.2.0')
    assert not pool.contains('192.0.2.1')
    assert not pool.contains('192.0.2.7')
    assert pool.contains('192.0.2.6')


def test_gateway_in_the_middle_of_the_network():
    pool = ipam_pool.parse_pool('198.51.100.100/24')
    assert pool.key == '198.51.100.0/24'
    assert pool.size == 253
    assert not pool.contains('198.51.100.100')


def test_range_mode_hands_out_exactly_the_ranges():
    pool = ipam_pool.parse_pool('192.0.2.1/24',
                                '192.0.2.20-192.0.2.22, 192.0.2.10-192.0.2.11')
    assert pool.intervals == ((int(netaddr.IPAddress('192.0.2.10')),
                               int(netaddr.IPAddress('192.0.2.11'))),
                              (int(netaddr.IPAddress('192.0.2.20')),
                               int(netaddr.IPAddress('192.0.2.22'))))
    assert pool.size == 5
    assert pool.name == ('192.0.2.0/24 ranges '
                         '192.0.2.10-192.0.2.11,192.0.2.20-192.0.2.22')


def test_range_mode_never_hands_out_a_gateway_inside_a_range():
    pool = ipam_pool.parse_pool('192.0.2.5/24', '192.0.2.4-192.0.2.6')
    assert pool.size == 2
    assert not pool.contains('192.0.2.5')


def test_range_touching_network_and_broadcast_is_trimmed():
    pool = ipam_pool.parse_pool('192.0.2.1/30', '192.0.2.0-192.0.2.3')
    assert pool.size == 1
    assert pool.contains('192.0.2.2')


def test_single_address_range():
    pool = ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.9')
    assert pool.size == 1


@pytest.mark.parametrize('cidr, error, fragment', [
    (None, errors.MissingCidr, 'network-cidr is not set'),
    ('', errors.MissingCidr, 'network-cidr is not set'),
    ('   ', errors.MissingCidr, 'network-cidr is not set'),
    ('192.0.2.1', errors.InvalidCidr, "'192.0.2.1' is not <gateway>/<prefix>"),
    ('192.0.2/24', errors.InvalidCidr, "'192.0.2/24' is not"),
    ('192.0.2.1/24/1', errors.InvalidCidr, "'192.0.2.1/24/1'"),
    ('abc/24', errors.InvalidCidr, "'abc/24'"),
    ('300.0.2.1/24', errors.InvalidCidr, "'300.0.2.1' is not an IPv4"),
    ('192.0.2.1/33', errors.InvalidCidr, 'prefix /33'),
    ('192.0.2.1/31', errors.InvalidCidr, 'prefix /31'),
    ('192.0.2.1/0', errors.InvalidCidr, 'prefix /0'),
    ('192.0.2.0/24', errors.InvalidGateway,
     'gateway 192.0.2.0 is the network address'),
    ('192.0.2.255/24', errors.InvalidGateway,
     'gateway 192.0.2.255 is the broadcast address'),
    ('2001:db8::1/64', errors.UnsupportedIPv6,
     "'2001:db8::1/64' is IPv6; only IPv4 pools are supported yet"),
])
def test_bad_cidr(cidr, error, fragment):
    with pytest.raises(error) as info:
        ipam_pool.parse_pool(cidr)
    assert fragment in str(info.value)


@pytest.mark.parametrize('ranges, error, fragment', [
    ('192.0.2.30-192.0.2.20', errors.ReversedRange,
     "'192.0.2.30-192.0.2.20' is reversed: 192.0.2.30 comes after 192.0.2.20"),
    ('192.0.2.10-198.51.100.5', errors.RangeOutsideCidr,
     "'192.0.2.10-198.51.100.5' is outside network-cidr 192.0.2.0/24"),
    ('198.51.100.1-198.51.100.5', errors.RangeOutsideCidr, 'outside'),
    ('192.0.2.10-192.0.2.20,192.0.2.20-192.0.2.30', errors.OverlappingRanges,
     "'192.0.2.10-192.0.2.20' and '192.0.2.20-192.0.2.30' overlap"),
    ('192.0.2.10-192.0.2.20,192.0.2.5-192.0.2.50', errors.OverlappingRanges,
     'overlap'),
    ('192.0.2.10-', errors.InvalidRange, "end '' is not an IPv4 address"),
    ('192.0.2.10-192.0.2.x', errors.InvalidRange,
     "end '192.0.2.x' is not an IPv4 address"),
    ('192.0.2.1-192.0.2.2-192.0.2.3', errors.InvalidRange, 'is not a-b'),
    ('192.0.2.10-192.0.2.20,', errors.InvalidRange, 'has an empty range'),
    ('2001:db8::1-2001:db8::9', errors.UnsupportedIPv6, 'is IPv6'),
])
def test_bad_ranges(ranges, error, fragment):
    with pytest.raises(error) as info:
        ipam_pool.parse_pool('192.0.2.1/24', ranges)
    assert fragment in str(info.value)


def test_range_of_only_the_gateway_is_empty():
    with pytest.raises(errors.EmptyPool) as info:
        ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.1-192.0.2.1')
    assert 'has no address to hand out besides the gateway 192.0.2.1' in str(
        info.value)


def test_errors_are_operator_errors_not_crashes():
    from vmetal_ironic import exception
    assert issubclass(errors.IpamError, exception.PermanentError)
    assert issubclass(errors.PoolExhausted, exception.InvalidProperty)
