from vmetal_ironic import exception
from vmetal_ironic import reservation as res
from vmetal_ironic.pxe import cache as cache_mod
from vmetal_ironic.store import local


def _reservation(mac, address):
    return res.Reservation(mac=mac, address=address, prefixlen=24)


def test_poller_loads_only_when_the_revision_moves(tmp_path):
    store = local.LocalStore(path=str(tmp_path / 'db.sqlite'))
    seen = []
    cache = cache_mod.ReservationCache(on_load=lambda b: seen.append(
        sorted(x.mac for x in b)))
    poller = cache_mod.RevisionPoller(store, cache)
    assert poller.refresh() is True
    assert len(cache) == 0
    assert poller.refresh() is False
    store.publish_reservation(_reservation('52:54:00:00:00:01',
                                           '192.0.2.10'))
    assert poller.refresh() is True
    assert cache.get('52:54:00:00:00:01').address == bytes([192, 0, 2, 10])
    assert cache.addresses == {bytes([192, 0, 2, 10])}
    assert seen == [[], ['52:54:00:00:00:01']]
    store.withdraw_reservation('52:54:00:00:00:01')
    assert poller.refresh() is True
    assert cache.get('52:54:00:00:00:01') is None
    assert poller.refresh(force=True) is True


def test_reservation_that_is_not_ipv4_is_skipped(tmp_path):
    cache = cache_mod.ReservationCache()
    cache.load([_reservation('52:54:00:00:00:01', '2001:db8::1'),
                _reservation('52:54:00:00:00:02', '192.0.2.11')], 7)
    assert len(cache) == 1 and cache.revision == 7


class _FlakyStore:
    """A store that can be made unreachable on demand.

    A stand-in on purpose: the SQLite store on a local file cannot be made
    unreachable the way a Kubernetes API server can, and the point is the
    cache's behaviour when reads fail.
    """

    def __init__(self):
        self.down = False
        self.revision = 1
        self.items = [_reservation('52:54:00:00:00:01', '192.0.2.10')]

    def reservations_revision(self):
        if self.down:
            raise exception.StoreUnavailable('apiserver unreachable')
        return self.revision

    def list_reservations(self):
        return list(self.items)

    def reservations_snapshot(self):
        return self.reservations_revision(), self.list_reservations()


def test_cache_serves_last_good_data_while_store_is_down():
    store = _FlakyStore()
    cache = cache_mod.ReservationCache()
    poller = cache_mod.RevisionPoller(store, cache)
    assert poller.refresh()
    store.down = True
    store.revision = 2
    assert poller.refresh() is False
    assert cache.stale and 'apiserver unreachable' in cache.last_error
    assert cache.get('52:54:00:00:00:01') is not None
    store.down = False
    store.items = []
    assert poller.refresh() is True
    assert not cache.stale and len(cache) == 0


def test_background_poller_thread_picks_up_changes(tmp_path):
    import time
    store = local.LocalStore(path=str(tmp_path / 'db.sqlite'))
    cache = cache_mod.ReservationCache()
    poller = cache_mod.RevisionPoller(store, cache, interval=0.05)
    poller.start()
    try:
        store.publish_reservation(_reservation('52:54:00:00:00:03',
                                               '192.0.2.13'))
        deadline = time.monotonic() + 5
        while cache.get('52:54:00:00:00:03') is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        poller.stop()


class _WatchingStore(_FlakyStore):
    """A store that reports changes, as a Kubernetes watch does; it can
    also expire the follower's position (410) or fail the follow, so the
    poller's answer to each can be observed. A stand-in on purpose: the
    real watch is exercised in tests/functional/k8s."""

    def __init__(self):
        super().__init__()
        import threading
        self.changed = threading.Condition()
        self.follows = []
        self.snapshots = 0
        self.expire = False
        self.fail = False
        self.log = []

    def reservations_snapshot(self):
        self.snapshots += 1
        return super().reservations_snapshot()

    def publish(self, item, revision):
        from vmetal_ironic.store import base
        with self.changed:
            self.items = [*self.items, item]
            self.revision = revision
            self.log.append(base.ReservationChange(revision, changed=item))
            self.changed.notify_all()

    def follow_reservations(self, revision, timeout):
        self.follows.append(revision)
        if self.expire:
            self.expire = False
            raise exception.RevisionExpired('410 Gone')
        if self.fail:
            raise exception.StoreUnavailable('watch refused')
        with self.changed:
            self.changed.wait_for(lambda: self.revision != revision, timeout)
            pending = [c for c in self.log if c.revision > revision]
        yield from pending


def _wait(predicate, seconds=5):
    import time
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_poller_follows_changes_from_the_snapshot_revision():
    store = _WatchingStore()
    cache = cache_mod.ReservationCache()
    # A long interval: only the followed change can be this quick.
    poller = cache_mod.RevisionPoller(store, cache, interval=30)
    poller.start()
    try:
        _wait(lambda: store.follows)
        assert store.follows[0] == 1 and store.snapshots == 1
        store.publish(_reservation('52:54:00:00:00:04', '192.0.2.14'), 2)
        _wait(lambda: cache.get('52:54:00:00:00:04') is not None)
        _wait(lambda: 2 in store.follows)
        # Followed, not read again.
        assert store.snapshots == 1 and cache.revision == 2
    finally:
        store.publish(_reservation('52:54:00:00:00:05', '192.0.2.15'), 3)
        poller.stop()


def test_expired_position_reads_a_snapshot_again():
    store = _WatchingStore()
    store.expire = True
    cache = cache_mod.ReservationCache()
    poller = cache_mod.RevisionPoller(store, cache, interval=30)
    poller.start()
    try:
        _wait(lambda: store.snapshots >= 2 and len(store.follows) >= 2)
        assert poller.degraded_count == 0
    finally:
        store.publish(_reservation('52:54:00:00:00:05', '192.0.2.15'), 3)
        poller.stop()


def test_failing_follow_is_reported_and_degrades_to_polling(caplog):
    store = _WatchingStore()
    store.fail = True
    cache = cache_mod.ReservationCache()
    poller = cache_mod.RevisionPoller(store, cache, interval=0.05)
    with caplog.at_level('WARNING', logger='vmetal_ironic.pxe.cache'):
        poller.start()
        try:
            store.items = [_reservation('52:54:00:00:00:06', '192.0.2.16')]
            store.revision = 9
            # Still served: the snapshot is read every interval instead.
            _wait(lambda: cache.get('52:54:00:00:00:06') is not None)
            _wait(lambda: poller.degraded_count >= 2)
            # Said once at WARNING, not once per failed attempt.
            warnings = [r for r in caplog.records
                        if r.levelname == 'WARNING']
            assert len(warnings) == 1
        finally:
            store.fail = False
            store.publish(_reservation('52:54:00:00:00:07', '192.0.2.17'), 10)
            poller.stop()


def test_a_burst_of_changes_is_applied_in_one_swap():
    from vmetal_ironic.store import base
    seen = []
    cache = cache_mod.ReservationCache(on_load=lambda b: seen.append(len(
        list(b))))
    changes = [base.ReservationChange(
        n, changed=_reservation(f'52:54:00:00:01:{n:02x}', f'192.0.2.{n}'))
        for n in range(1, 101)]
    changes.append(base.ReservationChange(101, removed='52:54:00:00:01:01'))
    changes.append(base.ReservationChange(102))
    assert cache.apply(changes) == 101
    assert seen == [99] and len(cache) == 99 and cache.revision == 102
