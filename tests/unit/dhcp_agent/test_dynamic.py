import ipaddress

import pytest

from vmetal_ironic.dhcp_agent import dynamic


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
    assert p.lookup('m2', 601, allocate=True,
                    reserved={bytes([192, 0, 2, 101])}).address == bytes(
        [192, 0, 2, 100])


def test_lease_whose_address_is_reserved_later_is_revoked():
    p = pool(2)
    lease = p.lookup('m1', 0, allocate=True)
    p.commit('m1', 0)
    reserved = {lease.address}
    assert p.lookup('m1', 10, allocate=False, reserved=reserved) is None
    assert p.revoked('m1')
    # Starting over (DISCOVER) gives it another address, never the
    # reserved one.
    again = p.lookup('m1', 11, allocate=True, reserved=reserved)
    assert again.address == bytes([192, 0, 2, 101])
    assert not p.revoked('m1')


def test_allocation_looks_at_a_bounded_number_of_addresses():
    first = ip('198.18.0.1')
    p = dynamic.DynamicPool(first, first + 4093, 20)
    reserved = {(first + i).to_bytes(4, 'big')
                for i in range(p.MAX_TRIES + 10)}
    # The first MAX_TRIES candidates are reserved: this packet gets
    # nothing, the next one carries on where it stopped.
    assert p.lookup('m1', 0, allocate=True, reserved=reserved) is None
    got = p.lookup('m1', 0, allocate=True, reserved=reserved)
    assert got.address == (first + p.MAX_TRIES + 10).to_bytes(4, 'big')


def test_wide_range_fills_in_order_and_expiry_is_a_heap():
    first = ip('198.18.0.1')
    p = dynamic.DynamicPool(first, first + 4093, 20, offer_hold=60)
    for index in range(4094):
        got = p.lookup(f'm{index}', index * 0.001, allocate=True)
        assert got.address == (first + index).to_bytes(4, 'big')
    assert p.lookup('late', 5, allocate=True) is None
    # Offers run out after 60 s: all addresses are free again.
    assert p.lookup('late', 66, allocate=True) is not None
    assert len(p) == 1
    for _ in range(1000):
        p.commit('late', 70)
    # Renewals leave stale heap entries; they are compacted.
    assert len(p._expiry) < 100


def test_adopt_takes_a_free_address_of_the_range_only():
    p = pool(2)
    assert p.adopt('m1', bytes([192, 0, 2, 1]), 0) is None     # outside
    got = p.adopt('m1', bytes([192, 0, 2, 101]), 0)
    assert got.address == bytes([192, 0, 2, 101])
    assert p.adopt('m2', bytes([192, 0, 2, 101]), 0) is None   # held
    assert p.adopt('m3', bytes([192, 0, 2, 100]), 0,
                   reserved={bytes([192, 0, 2, 100])}) is None
    # The cursor passes the adopted address without handing it out twice.
    assert p.lookup('m4', 0, allocate=True).address == bytes([192, 0, 2,
                                                              100])
    assert p.lookup('m5', 0, allocate=True) is None


def test_take_over_keeps_leases_with_new_options():
    old = pool(2)
    old.lookup('m1', 0, allocate=True)
    old.commit('m1', 0)
    new = dynamic.DynamicPool(old.first, old.last, 24, gateway='192.0.2.254',
                              lease_time=1200)
    new.take_over(old, 1)
    got = new.lookup('m1', 2, allocate=False)
    assert got.address == bytes([192, 0, 2, 100])
    assert got.gateway == '192.0.2.254' and got.lease_time == 1200
    assert new.lookup('m2', 2, allocate=True).address == bytes(
        [192, 0, 2, 101])


def test_revoked_address_comes_back_when_the_reservation_goes():
    p = pool(1)
    lease = p.lookup('m1', 0, allocate=True)
    reserved = frozenset({lease.address})
    assert p.lookup('m1', 1, allocate=True, reserved=reserved) is None
    # The reservation is withdrawn: the address is free again.
    assert p.lookup('m2', 2, allocate=True,
                    reserved=frozenset()).address == lease.address


def test_holds_only_committed_unexpired_leases():
    p = pool(2)
    address = p.lookup('m1', 0, allocate=True).address
    assert not p.holds(address, 1)          # offered, not yet taken
    p.commit('m1', 1)
    assert p.holds(address, 2)
    assert not p.holds(bytes([192, 0, 2, 101]), 2)
    assert not p.holds(address, 601)        # its lease ran out
    p.release('m1')
    assert not p.holds(address, 2)
    p.lookup('m2', 3, allocate=True)
    p.commit('m2', 3)
    p.decline('m2', 4)
    assert not any(p.holds(bytes([192, 0, 2, last]), 5)
                   for last in (100, 101))
