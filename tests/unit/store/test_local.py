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
    store.allocate(POOL, 'a')
    store.allocate(POOL, 'b')
    store.save_network_data('a', {'links': []})
    released = store.release('a')
    assert released.address == '192.0.2.2'
    assert store.get_network_data('a') is None
    assert store.release('a') is None
    assert store.allocate(POOL, 'c').address == '192.0.2.2'


def test_pools_on_one_network_share_addresses(store):
    wide = ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.2-192.0.2.9')
    narrow = ipam_pool.parse_pool('192.0.2.1/24', '192.0.2.2-192.0.2.3')
    assert store.allocate(wide, 'a').address == '192.0.2.2'
    assert store.allocate(narrow, 'b').address == '192.0.2.3'
    with pytest.raises(errors.PoolExhausted) as info:
        store.allocate(narrow, 'c')
    assert 'all ranges exhausted; no free addresses left' in str(info.value)
    assert [a.owner for a in store.list_allocations('192.0.2.0/24')] == ['a', 'b']


def test_exhaustion_writes_nothing(store):
    tiny = ipam_pool.parse_pool('192.0.2.1/30')
    store.allocate(tiny, 'a')
    with pytest.raises(errors.PoolExhausted) as info:
        store.allocate(tiny, 'b')
    assert str(info.value) == (
        'pool 192.0.2.0/30: CIDR exhausted; no free addresses left')
    assert store.get_allocation('b') is None
    assert len(store.list_allocations()) == 1


def test_owner_in_another_pool_is_refused(store):
    store.allocate(POOL, 'a')
    other = ipam_pool.parse_pool('198.51.100.1/24')
    with pytest.raises(errors.OwnerElsewhere) as info:
        store.allocate(other, 'a')
    assert str(
                info.value) == ("owner 'a' already holds 192.0.2.2 in pool 192.0.2.0/24, which "
            'pool 198.51.100.0/24 may not hand out; release it first')


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


def test_corrupt_reservation_row_is_skipped(store, tmp_path):
    store.publish_reservation(reservation_mod.Reservation(
        mac='52:54:00:00:00:02', address='192.0.2.3', prefixlen=24))
    raw = sqlite3.connect(store.path)
    raw.execute("INSERT INTO reservations VALUES ('x', '{\"mac\": 1}', 0)")
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
            busy.allocate(POOL, 'a')
        assert 'stayed locked for 0.2s' in str(info.value)
    finally:
        holder.execute('ROLLBACK')
        holder.close()
    assert busy.allocate(POOL, 'a').address == '192.0.2.2'


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
    store.allocate(POOL, 'victim')


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
    assert store.allocate(POOL, 'next').address == '192.0.2.2'
