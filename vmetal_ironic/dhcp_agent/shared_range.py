"""The inspection range every agent of a scope shares through the store.

A MAC without a reservation that sends a DISCOVER gets an address of
``[vmetal_dhcp_agent]inspection_range`` held in the store (see
:mod:`vmetal_ironic.store.kubernetes.inspection`): whichever agents hear
it offer the same address, and no address ever goes to two MACs.

Threads, so the packet loop never waits for the API server:

* the packet loop only reads :class:`LeaseCache` (dict lookups) and puts
  work on the claimer's queue (:meth:`SharedRange.want`, ``renew_due``,
  ``release``), never blocking;
* :class:`LeaseFeed` follows the store's leases (list, then watch) into
  the cache, like the reservations feed;
* :class:`Claimer` claims, renews and removes leases, and every
  ``sweep_interval`` takes back the leases past ``expires`` plus the
  clock-skew grace and those whose MAC now has a reservation. When a
  lease for a MAC with a DISCOVER waiting appears (claimed here, or seen
  from another agent), :attr:`SharedRange.on_ready` tells the packet loop,
  which answers it at once instead of at the client's retransmission.
"""

import collections
import queue
import threading
import time
import zlib

from oslo_log import log

from vmetal_ironic.dhcp_agent import cache as cache_mod
from vmetal_ironic.dhcp_agent import messages

LOG = log.getLogger(__name__)

#: Claims, renewals and removals waiting for the store thread at most; a
#: flood of new MACs beyond it is refused (counted) rather than queued.
MAX_QUEUED = 1024
#: Candidate addresses one claim tries against the store at most.
MAX_CANDIDATES = 64
#: Seconds an address found held by someone else (a pool allocation, a
#: gateway) is not tried again, and a MAC refused (range full) is not
#: claimed for again: a full range costs no API request per DISCOVER.
FOREIGN_SECONDS = 30.0
REFUSED_SECONDS = 5.0
#: Entries of those two memories at most.
MEMORY_MAX = 4096


def _int(address):
    return int.from_bytes(bytes(int(part) for part in address.split('.')),
                          'big')


def _text(value):
    return '.'.join(str(b) for b in value.to_bytes(4, 'big'))


def candidates(mac, first, last, held, limit=MAX_CANDIDATES):
    """Addresses of the range to try for ``mac``, in order.

    Every agent starts at the same place for one MAC (a hash of it), so
    two agents answering one DISCOVER try the same address first and the
    second finds the first one's claim; different MACs start apart, so
    agents claiming for many new hosts at once rarely collide.

    :param held: ints known held (leases, reservations), skipped.
    :returns: a list of at most ``limit`` addresses (text).
    """
    size = last - first + 1
    start = zlib.crc32(mac.encode()) % size
    found = []
    for step in range(size):
        value = first + (start + step) % size
        if value not in held:
            found.append(_text(value))
            if len(found) >= limit:
                break
    return found


def _newer(lease, than):
    """Whether ``lease`` is a later version than ``than`` (versions are
    the API server's resourceVersions, increasing integers in etcd)."""
    try:
        return int(lease.version) > int(than.version)
    except (TypeError, ValueError):
        return lease.version != than.version


