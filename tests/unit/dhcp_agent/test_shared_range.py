"""The agent's side of the shared inspection range, on a real (SQLite)
store: the packet path only reads the cache and queues work; the store
thread's work, run here one step at a time, claims, renews and takes
leases back."""

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
