"""The bridge's local copies of Ironic's HTTP-root files: one file each
in ``[vmetal_bridge]cache_dir``, within ``cache_max_bytes``.

What may be kept and when a copy may answer is :mod:`.cache_policy`'s;
this module holds the files:

* a fill writes to ``fill-<token>/body`` as the body streams to its
  client; only once the whole announced length is in is its record
  written beside it and the directory renamed to ``copy-<token>``
  (:mod:`.cache_record`: one rename publishes both); a short, cut or
  failed fill is removed, so a copy is always a whole answer;
* at most one fill per key at a time: other clients of a file being
  filled are forwarded as without a cache;
* the bytes held (copies, fills under way, and dropped copies still open)
  stay within the budget: the least recently used copies nobody is
  sending are evicted first, and a fill that cannot make room is not
  started. A copy being sent is never evicted; a copy dropped because
  Ironic's file changed is unlinked at once, and Linux keeps its blocks
  for the descriptors still sending it until they close (counted until
  then).

The index is in memory, and at start it is rebuilt from the directory:
the whole copies with their records are adopted (least recently used
first, in the order they were published), fills and anything without a
record are removed (:func:`.cache_record.adopt`). An adopted copy is
revalidated with Ironic at every request like any other, so a restart
costs no download and serves nothing stale. Used from the bridge's one
event loop thread only, so no lock; the writes go to the page cache and
are short.
"""

import collections
import dataclasses
import os
import pathlib

from oslo_log import log

from vmetal_ironic.dhcp_agent.bridge import cache_policy
from vmetal_ironic.dhcp_agent.bridge import cache_record
from vmetal_ironic.dhcp_agent import log_limit

LOG = log.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Entry:
    """A published copy."""

    key: str
    path: pathlib.Path
    size: int
    validator: cache_policy.Validator
    headers: tuple
    #: Requests holding it open (never evicted while above 0).
    pins: int = 0
    #: Unlinked (evicted or changed upstream): counted until unpinned.
    removed: bool = False


