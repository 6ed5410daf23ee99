"""Inspection leases in the agent's memory, for the packet path (pure):
the candidates a claim tries and :class:`LeaseCache`, the scope's leases
by MAC, fed by :class:`~vmetal_ironic.dhcp_agent.shared_range.LeaseFeed`.
"""

import math
import threading
import time
import zlib

from oslo_log import log

LOG = log.getLogger(__name__)

#: Candidate addresses one claim tries against the store at most.
MAX_CANDIDATES = 64


def address_int(address):
    """The int of an IPv4 address text."""
    return int.from_bytes(bytes(int(part) for part in address.split('.')),
                          'big')


def _text(value):
    return '.'.join(str(b) for b in value.to_bytes(4, 'big'))


def candidates(mac, first, last, held, limit=MAX_CANDIDATES):
    """Addresses of the range to try for ``mac``, in order.

    The order depends on the MAC alone (a start and a stride, both hashes
    of it; the stride shares no factor with the range's size, so the walk
    visits every address once): two agents answering one DISCOVER try the
    same addresses in the same order, whatever each knows to be held, so
    the second finds the first one's claim. Different MACs start apart and
    walk apart, so agents claiming for many new hosts at once rarely
    collide, even where a long run of the range is held (a walk by +1
    would bring every MAC starting in it to the same first free address).

    :param held: ints known held (leases, reservations), skipped.
    :returns: a list of at most ``limit`` addresses (text).
    """
    size = last - first + 1
    digest = zlib.crc32(mac.encode())
    start = digest % size
    stride = 1
    if size > 2:
        stride = 1 + zlib.crc32(mac.encode() + b'/stride') % (size - 1)
        while math.gcd(stride, size) != 1:
            stride = stride % (size - 1) + 1
    found = []
    value = start
    for _step in range(size):
        if first + value not in held:
            found.append(_text(first + value))
            if len(found) >= limit:
                break
        value = (value + stride) % size
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
        # address -> the lease served at it; replaced whole, like
        # _bindings, so a reader in another thread needs no lock.
        self._by_address = {}
        self._confirmed = {}         # mac -> key a claim returned
        self._held = {}              # key -> int of its address
        self.skipped = {}            # key -> reason (bad data)
        self.revision = None
        self.loaded_at = None
        self.stale = False
        #: Counts leases that went away (or a snapshot that replaced all):
        #: an address of the range may be free again.
        self.generation = 0
        #: Called with the MACs whose lease appeared, off the packet path.
        self.on_change = None

    @property
    def held(self):
        """Ints of every lease's address (a copy; O(leases), for claims
        only: the packet path never needs it)."""
        with self._lock:
            return frozenset(self._held.values())

    def get(self, mac):
        """The binding to serve ``mac``, or ``None``."""
        return self._bindings.get(mac)

    def lease(self, mac):
        """The served lease of ``mac``, or ``None``."""
        key = self._served_key(mac)
        return self._leases.get(key) if key else None

    def leases(self):
        return list(self._leases.values())

    def serving(self, address, now):
        """Whether a lease served to some MAC holds ``address`` (text) at
        ``now`` (epoch seconds): not declined, not expired."""
        lease = self._by_address.get(address)
        return lease is not None and lease.expires > now

    def __len__(self):
        return len(self._leases)

    def _served_key(self, mac):
        keys = {key for key in self._by_mac.get(mac, ())
                if not self._leases[key].declined}
        if len(keys) == 1:
            return next(iter(keys))
        confirmed = self._confirmed.get(mac)
        return confirmed if confirmed in keys else None

    def _put(self, lease):
        old = self._leases.get(lease.key)
        if old is not None and old.mac != lease.mac:
            self._drop(lease.key)
        self._leases[lease.key] = lease
        self._held[lease.key] = address_int(lease.address)
        self._by_mac[lease.mac] = self._by_mac.get(
            lease.mac, frozenset()) | {lease.key}

    def _drop(self, key):
        old = self._leases.pop(key, None)
        if old is None:
            return None
        self.generation += 1
        self._held.pop(key, None)
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
        by_address = dict(self._by_address)
        ready = []
        for mac in macs:
            old = self._served.get(mac)
            if by_address.get(old) is not None and \
                    by_address[old].mac == mac:
                del by_address[old]
            key = self._served_key(mac)
            if key is None:
                bindings.pop(mac, None)
                self._served.pop(mac, None)
                continue
            lease = self._leases[key]
            by_address[lease.address] = lease
            if old != lease.address:
                bindings[mac] = self._binding_of(lease)
                self._served[mac] = lease.address
                ready.append(mac)
        self._bindings = bindings
        self._by_address = by_address
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
            self.generation += 1
            self._leases, self._by_mac, self._held = {}, {}, {}
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

    def rebuild(self):
        """Build every served binding again (the lease options changed)."""
        with self._lock:
            self._served = {}
            self._bindings = {}
            self._by_address = {}
            self._publish(list(self._by_mac))

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
