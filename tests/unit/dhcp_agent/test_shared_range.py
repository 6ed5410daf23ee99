"""The agent's side of the shared inspection range, on a real (SQLite)
store: the packet path only reads the cache and queues work; the store
thread's work, run here one step at a time, claims, renews and takes
leases back."""

import dataclasses
import socket
import sqlite3

from tests import store_lock
from tests.unit.dhcp_agent import helpers
from vmetal_ironic import reservation as res
from vmetal_ironic.dhcp_agent import cache as cache_mod
from vmetal_ironic.dhcp_agent import messages as m
from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent import server as server_mod
from vmetal_ironic.dhcp_agent import lease_cache
from vmetal_ironic.dhcp_agent import shared_range
from vmetal_ironic.store import base
from vmetal_ironic.store import local

SERVER = '192.0.2.1'
FIRST = int.from_bytes(socket.inet_aton('192.0.2.200'), 'big')
MAC = '52:54:00:00:30:01'


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def _agent(tmp_path, clock=None, size=4, busy_timeout=None):
    store = local.LocalStore(path=str(tmp_path / 'v.sqlite'),
                             busy_timeout=busy_timeout)
    metrics = metrics_mod.Metrics()
    reservations = cache_mod.ReservationCache()
    shared = shared_range.SharedRange(
        store.inspection_leases(), FIRST, FIRST + size - 1, reservations,
        metrics, gateway='192.0.2.254', lease_time=60, clock_skew=5,
        clock=clock or Clock())
    server = server_mod.DhcpServer(
        None, m.Settings(server_address=socket.inet_aton(SERVER)),
        reservations, metrics, shared=shared)
    reservations.on_load = server.prepare
    return store, shared, server, metrics


def _value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0


def _type(result):
    return None if result is None else helpers.options_of(
        result[0])[1]['message-type']


def test_candidates_start_at_the_macs_place_and_skip_held_addresses():
    one = lease_cache.candidates(MAC, FIRST, FIRST + 9, set())
    assert one == lease_cache.candidates(MAC, FIRST, FIRST + 9, set())
    assert len(one) == 10 and len(set(one)) == 10
    first = int.from_bytes(socket.inet_aton(one[0]), 'big')
    assert first not in {int.from_bytes(socket.inet_aton(a), 'big')
                         for a in lease_cache.candidates(
                             MAC, FIRST, FIRST + 9, {first})}
    assert len(lease_cache.candidates(MAC, FIRST, FIRST + 999, set(),
                                       limit=5)) == 5
    assert lease_cache.candidates(MAC, FIRST, FIRST, {FIRST}) == []


def _lease(key, mac, address, version='1'):
    return base.InspectionLease(mac=mac, address=address, expires=0.0,
                                version=version, key=key)


def test_a_mac_with_two_leases_is_served_only_the_confirmed_one():
    cache = lease_cache.LeaseCache(lambda lease: lease.address)
    seen = []
    cache.on_change = seen.extend
    cache.load(([_lease('a', MAC, '192.0.2.200'),
                 _lease('b', MAC, '192.0.2.201')], {}), 1)
    assert cache.get(MAC) is None and seen == []
    cache.confirm(_lease('b', MAC, '192.0.2.201'))
    assert cache.get(MAC) == '192.0.2.201' and seen == [MAC]
    # The loser's claim goes; the winner stays.
    cache.apply([base.LeaseChange(2, removed='a')])
    assert cache.get(MAC) == '192.0.2.201'
    cache.apply([base.LeaseChange(3, removed='b')])
    assert cache.get(MAC) is None and len(cache) == 0


def test_serving_names_the_addresses_leased_now():
    """What the bridge's callback proxy asks: is a lease served at this
    address now (not declined, not expired, not gone)?"""
    cache = lease_cache.LeaseCache(lambda lease: lease.address)
    other = '52:54:00:00:00:02'
    lease = dataclasses.replace(_lease('a', MAC, '192.0.2.200'),
                                expires=1000.0)
    declined = dataclasses.replace(_lease('b', other, '192.0.2.201'),
                                   expires=1000.0, declined=True)
    cache.load(([lease, declined], {}), 1)
    assert cache.serving('192.0.2.200', 999.0)
    assert not cache.serving('192.0.2.200', 1000.0)     # expired
    assert not cache.serving('192.0.2.201', 999.0)      # declined
    assert not cache.serving('192.0.2.202', 999.0)      # nobody's
    # The MAC moves to another address: the old one is nobody's.
    cache.apply([base.LeaseChange(2, removed='a'), base.LeaseChange(
        3, changed=dataclasses.replace(lease, key='c',
                                       address='192.0.2.203'))])
    assert not cache.serving('192.0.2.200', 999.0)
    assert cache.serving('192.0.2.203', 999.0)
    cache.rebuild()
    assert cache.serving('192.0.2.203', 999.0)
    cache.apply([base.LeaseChange(4, removed='c')])
    assert not cache.serving('192.0.2.203', 999.0)