class Fill:
    """A copy being written as its body streams to the client.

    :meth:`write` never raises: a failed write (a full disk) abandons the
    fill and the client's download goes on.
    """

    def __init__(self, cache, key, size, validator, headers, path, fd):
        self._cache = cache
        self.key = key
        self.size = size
        self.validator = validator
        self.headers = headers
        self.path = path
        self._fd = fd
        self.written = 0

    def write(self, data):
        """Append ``data`` (as the client gets it)."""
        if self._fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                done = os.write(self._fd, view)
                view = view[done:]
                self.written += done
        except OSError as exc:
            self._cache.write_failed(self, exc)
            self.finish()

    def finish(self):
        """Publish the copy if the whole length went in, else drop it;
        safe to repeat."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            whole = (self.written == self.size
                     and os.fstat(fd).st_size == self.size)
        except OSError:
            whole = False
        finally:
            os.close(fd)
        self._cache.finished(self, whole)


class HttpCache:
    """:param directory: where the copies live (created if missing).
    :param max_bytes: the budget.
    :param metrics: :class:`~vmetal_ironic.dhcp_agent.metrics.Metrics` or
        ``None``.
    """

    def __init__(self, directory, max_bytes, metrics=None):
        self.directory = pathlib.Path(directory)
        self.max_bytes = max_bytes
        self.metrics = metrics
        # key -> Entry, least recently used first.
        self._entries = collections.OrderedDict()
        self._filling = set()
        #: Bytes on disk or reserved by fills under way.
        self.used = 0
        self._write_errors = log_limit.LogLimiter(
            1, 300.0, what='cache write failures')

    # -- counting ---------------------------------------------------------

    def _count(self, name, *labels):
        if self.metrics is not None:
            metric = getattr(self.metrics, name)
            (metric.labels(*labels) if labels else metric).inc()

    def _used(self, delta):
        self.used += delta
        if self.metrics is not None:
            self.metrics.bridge_cache_bytes.set(self.used)

    # -- life -------------------------------------------------------------

    def open(self):
        """Create the directory, adopt the whole copies an earlier run
        left there and remove its other fills and copies; copies beyond
        the budget are evicted, least recently published first.

        :returns: ``(copies adopted, fills and copies removed)``.
        :raises OSError: it cannot be created or listed.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        adopted, discarded = cache_record.adopt(self.directory)
        for found in adopted:
            record = found.record
            self._entries[record.key] = Entry(
                record.key, found.body, record.size, record.validator,
                record.headers)
            self.used += record.size
            self._count('bridge_cache_adoptions', 'adopted')
        for _ in range(discarded):
            self._count('bridge_cache_adoptions', 'discarded')
        self._used(0)
        self._make_room(0)
        return len(self._entries), discarded

    def __len__(self):
        return len(self._entries)

    # -- answering from a copy --------------------------------------------

    def checkout(self, key):
        """The copy of ``key``, opened and pinned for one request.

        :returns: ``(entry, descriptor)``, or ``None`` (no copy: a miss).
            Give it back with :meth:`release`.
        """
        entry = self._entries.get(key)
        if entry is None:
            self._count('bridge_cache_requests', 'miss')
            return None
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            # Removed behind the agent's back: forget it.
            self._drop(entry)
            self._count('bridge_cache_requests', 'miss')
            return None
        entry.pins += 1
        self._entries.move_to_end(key)
        return entry, fd

    def release(self, entry, fd):
        """Give back what :meth:`checkout` returned."""
        os.close(fd)
        entry.pins -= 1
        if entry.removed and entry.pins == 0:
            self._used(-entry.size)

    def revalidated(self, entry, current):
        """Count Ironic's answer to a conditional request; a copy that is
        no longer ``current`` (anything but ``304``) is dropped. One
        answer may serve several requests (:mod:`.revalidation`): each
        is counted by :meth:`answered`."""
        self._count('bridge_cache_revalidations',
                    'not_modified' if current else 'changed')
        if not current:
            self._drop(entry)

    def answered(self, current):
        """Count a request that had a copy: served from it (``current``)
        or not, because Ironic's file changed."""
        self._count('bridge_cache_requests', 'hit' if current else 'changed')

    def _drop(self, entry):
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        if entry.removed:
            return
        entry.removed = True
        cache_record.remove(entry.path)
        if entry.pins == 0:
            self._used(-entry.size)

    # -- filling ----------------------------------------------------------

    def _make_room(self, size):
        """Evict unpinned copies, least recently used first, until ``size``
        more bytes fit; ``False`` if they cannot."""
        for entry in list(self._entries.values()):
            if self.used + size <= self.max_bytes:
                break
            if entry.pins == 0:
                self._drop(entry)
                self._count('bridge_cache_evictions')
        return self.used + size <= self.max_bytes

    def begin(self, key, size, validator, headers):
        """Start a fill of ``size`` bytes for ``key``.

        :returns: a :class:`Fill`, or ``None``: another fill of ``key`` is
            under way, it does not fit the budget, or the file cannot be
            created.
        """
        if key in self._filling:
            self._count('bridge_cache_fills', 'busy')
            return None
        if size > self.max_bytes or not self._make_room(size):
            self._count('bridge_cache_fills', 'no_room')
            return None
        try:
            path, fd = cache_record.create_fill(self.directory)
        except OSError as exc:
            self._write_errors.warning('Bridge cache: cannot create a fill '
                                       'in %s: %s', self.directory,
                                       exc.strerror or exc)
            self._count('bridge_cache_fills', 'failed')
            return None
        self._filling.add(key)
        self._used(size)
        return Fill(self, key, size, validator, tuple(headers), path, fd)

    def write_failed(self, fill, exc):
        self._write_errors.warning('Bridge cache: writing %s failed (%s); '
                                   'the download goes on without a copy',
                                   fill.path, exc.strerror or exc)

    def finished(self, fill, whole):
        """Called by :meth:`Fill.finish`: publish or unlink."""
        self._filling.discard(fill.key)
        if whole:
            try:
                final = cache_record.publish(fill.path, cache_record.Record(
                    fill.key, fill.size, fill.validator, fill.headers))
            except OSError as exc:
                self.write_failed(fill, exc)
                whole = False
        if not whole:
            cache_record.remove(fill.path)
            self._used(-fill.size)
            self._count('bridge_cache_fills', 'discarded')
            return
        old = self._entries.get(fill.key)
        if old is not None:
            self._drop(old)
        self._entries[fill.key] = Entry(fill.key, final, fill.size,
                                        fill.validator, fill.headers)
        self._count('bridge_cache_fills', 'published')
