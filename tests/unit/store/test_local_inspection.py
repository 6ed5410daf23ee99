"""Inspection leases of the local store: rows of the allocations table,
so SQLite's keys keep one lease per MAC and one holder per address."""

import multiprocessing
import sqlite3
import time

from vmetal_ironic.dhcp_agent import lease_cache
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.store import local

FIRST = int.from_bytes(bytes([192, 0, 2, 200]), 'big')


def _store(path):
    return local.LocalStore(path=str(path))


def test_claim_renew_remove_compare_versions(tmp_path):
    store = _store(tmp_path / 'v.sqlite')
    book = store.inspection_leases()
    lease, taken, created = book.claim('52:54:00:00:10:01',
                                       ['192.0.2.200', '192.0.2.201'],
                                       time.time() + 60)
    assert (lease.address, taken, created) == ('192.0.2.200', [], True)
    # The same MAC again (another agent heard its DISCOVER): same lease.
    again, _, created = book.claim('52:54:00:00:10:01', ['192.0.2.201'],
                                   time.time() + 60)
    assert again == lease and not created
    other, taken, _ = book.claim('52:54:00:00:10:02',
                                 ['192.0.2.200', '192.0.2.201'],
                                 time.time() + 60)
    # Another MAC's lease is not "taken": the agents' feed shows it.
    assert (other.address, taken) == ('192.0.2.201', [])
    renewed = book.renew(lease, time.time() + 600)
    assert renewed.version != lease.version
    assert book.remove(lease) is False          # renewed since
    assert book.renew(lease, time.time()) is None
    assert book.remove(renewed) is True
    revision, leases, rejected = book.snapshot()
    assert [found.mac for found in leases] == ['52:54:00:00:10:02']
    assert rejected == {} and revision >= 4
    store.close()


def test_a_pool_allocation_goes_around_leases_and_leases_around_it(tmp_path):
    store = _store(tmp_path / 'v.sqlite')
    pool = ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.200-192.0.2.201')
    book = store.inspection_leases()
    lease, _, _ = book.claim('52:54:00:00:10:01', ['192.0.2.200'],
                             time.time() + 60)
    assert store.allocate(pool, 'Machine/ns/m').address == '192.0.2.201'
    refused, taken, _ = book.claim('52:54:00:00:10:02',
                                   ['192.0.2.200', '192.0.2.201'],
                                   time.time() + 60)
    # Only the pool allocation is reported: the lease is in the feed.
    assert refused is None and taken == ['192.0.2.201']
    # Leases are not allocations.
    assert [a.owner for a in store.list_allocations()] == ['Machine/ns/m']
    assert lease.address == '192.0.2.200'
    store.close()


def test_a_bad_row_is_rejected_with_its_reason(tmp_path):
    path = tmp_path / 'v.sqlite'
    store = _store(path)
    book = store.inspection_leases()
    book.claim('52:54:00:00:10:01', ['192.0.2.200'], time.time() + 60)
    db = sqlite3.connect(str(path))
    db.execute("INSERT INTO allocations (scope, address, pool, owner, mac, "
               "purpose, created_at, expires) VALUES ('default', ?, "
               "'inspection', 'Inspection/zz', 'zz', 'inspection', 0, 1)",
               (FIRST + 5,))
    db.commit()
    db.close()
    _, leases, rejected = book.snapshot()
    assert [lease.address for lease in leases] == ['192.0.2.200']
    assert list(rejected) == ['default.192.0.2.205']
    assert "'zz'" in rejected['default.192.0.2.205']
    store.close()


def test_an_old_database_gains_the_lease_columns(tmp_path):
    path = tmp_path / 'v.sqlite'
    db = sqlite3.connect(str(path))
    db.execute('CREATE TABLE allocations (scope TEXT NOT NULL, address '
               'INTEGER NOT NULL, pool TEXT NOT NULL, owner TEXT NOT NULL '
               "UNIQUE, mac TEXT, purpose TEXT NOT NULL DEFAULT 'allocation',"
               ' created_at REAL NOT NULL, PRIMARY KEY (scope, address))')
    db.execute("INSERT INTO allocations VALUES ('default', ?, '192.0.2.0/24', "
               "'Machine/ns/m', NULL, 'allocation', 0)", (FIRST,))
    db.commit()
    db.close()
    store = _store(path)
    lease, taken, _ = store.inspection_leases().claim(
        '52:54:00:00:10:01', ['192.0.2.200', '192.0.2.201'], time.time() + 9)
    assert (lease.address, taken) == ('192.0.2.201', ['192.0.2.200'])
    assert [a.owner for a in store.list_allocations()] == ['Machine/ns/m']
    store.close()


