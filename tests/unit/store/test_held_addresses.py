import pytest

from vmetal_ironic.ipam import errors
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.store import held_addresses

NET = ipam_pool.parse_pool('192.0.2.1/24')
BASE = int(NET.network.first)


def test_a_fresh_copy_is_never_current():
    assert not held_addresses.HeldAddresses().current(0)


def test_candidates_skip_held_and_blocked_addresses():
    held = held_addresses.HeldAddresses(blocked=[BASE + 3])
    held.load(7, [BASE + 2])
    assert held.current(7) and not held.current(8)
    assert held.candidate(NET) == BASE + 4


def test_overlapping_pools_share_the_copy():
    narrow = ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.2-192.0.2.3')
    held = held_addresses.HeldAddresses()
    held.load(1, [])
    assert held.candidate(NET) == BASE + 2
    assert held.candidate(narrow) == BASE + 3
    with pytest.raises(errors.PoolExhausted):
        held.candidate(narrow)
    assert held.candidate(NET) == BASE + 4


def test_only_an_unbroken_chain_of_own_writes_keeps_it_current():
    held = held_addresses.HeldAddresses()
    held.load(1, [])
    held.candidate(NET)
    held.taken(1, 2)
    assert held.current(2)
    # Someone else wrote in between (3 -> 4 is not ours from 2).
    held.taken(3, 4)
    assert not held.current(4)


def test_a_release_offers_the_address_again_lowest_first():
    held = held_addresses.HeldAddresses()
    held.load(1, [BASE + 2, BASE + 3, BASE + 4])
    held.released(1, 2, BASE + 3)
    assert held.candidate(NET) == BASE + 3
    assert held.candidate(NET) == BASE + 5


def test_a_blocked_address_stays_blocked_when_released():
    held = held_addresses.HeldAddresses(blocked=[BASE + 2])
    held.load(1, [])
    held.released(1, 2, BASE + 2)
    assert held.candidate(NET) == BASE + 3


def test_forget_makes_it_read_again():
    held = held_addresses.HeldAddresses()
    held.load(1, [])
    held.forget()
    assert not held.current(1)
