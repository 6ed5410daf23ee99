import json

from vmetal_ironic import exception
from vmetal_ironic import reservation as res
from vmetal_ironic.pxe import cache as cache_mod
from vmetal_ironic.pxe import metrics as metrics_mod
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
    metrics = metrics_mod.Metrics()
    poller = cache_mod.RevisionPoller(store, cache, metrics=metrics)
    assert poller.refresh()
    store.down = True
    store.revision = 2
    assert poller.refresh() is False
    assert cache.stale
    assert 'vmetal_dhcp_store_feed{vmetal_dhcp_store_feed="unreachable"} 1.0' \
        in metrics.render()
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


def _raw_row(store, mac, document):
    """Write a row as another writer (or a human) might: not through the
    reservation type."""
    with store._transaction() as db:
        db.execute('INSERT INTO reservations (mac, document, updated_at) '
                   'VALUES (?, ?, 0) ON CONFLICT(mac) DO UPDATE SET '
                   'document = excluded.document', (mac, document))
        store._bump_reservations(db)


def _fed(store):
    from vmetal_ironic.pxe import server as server_mod
    from vmetal_ironic.pxe import messages
    metrics = metrics_mod.Metrics()
    cache = cache_mod.ReservationCache()
    server = server_mod.DhcpServer(
        None, messages.Settings(server_address=bytes([192, 0, 2, 1])),
        cache, metrics)
    cache.on_load = server.prepare
    return cache, cache_mod.RevisionPoller(store, cache, metrics=metrics), \
        metrics


def test_bad_row_is_skipped_and_counted_and_later_rows_are_served(tmp_path):
    store = local.LocalStore(path=str(tmp_path / 'db.sqlite'))
    cache, poller, metrics = _fed(store)
    store.publish_reservation(_reservation('52:54:00:00:00:01',
                                           '192.0.2.10'))
    assert poller.refresh()
    bad = json.loads(_reservation('52:54:00:00:00:02',
                                  '192.0.2.11').to_json())
    bad['prefixlen'] = 33
    _raw_row(store, '52:54:00:00:00:02', json.dumps(bad))
    store.publish_reservation(_reservation('52:54:00:00:00:03',
                                           '192.0.2.12'))
    assert poller.refresh()
    assert cache.get('52:54:00:00:00:01') is not None
    assert cache.get('52:54:00:00:00:02') is None
    assert cache.get('52:54:00:00:00:03') is not None
    assert metrics.reservations_skipped._value.get() == 1
    store.withdraw_reservation('52:54:00:00:00:02')
    assert poller.refresh()
    assert metrics.reservations_skipped._value.get() == 0


class _BuggyStore(_FlakyStore):
    """A store whose rows did not go through the reservation type (a
    stand-in: every real store builds Reservation objects, so this is the
    only way to hand the cache objects it cannot serve)."""

    def list_reservations(self):
        bypass = object.__new__(res.Reservation)
        for name, value in (('mac', '52:54:00:00:00:09'),
                            ('address', '192.0.2.19'), ('prefixlen', 40),
                            ('gateway', None), ('dns_servers', ()),
                            ('hostname', None), ('node', None),
                            ('lease_time', None),
                            ('boot', res.BootOptions()),
                            ('ntp_servers', ())):
            object.__setattr__(bypass, name, value)
        return [*self.items, object(), bypass,
                _reservation('52:54:00:00:00:08', '2001:db8::8')]


def test_any_unservable_object_from_a_store_is_skipped_and_counted():
    cache, poller, metrics = _fed(_BuggyStore())
    assert poller.refresh()
    assert [b.mac for b in cache.bindings()] == ['52:54:00:00:00:01']
    assert len(cache.skipped) == 3
    assert metrics.reservations_skipped._value.get() == 3


class _ExplodingList(list):
    def __iter__(self):
        raise RuntimeError('bug in a feeder')


class _ExplodingStore(_FlakyStore):
    def __init__(self):
        super().__init__()
        self.explode = True
        self.calls = 0

    def list_reservations(self):
        self.calls += 1
        if self.explode:
            return _ExplodingList()
        return super().list_reservations()


def test_poller_survives_any_failure_logs_counts_and_retries():
    import time
    store = _ExplodingStore()
    cache, poller, metrics = _fed(store)
    poller.interval = 0.01
    poller.start()
    try:
        deadline = time.monotonic() + 5
        while store.calls < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert poller.alive()
        text = metrics.render()
        assert 'vmetal_dhcp_store_feed{vmetal_dhcp_store_feed="failing"} ' \
            '1.0' in text
        assert 'vmetal_dhcp_store_feed_errors_total{kind="load"}' in text
        store.explode = False
        while cache.get('52:54:00:00:00:01') is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert poller.alive() and not cache.stale
        assert 'vmetal_dhcp_store_feed{vmetal_dhcp_store_feed="ok"} 1.0' \
            in metrics.render()
    finally:
        poller.stop()