def _claim_all(path, macs, ready, go, queue):
    store = _store(path)
    ready.put(1)
    go.wait(30)
    got = []
    for mac in macs:
        lease, _, created = store.inspection_leases().claim(
            mac, lease_cache.candidates(mac, FIRST, FIRST + 15, set()),
            time.time() + 60)
        got.append((mac, lease.address if lease else None, created))
    queue.put(got)
    store.close()


def test_agents_racing_on_one_database_never_share_an_address(tmp_path):
    """Four processes released together claim for the same twelve MACs,
    each in another order, in a range of 16."""
    path = str(tmp_path / 'v.sqlite')
    _store(path).close()
    macs = [f'52:54:00:00:20:{i:02x}' for i in range(12)]
    ctx = multiprocessing.get_context('fork')
    ready, go, queue = ctx.Queue(), ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_claim_all, args=(
        path, macs[w:] + macs[:w], ready, go, queue)) for w in range(4)]
    for proc in workers:
        proc.start()
    for _ in workers:
        ready.get(timeout=60)
    go.set()
    results = [queue.get(timeout=60) for _ in workers]
    for proc in workers:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    by_mac = {}
    for got in results:
        for mac, address, _ in got:
            by_mac.setdefault(mac, set()).add(address)
    assert all(len(found) == 1 and None not in found
               for found in by_mac.values())
    addresses = [found.pop() for found in by_mac.values()]
    assert len(set(addresses)) == len(macs)
    created = sorted(mac for got in results for mac, _, made in got if made)
    assert created == sorted(macs)


def test_a_declined_address_is_held_for_nobody_and_the_mac_moves(tmp_path):
    store = _store(tmp_path / 'v.sqlite')
    book = store.inspection_leases()
    mac = '52:54:00:00:10:01'
    lease, _, _ = book.claim(mac, ['192.0.2.200', '192.0.2.201'],
                             time.time() + 60)
    declined = book.decline(lease, time.time() + 60)
    assert declined.declined and declined.address == '192.0.2.200'
    assert book.decline(lease, time.time() + 60) is None    # old version
    # The MAC gets another address; the declined one is nobody's.
    again, taken, created = book.claim(mac, ['192.0.2.200', '192.0.2.201'],
                                       time.time() + 60)
    assert (again.address, taken, created) == ('192.0.2.201', [], True)
    _, leases, rejected = book.snapshot()
    assert rejected == {}
    assert sorted((lease.address, lease.declined) for lease in leases) == [
        ('192.0.2.200', True), ('192.0.2.201', False)]
    assert book.remove(declined) is True
    store.close()


def test_pool_allocations_see_leases_come_and_go(tmp_path):
    # The conductor's copy of the held addresses must follow the agent's
    # leases (another process on the same file): never a leased address,
    # and a removed lease's address offered again.
    from vmetal_ironic.ipam import pool as ipam_pool

    path = str(tmp_path / 'vmetal.sqlite')
    conductor, agent = local.LocalStore(path=path), local.LocalStore(path=path)
    pool = ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.10-192.0.2.12')
    try:
        assert conductor.allocate(pool, 'Machine/t/a').address == '192.0.2.10'
        leases = agent.inspection_leases()
        lease, _, created = leases.claim('52:54:00:00:00:01', ['192.0.2.11'],
                                         time.time() + 60)
        assert created
        assert conductor.allocate(pool, 'Machine/t/b').address == '192.0.2.12'
        assert leases.remove(lease)
        conductor.release('Machine/t/b')
        assert conductor.allocate(pool, 'Machine/t/c').address == '192.0.2.11'
    finally:
        conductor.close()
        agent.close()