def test_an_unknown_discover_is_claimed_off_the_packet_path(tmp_path):
    store, shared, server, metrics = _agent(tmp_path)
    discover = helpers.packet('discover', mac=MAC)
    # The packet path claims nothing itself: the DISCOVER waits.
    assert server.handle(discover) is None
    assert store.inspection_leases().snapshot()[1] == []
    assert _value(metrics, 'vmetal_dhcp_ignored_total',
                  reason='claiming inspection lease') == 1
    # The store thread's step.
    shared.run_safely('claim', MAC, None)
    assert list(shared.ready) == [MAC]
    [lease] = store.inspection_leases().snapshot()[1]
    assert _value(metrics, 'vmetal_dhcp_inspection_leases_total',
                  event='claimed') == 1
    reply, options = helpers.options_of(server.handle(discover)[0])
    assert options['message-type'] == 2
    assert reply.yiaddr == lease.address
    assert options['router'] == '192.0.2.254'
    request = helpers.packet('request', mac=MAC, options=[
        ('server_id', SERVER), ('requested_addr', lease.address)])
    assert _type(server.handle(request)) == 5
    store.close()


def test_renewal_at_half_lease_then_expiry_then_reclaim(tmp_path):
    clock = Clock()
    store, shared, _server, metrics = _agent(tmp_path, clock, size=1)
    shared.run_safely('claim', MAC, None)
    lease = shared.cache.lease(MAC)
    # An ACK before half the lease: no write.
    shared.acknowledged(MAC)
    assert shared.claimer._queue.qsize() == 0
    clock.now += 31
    shared.acknowledged(MAC)
    kind, mac, queued = shared.claimer._queue.get_nowait()
    shared.run_safely(kind, mac, queued)
    renewed = shared.cache.lease(MAC)
    assert renewed.expires == clock.now + 60 and renewed.version != (
        lease.version)
    assert _value(metrics, 'vmetal_dhcp_inspection_leases_total',
                  event='renewed') == 1
    # The range (one address) is full for another MAC.
    shared.run_safely('claim', '52:54:00:00:30:02', None)
    assert _value(metrics, 'vmetal_dhcp_inspection_leases_total',
                  event='refused') == 1
    # Past expiry plus the skew grace, a sweep takes it back.
    clock.now += 60 + 4
    shared.run_safely('sweep', None, None)
    assert shared.cache.lease(MAC) is not None
    clock.now += 2
    shared.run_safely('sweep', None, None)
    assert shared.cache.lease(MAC) is None
    assert _value(metrics, 'vmetal_dhcp_inspection_leases_total',
                  event='expired') == 1
    shared.run_safely('claim', '52:54:00:00:30:02', None)
    assert shared.cache.lease('52:54:00:00:30:02').address == '192.0.2.200'
    store.close()


def test_a_reservation_wins_and_the_lease_goes(tmp_path):
    store, shared, server, metrics = _agent(tmp_path)
    shared.run_safely('claim', MAC, None)
    server.cache.load([res.Reservation(mac=MAC, address='192.0.2.10',
                                       prefixlen=24)], 1)
    reply, _ = helpers.options_of(server.handle(
        helpers.packet('discover', mac=MAC))[0])
    assert reply.yiaddr == '192.0.2.10'
    shared.run_safely('sweep', None, None)
    assert store.inspection_leases().snapshot()[1] == []
    assert _value(metrics, 'vmetal_dhcp_inspection_leases_total',
                  event='withdrawn') == 1
    # A reserved address is never claimed for another MAC.
    server.cache.load([res.Reservation(mac=MAC, address='192.0.2.200',
                                       prefixlen=24)], 2)
    shared.run_safely('claim', '52:54:00:00:30:02', None)
    assert shared.cache.lease('52:54:00:00:30:02').address != '192.0.2.200'
    store.close()


def test_a_release_gives_the_address_back(tmp_path):
    store, shared, server, metrics = _agent(tmp_path)
    shared.run_safely('claim', MAC, None)
    lease = shared.cache.lease(MAC)
    server.handle(helpers.packet('release', mac=MAC, ciaddr=lease.address,
                                 options=[('server_id', SERVER)]))
    kind, mac, queued = shared.claimer._queue.get_nowait()
    assert kind == 'release'
    shared.run_safely(kind, mac, queued)
    assert store.inspection_leases().snapshot()[1] == []
    assert _value(metrics, 'vmetal_dhcp_inspection_leases_total',
                  event='released') == 1
    store.close()