class LeaseCache:
    """The scope's inspection leases, by MAC, for the packet path.

    A MAC with two leases (two agents created one each before one bound
    the MAC; the loser's goes within milliseconds) is served only the one
    a claim here confirmed, or none until one is left: agents never offer
    two addresses to one MAC.

    :param binding_of: callable making the
        :class:`~vmetal_ironic.dhcp_agent.messages.Binding` of a lease.
    """

    def __init__(self, binding_of):
        self._binding_of = binding_of
        self._lock = threading.Lock()
        self._leases = {}            # key -> InspectionLease
        self._by_mac = {}            # mac -> frozenset of keys
        self._bindings = {}          # mac -> Binding served
        self._served = {}            # mac -> its address in _bindings
        self._confirmed = {}         # mac -> key a claim returned
        self.held = frozenset()      # ints of every lease's address
        self.skipped = {}            # key -> reason (bad data)
        self.revision = None
        self.loaded_at = None
        self.stale = False
        #: Called with the MACs whose lease appeared, off the packet path.
        self.on_change = None

    def get(self, mac):
        """The binding to serve ``mac``, or ``None``."""
        return self._bindings.get(mac)

    def lease(self, mac):
        """The served lease of ``mac``, or ``None``."""
        key = self._served_key(mac)
        return self._leases.get(key) if key else None

    def leases(self):
        return list(self._leases.values())

    def __len__(self):
        return len(self._leases)

    def _served_key(self, mac):
        keys = self._by_mac.get(mac, frozenset())
        if len(keys) == 1:
            return next(iter(keys))
        confirmed = self._confirmed.get(mac)
        return confirmed if confirmed in keys else None

    def _put(self, lease):
        old = self._leases.get(lease.key)
        if old is not None and old.mac != lease.mac:
            self._drop(lease.key)
        self._leases[lease.key] = lease
        self._by_mac[lease.mac] = self._by_mac.get(
            lease.mac, frozenset()) | {lease.key}

    def _drop(self, key):
        old = self._leases.pop(key, None)
        if old is None:
            return None
        keys = self._by_mac.get(old.mac, frozenset()) - {key}
        if keys:
            self._by_mac[old.mac] = keys
        else:
            self._by_mac.pop(old.mac, None)
            self._confirmed.pop(old.mac, None)
        return old.mac

    def _publish(self, macs):
        """Rebuild the served bindings of ``macs``; report the MACs that
        now have one."""
        bindings = dict(self._bindings)
        ready = []
        for mac in macs:
            key = self._served_key(mac)
            if key is None:
                bindings.pop(mac, None)
                self._served.pop(mac, None)
                continue
            lease = self._leases[key]
            if self._served.get(mac) != lease.address:
                bindings[mac] = self._binding_of(lease)
                self._served[mac] = lease.address
                ready.append(mac)
        self._bindings = bindings
        self.held = frozenset(_int(lease.address)
                              for lease in self._leases.values())
        if ready and self.on_change is not None:
            self.on_change(ready)

    def load(self, content, revision=None):
        """Replace everything with a snapshot.

        :param content: ``(leases, rejected)`` as the store lists them.
        """
        leases, rejected = content
        with self._lock:
            self._log_skipped(rejected)
            old_macs = set(self._by_mac)
            self._leases, self._by_mac = {}, {}
            for lease in leases:
                self._put(lease)
            self.skipped = dict(rejected)
            self._publish(old_macs | set(self._by_mac))
        self.revision = revision
        self.loaded_at = time.monotonic()
        self.stale = False

    def apply(self, changes):
        """Apply :class:`~vmetal_ironic.store.base.LeaseChange` items.

        :returns: how many leases changed.
        """
        touched = set()
        count = 0
        with self._lock:
            skipped = dict(self.skipped)
            for change in changes:
                self.revision = change.revision or self.revision
                if change.removed:
                    skipped.pop(change.removed, None)
                    mac = self._drop(change.removed)
                    if mac:
                        touched.add(mac)
                    if change.rejected:
                        skipped[change.removed] = change.rejected
                    count += 1
                if change.changed is not None:
                    self._put(change.changed)
                    skipped.pop(change.changed.key, None)
                    touched.add(change.changed.mac)
                    count += 1
            self._log_skipped(skipped)
            self.skipped = skipped
            self._publish(touched)
        return count

    def confirm(self, lease):
        """A claim here returned ``lease``: serve it for its MAC now, before
        the feed shows it."""
        with self._lock:
            current = self._leases.get(lease.key)
            if current is None or _newer(lease, current):
                self._put(lease)
            self._confirmed[lease.mac] = lease.key
            self._publish([lease.mac])

    def forget(self, lease):
        """This agent removed ``lease``."""
        with self._lock:
            if self._leases.get(lease.key) == lease:
                self._publish([self._drop(lease.key)])

    def _log_skipped(self, skipped):
        for key, reason in sorted(skipped.items()):
            if self.skipped.get(key) != reason:
                LOG.warning('Skipping the inspection lease %s: %s', key,
                            reason)


class LeaseFeed(cache_mod.RevisionPoller):
    """Follow the store's inspection leases into a :class:`LeaseCache`:
    list, then watch; relist on 410; poll while watching fails.

    :param leases: the store's ``inspection_leases()`` object.
    """

    what = 'inspection leases'

    def __init__(self, leases, cache, interval=1.0, metrics=None):
        super().__init__(None, cache, interval, metrics=None)
        self.leases = leases
        self.lease_metrics = metrics

    def _revision(self):
        return None     # always read: the feed is forced anyway

    def _snapshot(self):
        revision, leases, rejected = self.leases.snapshot()
        return revision, (leases, rejected)

    def _changes_after(self, revision, timeout):
        return self.leases.follow(revision, timeout)

    def _loaded(self, revision):
        metrics = self.lease_metrics
        if metrics is not None:
            metrics.inspection_cached.set(len(self.cache))
            metrics.inspection_skipped.set(len(self.cache.skipped))

    def _failed(self, kind):
        if self.lease_metrics is not None:
            self.lease_metrics.store_feed_errors.labels(
                f'inspection-{kind}').inc()
        super()._failed(kind)


