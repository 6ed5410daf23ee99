"""Reservations in memory, fed from the store off the packet path.

The packet path only ever calls :meth:`ReservationCache.get`, a dict
lookup. A feeder thread keeps the dict current: :class:`RevisionPoller`
asks the store for its cheap ``reservations_revision()`` token and reloads
only when it changed. A store that can be told about changes (a Kubernetes
watch) may also offer ``wait_reservations_change(revision, timeout)``,
which blocks until the revision differs from ``revision`` or ``timeout``
seconds passed; the poller then waits on it instead of sleeping, so changes
arrive as soon as the store sees them. Any other feeder can call
:meth:`ReservationCache.load` itself. When the store is unreachable the
cache keeps serving the last good data.

Bad data never stops the feed: a reservation that cannot be served is
skipped and counted, the others are loaded, and the poller's loop survives
any exception (logged with its traceback, counted, retried after a
backoff).
"""

import threading
import time

from oslo_log import log

from vmetal_ironic.pxe import messages

LOG = log.getLogger(__name__)


class ReservationCache:
    """MAC -> :class:`~vmetal_ironic.pxe.decisions.Binding`.

    :param on_load: optional callable given the new bindings (a list)
        before they go live, e.g. to build reply templates; runs on the
        feeder's thread. It returns ``{mac: reason}`` for the bindings it
        could not prepare (or ``None``); those are skipped.

    :ivar skipped: ``{mac: reason}`` of the reservations the last load
        skipped.
    """

    def __init__(self, on_load=None):
        self._bindings = {}
        self._addresses = frozenset()
        self.on_load = on_load
        self.revision = None
        self.loaded_at = None
        self.stale = False
        self.skipped = {}

    def get(self, mac):
        """The binding of ``mac`` (lower case, colons) or ``None``."""
        return self._bindings.get(mac)

    @property
    def addresses(self):
        """Packed addresses held by reservations."""
        return self._addresses

    def __len__(self):
        return len(self._bindings)

    def bindings(self):
        """:returns: a list of the current bindings."""
        return list(self._bindings.values())

    def load(self, reservations, revision=None):
        """Replace the content with ``reservations`` in one swap.

        A reservation that cannot be served (not IPv4, not encodable) is
        logged once per load, counted in :attr:`skipped` and left out; it
        does not stop the others.

        :param reservations: iterable of
            :class:`vmetal_ironic.reservation.Reservation`.
        :param revision: the store's revision the data belongs to.
        """
        bindings = {}
        skipped = {}
        for reservation in reservations:
            mac = getattr(reservation, 'mac', None)
            try:
                binding = messages.Binding.from_reservation(reservation)
            except Exception as exc:  # any bad row, whatever the store
                skipped[str(mac)] = str(exc)
                continue
            bindings[binding.mac] = binding
        if self.on_load is not None:
            rejected = self.on_load(list(bindings.values())) or {}
            for mac, reason in rejected.items():
                bindings.pop(mac, None)
                skipped[mac] = reason
        for mac, reason in sorted(skipped.items()):
            if self.skipped.get(mac) != reason:
                LOG.warning('Skipping the reservation of %s: %s', mac,
                            reason)
        self._bindings = bindings
        self._addresses = frozenset(b.address for b in bindings.values())
        self.skipped = skipped
        self.revision = revision
        self.loaded_at = time.monotonic()
        self.stale = False


