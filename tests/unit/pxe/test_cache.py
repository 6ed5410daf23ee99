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
    """A store that can report changes, as a Kubernetes watch would."""

    def __init__(self):
        super().__init__()
        import threading
        self.changed = threading.Condition()
        self.waits = 0

    def publish(self, item, revision):
        with self.changed:
            self.items = [*self.items, item]
            self.revision = revision
            self.changed.notify_all()

    def wait_reservations_change(self, revision, timeout):
        self.waits += 1
        with self.changed:
            self.changed.wait_for(lambda: self.revision != revision, timeout)


def test_poller_waits_on_a_store_that_reports_changes():
    import time
    store = _WatchingStore()
    cache = cache_mod.ReservationCache()
    # A long interval: only the store's change report can be this quick.
    poller = cache_mod.RevisionPoller(store, cache, interval=30)
    poller.start()
    try:
        deadline = time.monotonic() + 5
        while store.waits == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        store.publish(_reservation('52:54:00:00:00:04', '192.0.2.14'), 2)
        while cache.get('52:54:00:00:00:04') is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        store.down = True
        store.publish(_reservation('52:54:00:00:00:05', '192.0.2.15'), 3)
        poller.stop()
