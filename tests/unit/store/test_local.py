import contextlib
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess

import pytest

from vmetal_ironic import exception
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.ipam import errors
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.store import local


@pytest.fixture
def store(tmp_path):
    db = local.LocalStore(path=str(tmp_path / 'state' / 'vmetal.sqlite'))
    yield db
    db.close()


POOL = ipam_pool.parse_pool('192.0.2.1/24')


def test_allocate_is_idempotent_per_owner(store):
    first = store.allocate(POOL, 'Machine/ns/a', mac='52:54:00:00:00:01')
    again = store.allocate(POOL, 'Machine/ns/a')
    other = store.allocate(POOL, 'Machine/ns/b')
    assert first.address == again.address == '192.0.2.2'
    assert again.mac == '52:54:00:00:00:01'
    assert other.address == '192.0.2.3'
    assert store.get_allocation('Machine/ns/a') == first


def test_release_frees_for_reuse_and_is_idempotent(store):
    store.allocate(POOL, 'Machine/t/a')
    store.allocate(POOL, 'Machine/t/b')
    store.save_network_data('Machine/t/a', {'links': []})
    released = store.release('Machine/t/a')
    assert released.address == '192.0.2.2'
    assert store.get_network_data('Machine/t/a') is None
    assert store.release('Machine/t/a') is None
    assert store.allocate(POOL, 'Machine/t/c').address == '192.0.2.2'


def test_pools_on_one_network_share_addresses(store):
    wide = ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.2-192.0.2.9')
    narrow = ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.2-192.0.2.3')
    assert store.allocate(wide, 'Machine/t/a').address == '192.0.2.2'
    assert store.allocate(narrow, 'Machine/t/b').address == '192.0.2.3'
    with pytest.raises(errors.PoolExhausted) as info:
        store.allocate(narrow, 'Machine/t/c')
    assert 'all ranges exhausted; no free addresses left' in str(info.value)
    assert [a.owner for a in store.list_allocations('192.0.2.0/24')] == [
        'Machine/t/a', 'Machine/t/b']


def test_exhaustion_writes_nothing(store):
    tiny = ipam_pool.parse_pool('192.0.2.1/30')
    store.allocate(tiny, 'Machine/t/a')
    with pytest.raises(errors.PoolExhausted) as info:
        store.allocate(tiny, 'Machine/t/b')
    assert str(info.value) == (
        'pool 192.0.2.0/30: CIDR exhausted; no free addresses left')
    assert store.get_allocation('Machine/t/b') is None
    assert len(store.list_allocations()) == 1


def test_owner_in_another_pool_is_refused(store):
    store.allocate(POOL, 'Machine/t/a')
    other = ipam_pool.parse_pool('198.51.100.1/24')
    with pytest.raises(errors.OwnerElsewhere) as info:
        store.allocate(other, 'Machine/t/a')
    assert str(info.value) == (
        "owner 'Machine/t/a' already holds 192.0.2.2 in pool 192.0.2.0/24, "
        'which pool 198.51.100.0/24 may not hand out; release it first')


def test_empty_owner_is_refused(store):
    with pytest.raises(exception.InvalidProperty):
        store.allocate(POOL, '  ')


def test_reservations_round_trip_and_revision(store):
    assert store.reservations_revision() == 0
    res = reservation_mod.Reservation(
        mac='52:54:00:00:00:01', address='192.0.2.2', prefixlen=24,
        gateway='192.0.2.1', dns_servers=('192.0.2.53',), node='uuid',
        boot=reservation_mod.BootOptions(bootfile='undionly.kpxe'))
    store.publish_reservation(res)
    first = store.reservations_revision()
    assert store.list_reservations() == [res]
    assert store.withdraw_reservation(res.mac)
    assert store.reservations_revision() > first
    assert not store.withdraw_reservation(res.mac)
    assert store.list_reservations() == []


def test_many_reservations_published_the_last_for_a_mac_winning(store):
    def res(mac, address):
        return reservation_mod.Reservation(mac=mac, address=address,
                                           prefixlen=24)
    published = store.publish_reservations([
        (res('52:54:00:00:00:01', '192.0.2.2'), None),
        (res('52:54:00:00:00:02', '192.0.2.3'), 'Machine/ns/b'),
        (res('52:54:00:00:00:01', '192.0.2.4'), None)])
    assert (published.count, published.skipped) == (2, ())
    assert [(r.mac, r.address) for r in store.list_reservations()] == [
        ('52:54:00:00:00:01', '192.0.2.4'), ('52:54:00:00:00:02', '192.0.2.3')]


