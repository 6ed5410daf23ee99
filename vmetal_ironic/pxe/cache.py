"""Reservations in memory, fed from the store off the packet path.

The packet path only ever calls :meth:`ReservationCache.get`, a dict
lookup. A feeder thread keeps the dict current: :class:`RevisionPoller`
asks the store for its cheap ``reservations_revision()`` token and reloads
only when it changed. A store that can push changes (a Kubernetes watch)
plugs in as another feeder calling :meth:`ReservationCache.load`. When the
store is unreachable the cache keeps serving the last good data.
"""

import threading
import time

from oslo_log import log

from vmetal_ironic.pxe import decisions

LOG = log.getLogger(__name__)


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
        self._thread = None

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
            self.cache.last_error = str(exc)
            return False
        self.cache.load(reservations, revision)
        LOG.info('Loaded %d reservations (revision %s)', len(self.cache),
                 revision)
        return True

    def wake(self):
        """Ask for a forced reload on the poller's thread (SIGHUP)."""
        self._wake.set()

    def _run(self):
        while not self._stop.is_set():
            force = self._wake.is_set()
            self._wake.clear()
            self.refresh(force=force)
            self._wake.wait(self.interval)

    def start(self):
        self._thread = threading.Thread(target=self._run,
                                        name='reservation-poller',
                                        daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