def test_a_stuck_store_is_counted_and_the_thread_goes_on(tmp_path):
    store, shared, _server, metrics = _agent(tmp_path, busy_timeout=0.1)
    with store_lock.held(tmp_path / 'v.sqlite'):
        shared.run_safely('claim', MAC, None)
    assert _value(metrics, 'vmetal_dhcp_inspection_store_errors_total',
                  kind='claim') == 1
    shared.run_safely('claim', MAC, None)
    assert shared.cache.lease(MAC) is not None
    store.close()


def test_a_bad_lease_in_the_store_is_skipped_and_counted(tmp_path):
    store, shared, _server, metrics = _agent(tmp_path)
    shared.run_safely('claim', MAC, None)
    db = sqlite3.connect(str(tmp_path / 'v.sqlite'))
    db.execute("INSERT INTO allocations (scope, address, pool, owner, mac, "
               "purpose, created_at, expires) VALUES ('default', ?, "
               "'inspection', 'Machine/ns/x', '52:54:00:00:30:09', "
               "'inspection', 0, 1)", (FIRST + 3,))
    db.commit()
    db.close()
    assert shared.feed.refresh(force=True)
    assert shared.cache.get(MAC) is not None
    assert shared.cache.get('52:54:00:00:30:09') is None
    assert _value(metrics, 'vmetal_dhcp_inspection_leases_skipped') == 1
    store.close()


def test_a_decline_holds_the_address_and_the_host_gets_another(tmp_path):
    store, shared, server, metrics = _agent(tmp_path)
    shared.run_safely('claim', MAC, None)
    lease = shared.cache.lease(MAC)
    server.handle(helpers.packet('decline', mac=MAC, options=[
        ('server_id', SERVER), ('requested_addr', lease.address)]))
    kind, mac, queued = shared.claimer._queue.get_nowait()
    assert kind == 'decline'
    shared.run_safely(kind, mac, queued)
    assert _value(metrics, 'vmetal_dhcp_inspection_leases_total',
                  event='declined') == 1
    # Not served any more; the next DISCOVER claims another address.
    assert server.handle(helpers.packet('discover', mac=MAC)) is None
    shared.run_safely('claim', MAC, None)
    assert shared.cache.lease(MAC).address != lease.address
    assert lease_cache.address_int(lease.address) in shared.cache.held
    store.close()


def _lease_time(result):
    return helpers.options_of(result[0])[1]['lease_time']


def _run_queued(shared):
    kind, mac, queued = shared.claimer._queue.get_nowait()
    shared.claimer._queued.discard((kind, mac))
    shared.run_safely(kind, mac, queued)
    return kind, mac


def test_replies_never_promise_more_than_the_store_holds(tmp_path):
    """Review finding 3, its reproduction: lease 60 s, skew 5 s, the store
    down from t=34 to t=68. Every ACK ends no later than the stored lease
    (the client's lease is over at t=60, before the sweep may free the
    address at t=65), and a REQUEST the store cannot back gets silence."""
    clock = Clock()
    store, shared, server, metrics = _agent(tmp_path, clock, size=1,
                                            busy_timeout=0.05)
    shared.run_safely('claim', MAC, None)
    stored = shared.cache.lease(MAC).expires
    address = shared.cache.lease(MAC).address
    renewing = helpers.packet('request', mac=MAC, ciaddr=address)
    clock.now += 35
    with store_lock.held(tmp_path / 'v.sqlite'):
        result = server.handle(renewing)
        assert _lease_time(result) == 25     # what is left, not 60
        assert clock.now + _lease_time(result) <= stored
        assert _run_queued(shared) == ('renew', MAC)  # refused: store down
        assert _value(metrics, 'vmetal_dhcp_inspection_store_errors_total',
                      kind='renew') == 1
        clock.now += 30                       # t=65: nothing left
        assert server.handle(renewing) is None
        assert _value(metrics, 'vmetal_dhcp_ignored_total',
                      reason='inspection lease not held in the store') == 1
    store.close()


def test_a_failed_renewal_is_retried_by_the_sweep(tmp_path):
    clock = Clock()
    store, shared, server, _metrics = _agent(tmp_path, clock, size=1,
                                             busy_timeout=0.05)
    shared.run_safely('claim', MAC, None)
    address = shared.cache.lease(MAC).address
    renewing = helpers.packet('request', mac=MAC, ciaddr=address)
    clock.now += 35
    with store_lock.held(tmp_path / 'v.sqlite'):
        assert _lease_time(server.handle(renewing)) == 25
        _run_queued(shared)                   # refused: the store is down
    clock.now += 5                            # the store is back
    shared.run_safely('sweep', None, None)
    assert _run_queued(shared) == ('renew', MAC)
    assert shared.cache.lease(MAC).expires == clock.now + 60
    assert _lease_time(server.handle(renewing)) == 60
    store.close()


