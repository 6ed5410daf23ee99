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

Bad data never stops the feed: a reservation that cannot be served is
skipped and counted, the others are loaded, and the poller's loop survives
any exception (logged with its traceback, counted, retried after a
backoff).

One address, one MAC: the cache serves one L2, so a second MAC reserved
the address of a served one is held back (skipped, counted, one WARNING
naming both MACs) whatever the store says; it is served once the first
reservation goes. The MAC served before keeps the address; among
newcomers, the lowest MAC.

A forced reload (SIGHUP) starts a new feed *generation*: changes the
follower queued from its older stream are dropped, and the follower
starts again from the snapshot's revision, so a change from before the
snapshot never lands after it (review finding 21).
"""

import queue
import threading
import time

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic.dhcp_agent import messages

LOG = log.getLogger(__name__)

# Queue marker: the follower lost its position; read a snapshot.
_RELIST = object()


class ReservationCache:
    """MAC -> :class:`~vmetal_ironic.dhcp_agent.decisions.Binding`.

    :param on_load: optional callable given the new bindings (a list)
        before they go live, e.g. to build reply templates; runs on the
        feeder's thread. It returns ``{mac: reason}`` for the bindings it
        could not prepare (or ``None``); those are skipped.

    :ivar skipped: ``{mac: reason}`` of the reservations the last load
        skipped.
    """

    def __init__(self, on_load=None):
        self._bindings = {}
        # mac -> Binding held back: its address is another MAC's.
        self._held_back = {}
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

    @property
    def held_back(self):
        """MACs not served because their address is another MAC's."""
        return frozenset(self._held_back)

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
            _bind(reservation, bindings, skipped)
        self._swap_in(bindings, skipped)
        self.revision = revision
        self.loaded_at = time.monotonic()
        self.stale = False

    def apply(self, changes):
        """Apply :class:`~vmetal_ironic.store.base.ReservationChange` items
        in one swap.

        A changed reservation that cannot be served is skipped and counted
        in :attr:`skipped` as in :meth:`load`; the others still apply.

        :returns: the number of reservations changed or removed.
        """
        # Held-back reservations are judged again: the MAC holding their
        # address may be gone.
        bindings = dict(self._bindings)
        bindings.update(self._held_back)
        skipped = {mac: reason for mac, reason in self.skipped.items()
                   if mac not in self._held_back}
        touched = 0
        revision = self.revision
        for change in changes:
            revision = change.revision or revision
            if change.removed:
                skipped.pop(change.removed, None)
                touched += bindings.pop(change.removed, None) is not None
            if change.changed is None:
                continue
            mac = _mac_of(change.changed)
            skipped.pop(mac, None)
            bindings.pop(mac, None)
            touched += 1
            _bind(change.changed, bindings, skipped)
        if touched:
            self._swap_in(bindings, skipped)
        self.revision = revision
        return touched

    def _swap_in(self, bindings, skipped):
        """Let :attr:`on_load` reject some of ``bindings``, log each newly
        skipped reservation once, and serve the result.

        :param bindings: the new ``{mac: Binding}``; rejected ones go.
        :param skipped: the new ``{mac: reason}``; rejected ones join it.
        """
        self._held_back = _one_mac_per_address(bindings, skipped,
                                               self._bindings)
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


def _one_mac_per_address(bindings, skipped, served):
    """Keep one MAC per address in ``bindings``: the one ``served`` already
    has it, else the lowest MAC. The others move to ``skipped`` with a
    reason naming the MAC that keeps the address.

    :returns: ``{mac: Binding}`` of those held back.
    """
    if len({b.address for b in bindings.values()}) == len(bindings):
        return {}       # the usual case: one pass, nothing to hold back
    macs_of = {}
    for mac, binding in bindings.items():
        macs_of.setdefault(binding.address, []).append(mac)
    held_back = {}
    for address, macs in macs_of.items():
        if len(macs) == 1:
            continue
        incumbents = [mac for mac in macs if getattr(
            served.get(mac), 'address', None) == address]
        kept = incumbents[0] if incumbents else min(macs)
        for mac in macs:
            if mac != kept:
                held_back[mac] = bindings.pop(mac)
                skipped[mac] = (f'address {held_back[mac].address_text} is '
                                f'already reserved for {kept} on this L2')
    return held_back


def _mac_of(reservation):
    return str(getattr(reservation, 'mac', None))


def _bind(reservation, bindings, skipped):
    """Add ``reservation``'s binding to ``bindings``, or the reason it
    cannot be served to ``skipped``, keyed by its MAC."""
    try:
        binding = messages.Binding.from_reservation(reservation)
    except Exception as exc:  # any bad row, whatever the store
        skipped[_mac_of(reservation)] = str(exc)
        return
    bindings[binding.mac] = binding