def test_corrupt_reservation_row_is_skipped(store, tmp_path):
    store.publish_reservation(reservation_mod.Reservation(
        mac='52:54:00:00:00:02', address='192.0.2.3', prefixlen=24))
    raw = sqlite3.connect(store.path)
    raw.execute('INSERT INTO reservations (mac, document, updated_at) '
                "VALUES ('x', '{\"mac\": 1}', 0)")
    raw.commit()
    raw.close()
    assert [r.mac for r in store.list_reservations()] == ['52:54:00:00:00:02']


def test_unopenable_database_is_a_clear_error(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(exception.DeploymentError) as info:
        local.LocalStore(path=str(blocker / 'vmetal.sqlite'))
    assert f"local store '{blocker}/vmetal.sqlite' cannot be opened" in str(
        info.value)


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / 'junk.sqlite'
    path.write_bytes(b'this is not sqlite' * 100)
    with pytest.raises(exception.DeploymentError) as info:
        local.LocalStore(path=str(path))
    assert str(path) in str(info.value)


@contextlib.contextmanager
def _read_only(path):
    """Make ``path`` read-only for this process, for real: root ignores
    file modes, so as root the file is made immutable (ext4 attribute)."""
    if os.geteuid() == 0:
        if shutil.which('chattr') is None or subprocess.run(
                ['chattr', '+i', path], capture_output=True,
                check=False).returncode:
            pytest.skip('this file system cannot make a file immutable')
        try:
            yield
        finally:
            subprocess.run(['chattr', '-i', path], check=True)
    else:
        os.chmod(path, 0o444)
        try:
            yield
        finally:
            os.chmod(path, 0o644)


def test_read_only_database_is_deployment_trouble(tmp_path):
    path = str(tmp_path / 'vmetal.sqlite')
    local.LocalStore(path=path).close()
    with _read_only(path):
        store = local.LocalStore(path=path)
        try:
            with pytest.raises(exception.DeploymentError) as info:
                store.allocate(ipam_pool.parse_pool('192.0.2.1/24', None),
                               'Node/a')
            assert not isinstance(info.value, exception.PermanentError)
            assert str(info.value) == (
                f'local store {path!r} failed: attempt to write a readonly '
                'database; make the file, its directory and its -wal/-shm '
                'files writable by this process')
            # Reading still works, and nothing was half written.
            assert store.list_allocations() == []
        finally:
            store.close()


def test_locked_database_is_a_temporary_error(tmp_path):
    path = str(tmp_path / 'vmetal.sqlite')
    local.LocalStore(path=path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute('BEGIN IMMEDIATE')
    try:
        busy = local.LocalStore(path=path, busy_timeout=0.2)
        with pytest.raises(exception.StoreUnavailable) as info:
            busy.allocate(POOL, 'Machine/t/a')
        assert 'stayed locked for 0.2s' in str(info.value)
    finally:
        holder.execute('ROLLBACK')
        holder.close()
    assert busy.allocate(POOL, 'Machine/t/a').address == '192.0.2.2'


def _allocate_many(path, worker, count, queue):
    store = local.LocalStore(path=path)
    got = []
    for index in range(count):
        got.append((f'Machine/w{worker}/{index}',
                    store.allocate(POOL_BIG, f'Machine/w{worker}/{index}').address))
    store.close()
    queue.put(got)


POOL_BIG = ipam_pool.parse_pool('198.18.0.1/22')


def test_eight_processes_never_share_an_address(tmp_path):
    path = str(tmp_path / 'vmetal.sqlite')
    local.LocalStore(path=path).close()
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    workers = [ctx.Process(target=_allocate_many, args=(path, w, 100, queue))
               for w in range(8)]
    for proc in workers:
        proc.start()
    results = [queue.get(timeout=120) for _ in workers]
    for proc in workers:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    pairs = [pair for result in results for pair in result]
    addresses = [address for _, address in pairs]
    assert len(pairs) == 800
    assert len(set(addresses)) == 800
    store = local.LocalStore(path=path)
    stored = {a.owner: a.address for a in store.list_allocations()}
    assert stored == dict(pairs)
    # Lowest first: together they filled exactly the first 800 addresses.
    assert sorted(stored.values(), key=lambda a: tuple(map(int, a.split('.')))
                  )[-1] == '198.18.3.33'


def _crash_inside_transaction(path):
    store = local.LocalStore(path=path)
    real_execute_owner = store._transaction

    # A crash cannot be caused at an exact point in SQLite from outside, so
    # the process kills itself right after its INSERT, before COMMIT.
    import contextlib

    @contextlib.contextmanager
    def dying_transaction(write=True):
        with real_execute_owner(write) as db:
            yield db
            if write:
                os.kill(os.getpid(), signal.SIGKILL)

    store._transaction = dying_transaction
    store.allocate(POOL, 'Machine/t/victim')


def test_crash_between_steps_leaves_no_half_allocation(tmp_path):
    path = str(tmp_path / 'vmetal.sqlite')
    local.LocalStore(path=path).close()
    proc = multiprocessing.get_context('fork').Process(
        target=_crash_inside_transaction, args=(path,))
    proc.start()
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    store = local.LocalStore(path=path)
    assert store.list_allocations() == []
    assert store.allocate(POOL, 'Machine/t/next').address == '192.0.2.2'


# -- issue 9: one address, one holder, per L2 -------------------------------

def test_overlapping_pools_never_share_an_address(store):
    # The reproduction: a /24 and a /16 with one gateway.
    narrow = ipam_pool.parse_pool('198.18.0.1/24')
    wide = ipam_pool.parse_pool('198.18.0.1/16')
    first = store.allocate(narrow, 'Machine/t/a')
    second = store.allocate(wide, 'Machine/t/b')
    assert first.address == '198.18.0.2'
    assert second.address == '198.18.0.3'


def test_gateway_of_an_overlapping_pool_is_never_handed_out(store):
    store.allocate(ipam_pool.parse_pool('192.0.2.5/24', '192.0.2.100-'
                                        '192.0.2.110'), 'Machine/t/a')
    # A /23 whose gateway is .1: .5, the /24's gateway, is held too.
    wide = ipam_pool.parse_pool('192.0.2.1/23')
    got = [store.allocate(wide, f'Machine/t/h{n}').address for n in range(4)]
    assert got == ['192.0.2.2', '192.0.2.3', '192.0.2.4', '192.0.2.6']


def test_gateway_held_by_a_host_is_a_clear_error(store):
    store.allocate(POOL, 'Machine/t/a')  # 192.0.2.2
    with pytest.raises(errors.AddressTaken) as info:
        store.allocate(ipam_pool.parse_pool('192.0.2.2/24'), 'Machine/t/b')
    assert str(info.value) == (
        'gateway 192.0.2.2 of pool 192.0.2.0/24 is held by Machine/t/a; '
        'release that owner or change the pool')


def test_reserved_infrastructure_addresses_are_skipped(tmp_path):
    # The example: the agent on .3 and network-cidr .1/24.
    store = local.LocalStore(path=str(tmp_path / 'db.sqlite'),
                             reserved=['192.168.100.3'])
    pool = ipam_pool.parse_pool('192.168.100.1/24')
    got = [store.allocate(pool, f'Machine/t/h{n}').address for n in range(3)]
    assert got == ['192.168.100.2', '192.168.100.4', '192.168.100.5']
    with pytest.raises(errors.AddressTaken, match=r'192\.168\.100\.3'):
        store.hold('Machine/t/x', '192.168.100.3', 'network-data of x')


def test_custom_document_address_is_held_in_place_of_the_pool_one(store):
    store.allocate(POOL, 'Machine/t/a')  # 192.0.2.2
    held = store.hold('Machine/t/a', '192.0.2.9', 'network-data of a')
    assert held.address == '192.0.2.9'
    assert [a.address for a in store.list_allocations()] == ['192.0.2.9']
    # Nobody else gets it, from any pool; .2 is free again.
    assert store.allocate(POOL, 'Machine/t/b').address == '192.0.2.2'
    with pytest.raises(errors.AddressTaken) as info:
        store.hold('Machine/t/c', '192.0.2.9', 'network-data of c')
    assert str(info.value) == ('network-data of c names 192.0.2.9, which '
                               'Machine/t/a holds; choose another address')


def test_release_withdraws_reservations_of_owner_and_address(store):
    allocation = store.allocate(POOL, 'Machine/t/a')
    mine = reservation_mod.Reservation(
        mac='52:54:00:00:00:01', address=allocation.address, prefixlen=24)
    stale = reservation_mod.Reservation(
        mac='52:54:00:00:00:02', address=allocation.address, prefixlen=24)
    other = reservation_mod.Reservation(
        mac='52:54:00:00:00:03', address='192.0.2.200', prefixlen=24)
    store.publish_reservation(mine, owner='Machine/t/a')
    store.publish_reservation(stale)
    store.publish_reservation(other, owner='Machine/t/z')
    store.release('Machine/t/a')
    assert [r.mac for r in store.list_reservations()] == ['52:54:00:00:00:03']


def test_upgrade_keys_old_rows_by_address(tmp_path):
    # A database of the previous schema holding the duplicate the old
    # per-pool key allowed (issue 9 item 1).
    path = str(tmp_path / 'old.sqlite')
    raw = sqlite3.connect(path)
    raw.execute('CREATE TABLE allocations (pool TEXT NOT NULL, address '
                'INTEGER NOT NULL, owner TEXT NOT NULL UNIQUE, mac TEXT, '
                'created_at REAL NOT NULL, PRIMARY KEY (pool, address))')
    raw.execute('CREATE TABLE reservations (mac TEXT PRIMARY KEY, document '
                'TEXT NOT NULL, updated_at REAL NOT NULL)')
    for pool, owner, created in (('198.18.0.0/24', 'Machine/t/a', 1.0),
                                 ('198.18.0.0/16', 'Machine/t/b', 2.0)):
        raw.execute('INSERT INTO allocations VALUES (?, ?, ?, NULL, ?)',
                    (pool, 3323068418, owner, created))
    raw.commit()
    raw.close()
    store = local.LocalStore(path=path)
    assert [(a.owner, a.address) for a in store.list_allocations()] == [
        ('Machine/t/a', '198.18.0.2')]
    assert store.allocate(ipam_pool.parse_pool('198.18.0.1/16'),
                          'Machine/t/b').address == '198.18.0.3'


def _race_one(path, cidr, owners, gate):
    store = local.LocalStore(path=path)
    pool = ipam_pool.parse_pool(cidr)
    gate.wait()
    got = [(owner, store.allocate(pool, owner).address) for owner in owners]
    store.close()
    return got


def test_a_24_and_a_23_pool_racing_never_share_an_address(tmp_path):
    path = str(tmp_path / 'vmetal.sqlite')
    local.LocalStore(path=path).close()
    ctx = multiprocessing.get_context('fork')
    with ctx.Manager() as manager:
        gate = manager.Barrier(4)
        with ctx.Pool(4) as workers:
            jobs = [workers.apply_async(_race_one, (
                path, '192.0.2.1/24' if w % 2 else '192.0.2.1/23',
                [f'Machine/w{w}/{n}' for n in range(40)], gate))
                for w in range(4)]
            pairs = [pair for job in jobs for pair in job.get(timeout=120)]
    addresses = [address for _, address in pairs]
    assert len(addresses) == 160 == len(set(addresses))


def test_two_writers_interleaved_see_each_others_changes(tmp_path):
    # Two store objects on one file are two processes' copies of the held
    # addresses: each write of one must make the other read them again.
    path = str(tmp_path / 'vmetal.sqlite')
    first, second = local.LocalStore(path=path), local.LocalStore(path=path)
    try:
        assert first.allocate(POOL, 'Machine/t/a').address == '192.0.2.2'
        assert second.allocate(POOL, 'Machine/t/b').address == '192.0.2.3'
        assert first.allocate(POOL, 'Machine/t/c').address == '192.0.2.4'
        second.release('Machine/t/a')
        # The address the other one freed is offered again, lowest first.
        assert first.allocate(POOL, 'Machine/t/d').address == '192.0.2.2'
        first.release('Machine/t/b')
        assert first.allocate(POOL, 'Machine/t/e').address == '192.0.2.3'
        assert second.allocate(POOL, 'Machine/t/f').address == '192.0.2.5'
        held = [a.address for a in first.list_allocations()]
        assert len(held) == len(set(held)) == 4
    finally:
        first.close()
        second.close()


def test_a_writer_that_does_not_count_its_writes_is_still_refused(tmp_path):
    # An older version writing to the same file bumps no counter: the
    # table's key refuses the stale candidate and the copy is read again.
    path = str(tmp_path / 'vmetal.sqlite')
    store = local.LocalStore(path=path)
    try:
        assert store.allocate(POOL, 'Machine/t/a').address == '192.0.2.2'
        with contextlib.closing(sqlite3.connect(path)) as raw:
            raw.execute("INSERT INTO allocations (scope, address, pool, owner,"
                        " created_at) VALUES ('default', ?, '192.0.2.0/24', "
                        "'Machine/t/old', 0)", (3221225987,))  # 192.0.2.3
            raw.commit()
        assert store.allocate(POOL, 'Machine/t/b').address == '192.0.2.4'
        assert store.allocate(POOL, 'Machine/t/c').address == '192.0.2.5'
    finally:
        store.close()


def test_an_allocation_rolled_back_leaves_its_address_free(store):
    # The copy proposed 192.0.2.2 inside a transaction that then failed:
    # the next allocation must be offered it again.
    real = store._bump

    def failing_bump(db, name):
        if name == 'allocations':
            raise sqlite3.OperationalError('disk I/O error')
        return real(db, name)

    store._bump = failing_bump
    with pytest.raises(exception.DeploymentError):
        store.allocate(POOL, 'Machine/t/a')
    store._bump = real
    assert store.list_allocations() == []
    assert store.allocate(POOL, 'Machine/t/b').address == '192.0.2.2'