def test_a_discover_holds_its_address_briefly_until_a_request(tmp_path):
    """Review finding 15: a DISCOVER nobody follows up pins its address
    for the offer hold (plus the skew), not for a whole lease."""
    clock = Clock()
    store, shared, server, _metrics = _agent(tmp_path, clock, size=1)
    shared.offer_hold = 10
    shared.run_safely('claim', MAC, None)
    lease = shared.cache.lease(MAC)
    assert lease.expires == clock.now + 10
    offer = server.handle(helpers.packet('discover', mac=MAC))
    assert _lease_time(offer) == 10
    request = helpers.packet('request', mac=MAC, options=[
        ('server_id', SERVER), ('requested_addr', lease.address)])
    assert _lease_time(server.handle(request)) == 10
    _run_queued(shared)
    assert shared.cache.lease(MAC).expires == clock.now + 60
    # An offer nobody requested: gone after hold + skew.
    other = '52:54:00:00:30:02'
    clock.now += 61 + 5 + 1
    shared.run_safely('sweep', None, None)
    shared.run_safely('claim', other, None)
    assert shared.cache.lease(other).expires == clock.now + 10
    clock.now += 10 + 5 + 1
    shared.run_safely('sweep', None, None)
    assert shared.cache.lease(other) is None
    store.close()


def test_a_full_range_refuses_new_macs_without_looking(tmp_path,
                                                       monkeypatch):
    """Review finding 15: once a claim found the range full, the next new
    MACs are refused without building the held set or walking the range,
    until a lease goes away."""
    clock = Clock()
    store, shared, _server, metrics = _agent(tmp_path, clock, size=1)
    shared.run_safely('claim', MAC, None)
    walks = []
    real = lease_cache.candidates
    monkeypatch.setattr(lease_cache, 'candidates',
                        lambda *a, **k: walks.append(1) or real(*a, **k))
    for n in range(50):
        shared.run_safely('claim', f'52:54:00:00:31:{n:02x}', None)
    assert len(walks) == 1
    assert _value(metrics, 'vmetal_dhcp_inspection_leases_total',
                  event='refused') == 50
    clock.now += 60 + 6
    shared.run_safely('sweep', None, None)  # the lease goes
    shared.run_safely('claim', '52:54:00:00:32:01', None)
    assert len(walks) == 2
    assert shared.cache.lease('52:54:00:00:32:01') is not None
    store.close()


def test_renewals_are_queued_even_when_claims_fill_the_queue(tmp_path):
    clock = Clock()
    store, shared, _server, _metrics = _agent(tmp_path, clock)
    shared.run_safely('claim', MAC, None)
    for n in range(shared_range.MAX_QUEUED):
        assert shared.claimer.put('claim', f'02:00:00:00:{n >> 8:02x}:'
                                           f'{n & 0xff:02x}')
    assert not shared.claimer.put('claim', '02:00:00:ff:ff:ff')
    clock.now += 31
    shared.acknowledged(MAC)
    assert ('renew', MAC) in shared.claimer._queued
    store.close()


class _Squatted:
    """Stands in for the L2: the functional test has a real host answer
    ARP (test_dhcp_agent_hostile.py); here only the claim logic."""

    def __init__(self, *addresses):
        self.addresses = set(addresses)
        self.asked = []

    def in_use(self, address):
        self.asked.append(address)
        return address in self.addresses


def test_an_address_in_use_on_the_l2_is_held_and_another_claimed(tmp_path):
    store, shared, _server, metrics = _agent(tmp_path, size=4)
    first = lease_cache.candidates(MAC, FIRST, FIRST + 3, set())[0]
    shared.probe = _Squatted(first)
    shared.run_safely('claim', MAC, None)
    lease = shared.cache.lease(MAC)
    assert lease is not None and lease.address != first
    assert shared.probe.asked == [first, lease.address]
    assert _value(metrics, 'vmetal_dhcp_inspection_leases_total',
                  event='conflict') == 1
    held = {(item.address, item.declined)
            for item in store.inspection_leases().snapshot()[1]}
    assert (first, True) in held
    store.close()


def test_the_probe_is_opened_again_on_a_recreated_interface(tmp_path):
    store, shared, _server, _metrics = _agent(tmp_path)
    calls = []

    class _Probe(_Squatted):
        interface = 'prov0'

        def open(self):
            calls.append('open')

        def close(self):
            calls.append('close')

    shared.probe = _Probe()
    shared.reopen_probe()
    assert calls == ['close', 'open']

    def refuse():
        raise PermissionError(1, 'Operation not permitted')
    shared.probe.open = refuse
    shared.reopen_probe()           # said once, claims go on unprobed
    assert shared.probe is None
    store.close()
