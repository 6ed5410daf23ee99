"""The inspection range every agent of a scope shares through the store.

A MAC without a reservation that sends a DISCOVER gets an address of
``[vmetal_dhcp_agent]inspection_range`` held in the store (see
:mod:`vmetal_ironic.store.kubernetes.inspection`): whichever agents hear
it offer the same address, and no address ever goes to two MACs.

Threads, so the packet loop never waits for the API server:

* the packet loop only reads the
  :class:`~vmetal_ironic.dhcp_agent.lease_cache.LeaseCache` (dict lookups) and puts
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

A reply never promises more than the store holds (review finding 3): the
lease time of an OFFER or ACK is what is left of the stored ``expires``
(:meth:`SharedRange.seconds_held`), so a renewal the store refused, or an
outage, shortens the answers instead of leaving a client with a lease the
sweep frees. A DISCOVER claims for :attr:`SharedRange.offer_hold` seconds
only; the REQUEST's renewal extends it to the lease time. Renewals are
never refused for a full queue, and the sweep retries those that failed
while their client is still active. A full range costs one comparison
per new MAC until a lease or a reservation goes away (finding 15).
"""

import collections
import queue
import threading
import time

from oslo_log import log

from vmetal_ironic.dhcp_agent import cache as cache_mod
from vmetal_ironic.dhcp_agent import lease_cache
from vmetal_ironic.dhcp_agent import log_limit
from vmetal_ironic.dhcp_agent import messages

LOG = log.getLogger(__name__)

#: Claims, renewals and removals waiting for the store threads at most; a
#: flood of new MACs beyond it is refused (counted) rather than queued.
MAX_QUEUED = 1024
#: Seconds an address found held by someone else (a pool allocation, a
#: gateway) is not tried again, and a MAC refused (range full) is not
#: claimed for again: a full range costs no API request per DISCOVER.
FOREIGN_SECONDS = 30.0
REFUSED_SECONDS = 5.0
#: Entries of those two memories at most.
MEMORY_MAX = 4096
#: Addresses found in use on the L2 (ARP) one claim goes past at most.
CONFLICT_RETRIES = 3