class Claimer:
    """The store thread of the shared range: claims, renewals, removals.

    :param shared: the :class:`SharedRange`.
    """

    def __init__(self, shared, sweep_interval=1.0):
        self.shared = shared
        self.sweep_interval = sweep_interval
        self._queue = queue.Queue()
        self._queued = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def put(self, kind, mac, lease=None):
        """Queue work; never blocks. :returns: ``False`` if refused."""
        with self._lock:
            if (kind, mac) in self._queued:
                return True
            if len(self._queued) >= MAX_QUEUED:
                return False
            self._queued.add((kind, mac))
        self._queue.put((kind, mac, lease))
        return True

    def _run(self):
        next_sweep = time.monotonic() + self.sweep_interval
        while not self._stop.is_set():
            timeout = max(0.0, next_sweep - time.monotonic())
            try:
                kind, mac, lease = self._queue.get(timeout=timeout)
            except queue.Empty:
                kind = None
            if kind is not None:
                with self._lock:
                    self._queued.discard((kind, mac))
                self.shared.run_safely(kind, mac, lease)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.sweep_interval
                self.shared.run_safely('sweep', None, None)

    def start(self):
        self._thread = threading.Thread(target=self._run,
                                        name='inspection-claimer',
                                        daemon=True)
        self._thread.start()

    def alive(self):
        return self._thread is not None and self._thread.is_alive()

    def stop(self):
        self._stop.set()
        self._queue.put((None, None, None))
        if self._thread is not None:
            self._thread.join(timeout=10)