class RevisionPoller:
    """Reload the cache whenever the store's reservation revision moves.

    Never dies quietly: a failure of a round (the store, a load, anything)
    is logged with its traceback (at most once a minute), counted in
    ``vmetal_dhcp_store_feed_errors`` and retried after a backoff that
    grows to :attr:`MAX_BACKOFF`.

    :param store: a :class:`vmetal_ironic.store.base.Store`.
    :param cache: the :class:`ReservationCache` to feed.
    :param interval: seconds between revision checks.
    :param metrics: optional :class:`~vmetal_ironic.dhcp_agent.metrics.Metrics`.
    """

    #: What is fed, for messages and thread names.
    what = 'reservations'
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
        self._changes = queue.Queue()
        # The revision the follower follows from; None: snapshot needed.
        self._position = {'revision': None}
        # Bumped by every snapshot; a change queued under an older one is
        # dropped (it may predate the snapshot), and its stream stops.
        self._generation = 0
        self._position_lock = threading.Lock()
        self._thread = None
        self._follower = None
        self.degraded_count = 0

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
            held_back = getattr(self.cache, 'held_back', ())
            self.metrics.reservations_address_taken.set(len(held_back))
            self.metrics.reservation_loads.inc()
            self.metrics.store_revision.info({'revision': str(revision)})
        self._state('ok')

    # -- what is read: overridden by feeds of other collections -----------

    def _revision(self):
        return self.store.reservations_revision()

    def _snapshot(self):
        """:returns: ``(revision, content)`` for ``cache.load``."""
        return self.store.reservations_snapshot()

    def _changes_after(self, revision, timeout):
        return self.store.follow_reservations(revision, timeout)

    def refresh(self, force=False):
        """Check once and reload if needed; never raises.

        :returns: ``True`` if the cache was reloaded.
        """
        try:
            if (not force and self.cache.loaded_at is not None
                    and self._revision() == self.cache.revision):
                return False
            revision, reservations = self._snapshot()
        except Exception as exc:  # any store failure
            if not self.cache.stale:
                LOG.warning('Store unreachable, serving the %d cached '
                            '%s: %s', len(self.cache), self.what, exc)
            self.cache.stale = True
            self._state('unreachable', 'store')
            return False
        try:
            self.cache.load(reservations, revision)
        except Exception:  # a bug, not bad data: keep the old content
            self._failed('load')
            return False
        self.failures = 0
        with self._position_lock:
            self._generation += 1
            self._position['revision'] = revision
        self._loaded(revision)
        LOG.info('Loaded %d %s (revision %s)', len(self.cache), self.what,
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
            LOG.exception('Feed of %s failed (%d in a row); serving '
                          'the %d cached ones and retrying', self.what,
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
            with self._position_lock:
                revision = self._position.get('revision')
                generation = self._generation
            if revision is None:
                self._stop.wait(0.05)
                continue
            try:
                for change in self._changes_after(revision,
                                                  self.watch_timeout):
                    if not self._enqueue(generation, change):
                        break   # a snapshot came: follow from its revision
                    if self._stop.is_set():
                        return
                if degraded:
                    LOG.warning('Following %s changes works again',
                                self.what)
                    degraded = False
            except exception.RevisionExpired as exc:
                LOG.debug('%s: %s; reading them again', self.what, exc)
                self._lost_position(generation)
            except Exception as exc:  # any store failure, or a bug
                if not degraded:
                    LOG.warning('Following %s changes failed (%s); '
                                'reading them every %ss until it works again',
                                self.what, exc, self.interval)
                    degraded = True
                self.degraded_count += 1
                self._lost_position(generation)
                self._stop.wait(self.interval)

    def _enqueue(self, generation, change):
        """Queue a change read under feed ``generation``, and move the
        position past it, unless a snapshot has started a newer one.

        :returns: ``False`` when the change was dropped as stale.
        """
        with self._position_lock:
            if generation != self._generation:
                return False
            self._changes.put((generation, change))
            self._position['revision'] = change.revision or self._position[
                'revision']
        return True

    def _lost_position(self, generation):
        # Ask for a snapshot, unless one was read since this stream began.
        with self._position_lock:
            if generation == self._generation:
                self._position['revision'] = None
                self._changes.put((generation, _RELIST))

    def _round(self):
        """Read a snapshot when one is needed, else apply the next batch of
        changes (waiting at most ``interval`` for one)."""
        force = self._wake.is_set()
        self._wake.clear()
        if force or self._position.get('revision') is None:
            if not self.refresh(force=True):
                self._stop.wait(self.backoff())
            return
        try:
            first = self._changes.get(timeout=self.interval)
        except queue.Empty:
            return
        batch = [first]
        while True:
            try:
                batch.append(self._changes.get_nowait())
            except queue.Empty:
                break
        # Only what the current generation's stream read counts (None is
        # a wake-up).
        current = self._generation
        batch = [item[1] for item in batch
                 if item is not None and item[0] == current]
        if any(item is _RELIST for item in batch):
            self._position['revision'] = None
            return
        changes = batch
        if changes and self.cache.apply(changes):
            self._loaded(self.cache.revision)
            LOG.debug('Applied %d %s changes (revision %s)',
                      len(changes), self.what, self.cache.revision)

    def _run(self):
        while not self._stop.is_set():
            try:
                self._round()
            except Exception:  # the feed must outlive any bug
                self._failed('poller')
                # Start over from a snapshot: a change may have been lost.
                self._position['revision'] = None
                self._stop.wait(self.backoff())

    def start(self):
        tag = self.what.replace(' ', '-')
        self._thread = threading.Thread(target=self._run,
                                        name=f'{tag}-poller', daemon=True)
        self._follower = threading.Thread(target=self._follow,
                                          name=f'{tag}-follower', daemon=True)
        self._thread.start()
        self._follower.start()

    def alive(self):
        """Whether both feeder threads run."""
        return all(thread is not None and thread.is_alive()
                   for thread in (self._thread, self._follower))

    def stop(self):
        self._stop.set()
        self._wake.set()
        self._changes.put(None)
        for thread in (self._thread, self._follower):
            if thread is not None:
                thread.join(timeout=5)
