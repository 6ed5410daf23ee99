"""Reservations in memory, fed from the store off the packet path.

The packet path only ever calls :meth:`ReservationCache.get`, a dict
lookup. A feeder keeps the dict current the way Kubernetes controllers
do: :class:`RevisionPoller` reads a snapshot
(``store.reservations_snapshot()``), then follows the changes after its
revision (``store.follow_reservations()``: a watch from the list's
resourceVersion with bookmarks on Kubernetes; a revision poll on the local
store). When the position expired (410 Gone) it reads a snapshot again;
when following fails it says so once at WARNING and polls every
``interval`` until following works again. Changes are applied in batches
by one thread while another follows, so a burst of thousands of changes
costs a few swaps, not one rebuild each. When the store is unreachable the
cache keeps serving the last good data.
"""

import queue
import threading
import time

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic.pxe import decisions

LOG = log.getLogger(__name__)

# Queue marker: the follower lost its position; read a snapshot.
_RELIST = object()


class ReservationCache:
    """MAC -> :class:`~vmetal_ironic.pxe.decisions.Binding`.

    :param on_load: optional callable given the new bindings (an iterable)
        before they go live, e.g. to build reply templates; runs on the
        feeder's thread.
    """

    def __init__(self, on_load=None):
        self._bindings = {}
        self._addresses = frozenset()
        self.on_load = on_load
        self.revision = None
        self.loaded_at = None
        self.stale = False
        self.last_error = None

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

        A reservation that cannot be served (not IPv4) is logged and
        skipped; it does not stop the others.

        :param reservations: iterable of
            :class:`vmetal_ironic.reservation.Reservation`.
        :param revision: the store's revision the data belongs to.
        """
        bindings = {}
        for reservation in reservations:
            try:
                binding = decisions.Binding.from_reservation(reservation)
            except (OSError, ValueError, TypeError) as exc:
                LOG.warning('Skipping reservation of %s with address %r: '
                            '%s', reservation.mac, reservation.address, exc)
                continue
            bindings[binding.mac] = binding
        if self.on_load is not None:
            self.on_load(bindings.values())
        self._bindings = bindings
        self._addresses = frozenset(b.address for b in bindings.values())
        self.revision = revision
        self.loaded_at = time.monotonic()
        self.stale = False
        self.last_error = None

    def apply(self, changes):
        """Apply :class:`~vmetal_ironic.store.base.ReservationChange` items
        in one swap.

        :returns: the number of reservations changed or removed.
        """
        bindings = dict(self._bindings)
        touched = 0
        revision = self.revision
        for change in changes:
            revision = change.revision or revision
            if change.removed:
                touched += bindings.pop(change.removed, None) is not None
            if change.changed is not None:
                try:
                    binding = decisions.Binding.from_reservation(
                        change.changed)
                except (OSError, ValueError, TypeError) as exc:
                    LOG.warning('Skipping reservation of %s with address '
                                '%r: %s', change.changed.mac,
                                change.changed.address, exc)
                    bindings.pop(change.changed.mac, None)
                    continue
                bindings[binding.mac] = binding
                touched += 1
        if touched:
            if self.on_load is not None:
                self.on_load(bindings.values())
            self._bindings = bindings
            self._addresses = frozenset(b.address for b in bindings.values())
        self.revision = revision
        return touched


class RevisionPoller:
    """Reload the cache whenever the store's reservation revision moves.

    :param store: a :class:`vmetal_ironic.store.base.Store`.
    :param cache: the :class:`ReservationCache` to feed.
    :param interval: seconds between revision checks.
    """

    def __init__(self, store, cache, interval=1.0):
        self.store = store
        self.cache = cache
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._changes = queue.Queue()
        # The revision the follower follows from; None: snapshot needed.
        self._position = {'revision': None}
        self._thread = None
        self._follower = None
        self.degraded_count = 0

    def refresh(self, force=False):
        """Check once and reload if needed; never raises.

        :returns: ``True`` if the cache was reloaded.
        """
        try:
            if (not force and self.cache.loaded_at is not None
                    and self.store.reservations_revision()
                    == self.cache.revision):
                return False
            revision, reservations = self.store.reservations_snapshot()
        except Exception as exc:  # any store failure
            if not self.cache.stale:
                LOG.warning('Store unreachable, serving the %d cached '
                            'reservations: %s', len(self.cache), exc)
            self.cache.stale = True
            self.cache.last_error = str(exc)
            return False
        self.cache.load(reservations, revision)
        self._position['revision'] = revision
        LOG.info('Loaded %d reservations (revision %s)', len(self.cache),
                 revision)
        return True

    def wake(self):
        """Ask for a forced reload on the poller's thread (SIGHUP)."""
        self._wake.set()
        self._changes.put(None)

    @property
    def watch_timeout(self):
        """Seconds one follow request lasts: short enough for stop() to be
        prompt, long enough to cost little."""
        return max(1.0, min(self.interval, 10.0))

    def _follow(self):
        """Follower thread: put the store's changes on the queue. A
        ``_RELIST`` marker asks the applier for a new snapshot."""
        degraded = False
        while not self._stop.is_set():
            revision = self._position.get('revision')
            if revision is None:
                self._stop.wait(0.05)
                continue
            try:
                for change in self.store.follow_reservations(
                        revision, self.watch_timeout):
                    self._changes.put(change)
                    self._position['revision'] = change.revision or revision
                    if self._stop.is_set():
                        return
                if degraded:
                    LOG.warning('Following reservation changes works again')
                    degraded = False
            except exception.RevisionExpired as exc:
                LOG.debug('Reservations: %s; reading them again', exc)
                self._position['revision'] = None
                self._changes.put(_RELIST)
            except Exception as exc:  # any store failure
                if not degraded:
                    LOG.warning('Following reservation changes failed (%s); '
                                'reading them every %ss until it works again',
                                exc, self.interval)
                    degraded = True
                self.degraded_count += 1
                self._position['revision'] = None
                self._changes.put(_RELIST)
                self._stop.wait(self.interval)

    def _apply_loop(self):
        while not self._stop.is_set():
            force = self._wake.is_set()
            self._wake.clear()
            needs_snapshot = force or self._position.get('revision') is None
            if needs_snapshot and not self.refresh(force=True):
                self._stop.wait(self.interval)
                continue
            try:
                first = self._changes.get(timeout=self.interval)
            except queue.Empty:
                continue
            batch = [first]
            while True:
                try:
                    batch.append(self._changes.get_nowait())
                except queue.Empty:
                    break
            if any(item is _RELIST for item in batch):
                self._position['revision'] = None
                continue
            changes = [item for item in batch if item is not None]
            if changes:
                touched = self.cache.apply(changes)
                if touched:
                    LOG.debug('Applied %d reservation changes (revision %s)',
                              touched, self.cache.revision)

    def start(self):
        self._thread = threading.Thread(target=self._apply_loop,
                                        name='reservation-poller',
                                        daemon=True)
        self._follower = threading.Thread(target=self._follow,
                                          name='reservation-follower',
                                          daemon=True)
        self._thread.start()
        self._follower.start()

    def stop(self):
        self._stop.set()
        self._wake.set()
        self._changes.put(None)
        for thread in (self._thread, self._follower):
            if thread is not None:
                thread.join(timeout=5)