class SharedRange:
    """The agent's side of the shared inspection range.

    :param leases: the store's ``inspection_leases()`` object.
    :param first: first address of the range (int).
    :param last: last address (int).
    :param reservations: the agent's
        :class:`~vmetal_ironic.dhcp_agent.cache.ReservationCache` (a MAC
        with a reservation gives its lease back; reserved addresses are
        never claimed).
    :param metrics: the agent's
        :class:`~vmetal_ironic.dhcp_agent.metrics.Metrics`.
    :param clock_skew: seconds past ``expires`` before a lease is taken
        back, for agents whose clocks differ.
    :param clock: epoch seconds (``time.time``); leases expire by the wall
        clock since several machines compare them.
    """

    def __init__(self, leases, first, last, reservations, metrics,
                 prefixlen=24, gateway=None, dns_servers=(), lease_time=600,
                 clock_skew=30.0, poll_interval=1.0, sweep_interval=1.0,
                 clock=time.time):
        self.leases = leases
        self.first = first
        self.last = last
        self.reservations = reservations
        self.metrics = metrics
        self.prefixlen = prefixlen
        self.gateway = gateway
        self.dns_servers = tuple(dns_servers)
        self.lease_time = lease_time
        self.clock_skew = clock_skew
        self.clock = clock
        self.cache = LeaseCache(self._binding)
        self.cache.on_change = self._ready
        self.feed = LeaseFeed(leases, self.cache, poll_interval, metrics)
        self.claimer = Claimer(self, sweep_interval)
        #: Called (from a store thread) when MACs got a lease; set by the
        #: server to answer their waiting DISCOVER.
        self.on_ready = None
        self.ready = collections.deque()
        self._last_traceback = 0.0
        self._foreign = {}          # int address -> monotonic until
        self._refused = {}          # mac -> monotonic until

    # -- the packet path (never blocks) ------------------------------------

    def _binding(self, lease):
        return messages.Binding(
            mac=lease.mac, address=_int(lease.address).to_bytes(4, 'big'),
            prefixlen=self.prefixlen, gateway=self.gateway,
            dns_servers=self.dns_servers, lease_time=self.lease_time,
            dynamic=True)

    def binding(self, mac):
        """The binding of ``mac``'s lease, or ``None``."""
        return self.cache.get(mac)

    def want(self, mac):
        """``mac`` sent a DISCOVER and has no lease: claim one (unless it
        was refused a moment ago)."""
        until = self._refused.get(mac)
        if until is not None and until > time.monotonic():
            return
        if not self.claimer.put('claim', mac):
            self.metrics.inspection_leases.labels('refused').inc()

    def acknowledged(self, mac):
        """An ACK went to ``mac``: renew its lease once half has passed."""
        lease = self.cache.lease(mac)
        if lease is not None and (lease.expires - self.clock()
                                  < self.lease_time / 2):
            self.claimer.put('renew', mac, lease)

    def release(self, mac):
        """``mac`` released its address."""
        lease = self.cache.lease(mac)
        if lease is not None:
            self.claimer.put('release', mac, lease)

    def _ready(self, macs):
        self.ready.extend(macs)
        if self.on_ready is not None:
            self.on_ready()

    # -- the store thread ----------------------------------------------------

    def run_safely(self, kind, mac, lease):
        """One piece of store work; any failure is logged and counted, the
        thread goes on."""
        try:
            getattr(self, f'_do_{kind}')(mac, lease)
        except Exception as exc:  # the store thread outlives anything
            self.metrics.inspection_store_errors.labels(kind).inc()
            now = time.monotonic()
            if now - self._last_traceback > 60:
                self._last_traceback = now
                LOG.exception('Inspection lease %s for %s failed', kind,
                              mac or 'the sweep')
            else:
                LOG.warning('Inspection lease %s for %s failed: %s', kind,
                            mac or 'the sweep', exc)

    @staticmethod
    def _remember(memory, key, until):
        if len(memory) >= MEMORY_MAX:
            now = time.monotonic()
            for old in [k for k, t in memory.items() if t <= now]:
                del memory[old]
            if len(memory) >= MEMORY_MAX:
                memory.pop(next(iter(memory)))
        memory[key] = until

    def _refuse(self, mac, why):
        self.metrics.inspection_leases.labels('refused').inc()
        self._remember(self._refused, mac, time.monotonic() + REFUSED_SECONDS)
        LOG.warning('No inspection lease for %s: %s', mac, why)

    def _do_claim(self, mac, _lease):
        if self.reservations.get(mac) is not None or self.cache.get(mac):
            return
        now = time.monotonic()
        held = set(self.cache.held)
        held.update(int.from_bytes(packed, 'big')
                    for packed in self.reservations.addresses)
        held.update(value for value, until in list(self._foreign.items())
                    if until > now)
        tries = candidates(mac, self.first, self.last, held)
        if not tries:
            self._refuse(mac, 'the inspection range is full')
            return
        lease, taken, created = self.leases.claim(
            mac, tries, self.clock() + self.lease_time)
        for address in taken:
            self._remember(self._foreign, _int(address),
                           now + FOREIGN_SECONDS)
        if taken:
            self.metrics.inspection_candidates_taken.inc(len(taken))
        if lease is None:
            self._refuse(mac, f'the {len(tries)} addresses tried are held')
            return
        self._refused.pop(mac, None)
        self.metrics.inspection_leases.labels(
            'claimed' if created else 'adopted').inc()
        LOG.info('Inspection lease %s for %s until %d', lease.address, mac,
                 lease.expires)
        self.cache.confirm(lease)

    def _do_renew(self, mac, lease):
        if lease.expires - self.clock() >= self.lease_time / 2:
            return
        renewed = self.leases.renew(lease, self.clock() + self.lease_time)
        if renewed is None:
            self.metrics.inspection_leases.labels('lost').inc()
            return
        self.metrics.inspection_leases.labels('renewed').inc()
        self.cache.confirm(renewed)

    def _remove(self, lease, event):
        if self.leases.remove(lease):
            self.metrics.inspection_leases.labels(event).inc()
            LOG.info('Inspection lease %s of %s taken back (%s)',
                     lease.address, lease.mac, event)
            self.cache.forget(lease)

    def _do_release(self, _mac, lease):
        self._remove(lease, 'released')

    def _do_sweep(self, _mac, _lease):
        """Take back expired leases and those of MACs with a reservation."""
        deadline = self.clock() - self.clock_skew
        for lease in self.cache.leases():
            if self.reservations.get(lease.mac) is not None:
                self._remove(lease, 'withdrawn')
            elif lease.expires < deadline:
                self._remove(lease, 'expired')

    # -- lifecycle -------------------------------------------------------------

    def start(self):
        self.feed.refresh(force=True)
        self.feed.start()
        self.claimer.start()

    def alive(self):
        return self.feed.alive() and self.claimer.alive()

    def stop(self):
        self.claimer.stop()
        self.feed.stop()