class RevisionPoller:
    """Reload the cache whenever the store's reservation revision moves.

    Never dies quietly: a failure of a round (the store, a load, anything)
    is logged with its traceback (at most once a minute), counted in
    ``vmetal_dhcp_store_feed_errors`` and retried after a backoff that
    grows to :attr:`MAX_BACKOFF`.

    :param store: a :class:`vmetal_ironic.store.base.Store`.
    :param cache: the :class:`ReservationCache` to feed.
    :param interval: seconds between revision checks.
    :param metrics: optional :class:`~vmetal_ironic.pxe.metrics.Metrics`.
    """

    #: Longest wait between two attempts after failures, seconds.
    MAX_BACKOFF = 30.0
    #: Seconds between two tracebacks of a failing feed.
    TRACEBACK_EVERY = 60.0

    def __init__(self, store, cache, interval=1.0, metrics=None):
        self.store = store
        self.cache = cache
        self.interval = interval
        self.metrics = metrics
        #: Consecutive failed rounds (0 when the last one worked).
        self.failures = 0
        self._last_traceback = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = None

    def _state(self, state, error_kind=None):
        if self.metrics is None:
            return
        self.metrics.store_feed.state(state)
        self.metrics.cache_stale.set(int(state == 'unreachable'))
        if error_kind is not None:
            self.metrics.store_feed_errors.labels(error_kind).inc()

    def _loaded(self, revision):
        # A store may say how many rows it left out as invalid.
        store_skipped = getattr(self.store, 'skipped_reservations', 0) or 0
        if self.metrics is not None:
            self.metrics.cache_size.set(len(self.cache))
            self.metrics.reservations_skipped.set(
                len(self.cache.skipped) + store_skipped)
            self.metrics.reservation_loads.inc()
            self.metrics.store_revision.info({'revision': str(revision)})
        self._state('ok')

    def refresh(self, force=False):
        """Check once and reload if needed; never raises.

        :returns: ``True`` if the cache was reloaded.
        """
        try:
            revision = self.store.reservations_revision()
            if (not force and self.cache.loaded_at is not None
                    and revision == self.cache.revision):
                return False
            reservations = self.store.list_reservations()
        except Exception as exc:  # any store failure
            if not self.cache.stale:
                LOG.warning('Store unreachable, serving the %d cached '
                            'reservations: %s', len(self.cache), exc)
            self.cache.stale = True
            self._state('unreachable', 'store')
            return False
        try:
            self.cache.load(reservations, revision)
        except Exception:  # a bug, not bad data: keep the old content
            self._failed('load')
            return False
        self.failures = 0
        self._loaded(revision)
        LOG.info('Loaded %d reservations (revision %s)', len(self.cache),
                 revision)
        return True

    def _failed(self, kind):
        self.failures += 1
        self.cache.stale = True
        self._state('failing', kind)
        now = time.monotonic()
        if (self._last_traceback is None
                or now - self._last_traceback >= self.TRACEBACK_EVERY):
            self._last_traceback = now
            LOG.exception('Reservation feed failed (%d in a row); serving '
                          'the %d cached reservations and retrying',
                          self.failures, len(self.cache))

    def backoff(self):
        """Seconds to wait before the next round."""
        if not self.failures and not self.cache.stale:
            return self.interval
        return min(self.MAX_BACKOFF,
                   self.interval * 2 ** min(self.failures, 10))

    def wake(self):
        """Ask for a forced reload on the poller's thread (SIGHUP)."""
        self._wake.set()

    def _wait(self):
        waiter = getattr(self.store, 'wait_reservations_change', None)
        if waiter is not None and not self.cache.stale:
            try:
                waiter(self.cache.revision, self.interval)
                return
            except Exception as exc:  # the poll below still works
                LOG.debug('Waiting for reservation changes failed: %s', exc)
        self._wake.wait(self.backoff() if self.failures else self.interval)

    def _round(self):
        force = self._wake.is_set()
        self._wake.clear()
        self.refresh(force=force)
        if not self._wake.is_set():
            self._wait()

    def _run(self):
        while not self._stop.is_set():
            try:
                self._round()
            except Exception:  # the feed must outlive any bug
                self._failed('poller')
                self._wake.wait(self.backoff())

    def start(self):
        self._thread = threading.Thread(target=self._run,
                                        name='reservation-poller',
                                        daemon=True)
        self._thread.start()

    def alive(self):
        return self._thread is not None and self._thread.is_alive()

    def stop(self):
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
