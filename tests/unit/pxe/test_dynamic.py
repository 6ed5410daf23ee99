import ipaddress

import pytest

from vmetal_ironic.pxe import dynamic


def ip(text):
    return int(ipaddress.IPv4Address(text))


def pool(size=2):
    return dynamic.DynamicPool(ip('192.0.2.100'), ip('192.0.2.100') + size - 1,
                               24, gateway='192.0.2.1', lease_time=600,
                               offer_hold=60)


def test_parse_range():
    assert dynamic.parse_range('192.0.2.100-192.0.2.150') == (
        ip('192.0.2.100'), ip('192.0.2.150'))
    with pytest.raises(ValueError, match=r"'192\.0\.2\.9-192\.0\.2\.1' ends"):
        dynamic.parse_range('192.0.2.9-192.0.2.1')
    with pytest.raises(ValueError, match="'nope' is not first-last"):
        dynamic.parse_range('nope')


def test_same_mac_keeps_its_address_and_range_fills():
    p = pool()
    first = p.lookup('m1', 0, allocate=True)
    assert first.address == bytes([192, 0, 2, 100]) and first.dynamic
    assert p.lookup('m1', 1, allocate=True).address == first.address
    assert p.lookup('m2', 1, allocate=True).address == bytes([192, 0, 2, 101])
    assert p.lookup('m3', 1, allocate=True) is None
    assert p.lookup('m4', 1, allocate=False) is None


def test_offers_expire_unless_committed():
    p = pool(1)
    p.lookup('m1', 0, allocate=True)
    assert p.lookup('m2', 30, allocate=True) is None
    assert p.lookup('m2', 61, allocate=True) is not None
    p.commit('m2', 61)
    assert p.lookup('m3', 600, allocate=True) is None
    assert p.lookup('m3', 662, allocate=True) is not None


def test_release_and_decline_and_reserved_addresses():
    p = pool(2)
    p.lookup('m1', 0, allocate=True)
    p.release('m1')
    assert len(p) == 0
    p.lookup('m1', 0, allocate=True)
    p.decline('m1', 0)
    # .100 is set aside, .101 is reserved elsewhere: nothing left.
    assert p.lookup('m2', 1, allocate=True,
                    reserved={bytes([192, 0, 2, 101])}) is None
    assert p.lookup('m2', 601, allocate=True).address == bytes(
        [192, 0, 2, 100])