class LeaseFeed(cache_mod.RevisionPoller):
    """Follow the store's inspection leases into a
    :class:`~vmetal_ironic.dhcp_agent.lease_cache.LeaseCache`:
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
    """The store threads of the shared range: claims, renewals, removals.

    ``workers`` threads take the queued work, so a burst of new hosts is
    claimed with that many API requests in flight; one piece of work per
    MAC and kind at a time (queued or running); the first thread also
    sweeps.

    :param shared: the :class:`SharedRange`.
    """

    def __init__(self, shared, sweep_interval=1.0, workers=4):
        self.shared = shared
        self.sweep_interval = sweep_interval
        self.workers = workers
        self._queue = queue.Queue()
        self._queued = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def put(self, kind, mac, lease=None):
        """Queue work; never blocks. :returns: ``False`` if refused.

        Only claims are refused past :data:`MAX_QUEUED` (new MACs are
        anyone's to invent); work on existing leases is bounded by the
        leases, one per MAC and kind, and a dropped renewal would let a
        lease lapse under its client.
        """
        with self._lock:
            if (kind, mac) in self._queued:
                return True
            if kind == 'claim' and len(self._queued) >= MAX_QUEUED:
                return False
            self._queued.add((kind, mac))
        self._queue.put((kind, mac, lease))
        return True

    def _run(self, sweeps):
        next_sweep = time.monotonic() + self.sweep_interval
        while not self._stop.is_set():
            timeout = (max(0.0, next_sweep - time.monotonic()) if sweeps
                       else self.sweep_interval)
            try:
                kind, mac, lease = self._queue.get(timeout=timeout)
            except queue.Empty:
                kind = None
            if kind is not None:
                try:
                    self.shared.run_safely(kind, mac, lease)
                finally:
                    with self._lock:
                        self._queued.discard((kind, mac))
            if sweeps and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.sweep_interval
                self.shared.run_safely('sweep', None, None)

    def start(self):
        self._threads = [
            threading.Thread(target=self._run, args=(index == 0,),
                             name=f'inspection-claimer-{index}', daemon=True)
            for index in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def alive(self):
        return bool(self._threads) and all(
            thread.is_alive() for thread in self._threads)

    def stop(self):
        self._stop.set()
        for _thread in self._threads:
            self._queue.put((None, None, None))
        for thread in self._threads:
            thread.join(timeout=10)


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
    :param offer_hold: seconds a DISCOVER's claim holds the address until
        a REQUEST renews it.
    :param probe: optional :class:`~vmetal_ironic.dhcp_agent.conflict.
        ArpProbe`: the address a claim would take first is probed before
        the claim is made; one that answers ARP is claimed only to be held
        as declined (counted as ``conflict``), and the claim goes on.
    """

    def __init__(self, leases, first, last, reservations, metrics,
                 prefixlen=24, gateway=None, dns_servers=(), lease_time=600,
                 clock_skew=30.0, poll_interval=1.0, sweep_interval=1.0,
                 clock=time.time, offer_hold=60, probe=None):
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
        self.offer_hold = offer_hold
        self.probe = probe
        self.clock = clock
        # mac -> monotonic time of its last ACK: whose renewal the sweep
        # retries.
        self._acked = {}
        # What made the last claim find the range full; while it is the
        # same, a new MAC is refused without looking (see _range_full).
        self._full = None
        self.cache = lease_cache.LeaseCache(self._binding)
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
        self._memory_lock = threading.Lock()
        # Refusals are anyone's to cause (new MACs on the L2): a few lines
        # a second, the rest counted in vmetal_dhcp_log_lines_suppressed.
        self._refusal_log = log_limit.LogLimiter(
            5, on_suppress=metrics.log_suppressed.inc)

    def update_options(self, prefixlen, gateway, dns_servers, lease_time):
        """New lease options (SIGHUP): every reply from now on carries
        them; the leases stay."""
        self.prefixlen, self.gateway = prefixlen, gateway
        self.dns_servers, self.lease_time = tuple(dns_servers), lease_time
        self.cache.rebuild()

    # -- the packet path (never blocks) ------------------------------------

    def _binding(self, lease):
        return messages.Binding(
            mac=lease.mac,
            address=lease_cache.address_int(lease.address).to_bytes(4, 'big'),
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

    def seconds_held(self, mac):
        """Seconds to promise ``mac`` in a reply: what is left of its
        stored lease, at most the lease time (``0`` when nothing is)."""
        lease = self.cache.lease(mac)
        if lease is None:
            return 0
        return max(0, min(self.lease_time, int(lease.expires - self.clock())))

    def acknowledged(self, mac):
        """An ACK went to ``mac`` (or a REQUEST came for a lease the store
        no longer holds): renew its lease once half has passed."""
        lease = self.cache.lease(mac)
        if lease is None:
            return
        self._acked[mac] = time.monotonic()
        if (lease.expires - self.clock() < self.lease_time / 2
                and not self.claimer.put('renew', mac, lease)):
            self.metrics.inspection_store_errors.labels('renew').inc()

    def decline(self, mac):
        """``mac`` found its address in use."""
        lease = self.cache.lease(mac)
        if lease is not None:
            self.claimer.put('decline', mac, lease)

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

    def _remember(self, memory, key, until):
        with self._memory_lock:
            if len(memory) >= MEMORY_MAX:
                now = time.monotonic()
                for old in [k for k, t in memory.items() if t <= now]:
                    del memory[old]
                if len(memory) >= MEMORY_MAX:
                    memory.pop(next(iter(memory)))
            memory[key] = until

    def _refuse(self, mac, why):
        self.metrics.inspection_leases.labels('refused').inc()
        now = time.monotonic()
        self._remember(self._refused, mac, now + REFUSED_SECONDS)
        if self._refusal_log.allow(now):
            LOG.warning('No inspection lease for %s: %s', mac, why)

    def _range_state(self):
        # Anything that can free an address of the range: a lease gone
        # (the cache's generation), reservations reloaded (a new set).
        return (self.cache.generation, id(self.reservations.addresses))

    def _range_full(self, now):
        full = self._full
        return (full is not None and full[0] == self._range_state()
                and now < full[1])

    def _do_claim(self, mac, _lease):
        # An address something on the L2 already answers ARP for is held
        # as declined and the claim goes on with the next one, a few times.
        for _attempt in range(CONFLICT_RETRIES):
            if not self._claim_once(mac):
                return

    def _claim_once(self, mac):
        """:returns: ``True`` when the claimed address was in use on the
        L2 (declined; claim again)."""
        if self.reservations.get(mac) is not None or self.cache.get(mac):
            return False
        now = time.monotonic()
        if self._range_full(now):
            self._refuse(mac, 'the inspection range is full')
            return False
        state = self._range_state()
        held = set(self.cache.held)
        held.update(int.from_bytes(packed, 'big')
                    for packed in self.reservations.addresses)
        with self._memory_lock:
            held.update(value for value, until in self._foreign.items()
                        if until > now)
        tries = lease_cache.candidates(mac, self.first, self.last, held)
        if not tries:
            # Full until a lease or a reservation goes, or the first
            # remembered foreign address is tried again.
            with self._memory_lock:
                until = min((t for t in self._foreign.values() if t > now),
                            default=now + FOREIGN_SECONDS)
            self._full = (state, until)
            self._refuse(mac, 'the inspection range is full')
            return False
        # Probed before the claim exists: once it does, the other agents
        # offer it from their feeds, and the client, configured, would
        # answer a probe made afterwards.
        probed_in_use = self.probe is not None and self.probe.in_use(
            tries[0])
        if probed_in_use:
            tries = tries[:1]
        lease, taken, created = self.leases.claim(
            mac, tries, self.clock() + min(self.offer_hold, self.lease_time))
        for address in taken:
            self._remember(self._foreign,
                           lease_cache.address_int(address),
                           now + FOREIGN_SECONDS)
        if taken:
            self.metrics.inspection_candidates_taken.inc(len(taken))
        if lease is None:
            if probed_in_use:
                return True     # held by someone meanwhile: next one
            self._refuse(mac, f'the {len(tries)} addresses tried are held')
            return False
        if probed_in_use and created:
            self._hold_conflict(lease)
            return True
        # (In use but not created: another agent's lease for this MAC, and
        # that agent probed before claiming.)
        self._refused.pop(mac, None)
        self.metrics.inspection_leases.labels(
            'claimed' if created else 'adopted').inc()
        LOG.info('Inspection lease %s for %s until %d', lease.address, mac,
                 lease.expires)
        self.cache.confirm(lease)
        return False

    def _hold_conflict(self, lease):
        declined = self.leases.decline(lease, self.clock() + self.lease_time)
        self.metrics.inspection_leases.labels('conflict').inc()
        if self._refusal_log.allow(time.monotonic()):
            LOG.warning('Inspection address %s answers ARP on the L2 (a '
                        'host nobody reserved it for uses it): held for '
                        'nobody for %d s', lease.address, self.lease_time)
        if declined is not None:
            self.cache.confirm(declined)

    def _do_renew(self, mac, lease):
        # The feed may hold a later version (another agent renewed it).
        current = self.cache.lease(mac)
        if current is not None and current.key == lease.key:
            lease = current
        if lease.expires - self.clock() >= self.lease_time / 2:
            return
        renewed = self.leases.renew(lease, self.clock() + self.lease_time)
        if renewed is None:
            self.metrics.inspection_leases.labels('lost').inc()
            return
        # Counted once the cache answers with it: whoever sees the count
        # sees the renewed lease.
        self.cache.confirm(renewed)
        self.metrics.inspection_leases.labels('renewed').inc()

    def _remove(self, lease, event):
        if self.leases.remove(lease):
            self.metrics.inspection_leases.labels(event).inc()
            LOG.info('Inspection lease %s of %s taken back (%s)',
                     lease.address, lease.mac, event)
            self.cache.forget(lease)

    def _do_decline(self, _mac, lease):
        declined = self.leases.decline(lease, self.clock() + self.lease_time)
        if declined is not None:
            self.metrics.inspection_leases.labels('declined').inc()
            LOG.warning('%s declined %s (in use on the link): held for '
                        'nobody until it expires', lease.mac, lease.address)
            self.cache.confirm(declined)

    def _do_release(self, _mac, lease):
        self._remove(lease, 'released')

    def _do_sweep(self, _mac, _lease):
        """Take back expired leases and those of MACs with a reservation;
        queue again the renewals of active clients that did not land."""
        wall = self.clock()
        deadline = wall - self.clock_skew
        active_since = time.monotonic() - self.lease_time
        for lease in self.cache.leases():
            if (not lease.declined
                    and self.reservations.get(lease.mac) is not None):
                self._remove(lease, 'withdrawn')
            elif lease.expires < deadline:
                self._remove(lease, 'expired')
            elif (self._acked.get(lease.mac, active_since) > active_since
                  and lease.expires - wall < self.lease_time / 2
                  and not lease.declined):
                self.claimer.put('renew', lease.mac, lease)
        # list(): the packet loop adds entries meanwhile.
        for mac in [m for m, t in list(self._acked.items())
                    if t <= active_since or self.cache.lease(m) is None]:
            self._acked.pop(mac, None)

    # -- lifecycle -------------------------------------------------------------

    def _open_probe(self):
        try:
            self.probe.open()
        except OSError as exc:
            LOG.warning('No ARP conflict check of inspection addresses on '
                        '%s: %s', self.probe.interface, exc)
            self.probe = None

    def reopen_probe(self):
        """The interface was re-created: probe on the new one (a packet
        socket stays on the index it was bound to)."""
        if self.probe is not None:
            self.probe.close()
            self._open_probe()

    def start(self):
        if self.probe is not None:
            self._open_probe()
        self.feed.refresh(force=True)
        self.feed.start()
        self.claimer.start()

    def alive(self):
        return self.feed.alive() and self.claimer.alive()

    def stop(self):
        self.claimer.stop()
        self.feed.stop()
        if self.probe is not None:
            self.probe.close()
