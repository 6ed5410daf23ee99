import random

import netaddr
import pytest

from vmetal_ironic.ipam import allocator
from vmetal_ironic.ipam import errors
from vmetal_ironic.ipam import pool as ipam_pool


def _ip(value):
    return str(netaddr.IPAddress(value))


def test_sequential_lowest_first():
    alloc = allocator.Allocator(ipam_pool.parse_pool('192.0.2.1/24'))
    assert [_ip(alloc.allocate()) for _ in range(3)] == [
        '192.0.2.2', '192.0.2.3', '192.0.2.4']


def test_skips_addresses_already_used():
    pool = ipam_pool.parse_pool('192.0.2.1/24')
    used = [int(netaddr.IPAddress(a)) for a in ('192.0.2.2', '192.0.2.4')]
    alloc = allocator.Allocator(pool, used)
    assert [_ip(alloc.allocate()) for _ in range(3)] == [
        '192.0.2.3', '192.0.2.5', '192.0.2.6']


def test_release_makes_the_lowest_address_reusable():
    alloc = allocator.Allocator(ipam_pool.parse_pool('192.0.2.1/24'))
    taken = [alloc.allocate() for _ in range(5)]
    alloc.release(taken[3])
    alloc.release(taken[1])
    assert _ip(alloc.allocate()) == _ip(taken[1])
    assert _ip(alloc.allocate()) == _ip(taken[3])
    assert _ip(alloc.allocate()) == '192.0.2.7'


def test_release_of_a_free_address_is_a_no_op():
    alloc = allocator.Allocator(ipam_pool.parse_pool('192.0.2.1/24'))
    alloc.release(int(netaddr.IPAddress('192.0.2.50')))
    assert _ip(alloc.allocate()) == '192.0.2.2'


def test_hole_taken_elsewhere_is_not_handed_out_twice():
    alloc = allocator.Allocator(ipam_pool.parse_pool('192.0.2.1/24'))
    first = alloc.allocate()
    alloc.allocate()
    alloc.release(first)
    alloc.mark_used(first)
    assert _ip(alloc.allocate()) == '192.0.2.4'


def test_range_mode_walks_the_ranges_in_order():
    pool = ipam_pool.parse_pool('192.0.2.11/24',
                                '192.0.2.20-192.0.2.21,192.0.2.10-192.0.2.12')
    alloc = allocator.Allocator(pool)
    got = [_ip(alloc.allocate()) for _ in range(4)]
    assert got == ['192.0.2.10', '192.0.2.12', '192.0.2.20', '192.0.2.21']
    with pytest.raises(errors.PoolExhausted) as info:
        alloc.allocate()
    assert str(info.value) == (
        'pool 192.0.2.0/24 ranges 192.0.2.10-192.0.2.12,192.0.2.20-192.0.2.21:'
        ' all ranges exhausted; no free addresses left')


def test_cidr_exhaustion_names_the_pool():
    alloc = allocator.Allocator(ipam_pool.parse_pool('192.0.2.1/30'))
    assert _ip(alloc.allocate()) == '192.0.2.2'
    with pytest.raises(errors.PoolExhausted) as info:
        alloc.allocate()
    assert str(info.value) == (
        'pool 192.0.2.0/30: CIDR exhausted; no free addresses left')


def test_release_behind_cursor_in_earlier_range_after_exhaustion():
    pool = ipam_pool.parse_pool('192.0.2.1/24',
                                '192.0.2.10-192.0.2.11,192.0.2.20-192.0.2.20')
    alloc = allocator.Allocator(pool)
    taken = [alloc.allocate() for _ in range(3)]
    with pytest.raises(errors.PoolExhausted):
        alloc.allocate()
    alloc.release(taken[0])
    assert alloc.allocate() == taken[0]


def test_matches_a_reference_model_under_random_churn():
    pool = ipam_pool.parse_pool('198.51.100.7/26',
                                '198.51.100.1-198.51.100.20,198.51.100.40-198.51.100.62')
    allowed = sorted(v for v in range(pool.network.first, pool.network.last + 1)
                     if pool.contains(v))
    alloc = allocator.Allocator(pool)
    held = set()
    rng = random.Random(7)
    for _ in range(3000):
        if held and rng.random() < 0.4:
            value = rng.choice(sorted(held))
            held.discard(value)
            alloc.release(value)
            continue
        free = [v for v in allowed if v not in held]
        if not free:
            with pytest.raises(errors.PoolExhausted):
                alloc.allocate()
            continue
        value = alloc.allocate()
        assert value == free[0]
        held.add(value)


def test_count_used_ignores_addresses_the_pool_cannot_hand_out():
    pool = ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.10-192.0.2.19')
    # Inside the range; outside it; the gateway; as an integer.
    used = ['192.0.2.10', '192.0.2.100', '192.0.2.1',
            int(netaddr.IPAddress('192.0.2.19'))]
    assert pool.count_used(used) == 2
    assert pool.count_used([]) == 0


def test_start_at_moves_the_cursor_and_leaves_lower_addresses():
    pool = ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.10-192.0.2.20,'
                                '192.0.2.100-192.0.2.110')
    allocator_ = allocator.Allocator(
        pool, used=[int(netaddr.IPAddress('192.0.2.16'))])
    allocator_.start_at(int(netaddr.IPAddress('192.0.2.15')))
    got = [str(netaddr.IPAddress(allocator_.allocate())) for _ in range(7)]
    assert got == ['192.0.2.15', '192.0.2.17', '192.0.2.18', '192.0.2.19',
                   '192.0.2.20', '192.0.2.100', '192.0.2.101']
    allocator_.start_at(int(netaddr.IPAddress('192.0.2.200')))
    with pytest.raises(errors.PoolExhausted):
        allocator_.allocate()
