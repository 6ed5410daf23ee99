"""The boot-file root over HTTP, for UEFI HTTP boot clients.

A UEFI HTTP boot client (DHCP vendor class ``HTTPClient``) is answered
with a URL instead of a TFTP file name; pointing it at the agent itself
means the bootloader needs no web server besides the agent. The server is
read-only: ``GET`` and ``HEAD`` of a regular file under the root (the same
jail as TFTP, :func:`~vmetal_ironic.dhcp_agent.tftp.resolve`); no listings, no
other methods.

Slow clients cannot hold it (review finding 12): the request line and
headers must arrive within :data:`_HEAD_DEADLINE` in total, each read and
each write must make progress within :data:`_IDLE`, a body must go out at
:data:`_MIN_RATE` on average, one address holds at most
``max_connections_per_address`` connections, and a connection finding no
room ends the oldest connection still waiting for its request head, or
is answered 503 at once: the accept loop never waits.
"""

import contextlib
import http.server
import io
import socket
import threading
import time
import urllib.parse

from oslo_log import log

from vmetal_ironic.dhcp_agent import tftp
from vmetal_ironic.dhcp_agent import log_limit

LOG = log.getLogger(__name__)

# Seconds a read or a write may make no progress.
_IDLE = 10
# Seconds from the first byte of a request to the end of its headers.
_HEAD_DEADLINE = 10
# Bytes a second a body goes out at, on average, after the first _IDLE s
# (a UEFI client on a 100 Mbit/s link takes 12 MB/s).
_MIN_RATE = 64 * 1024
# Bytes per sendfile() call, so the body deadline is looked at.
_CHUNK = 1024 * 1024
_BUSY = (b'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n'
         b'Connection: close\r\nRetry-After: 1\r\n\r\n')


class _Deadline(Exception):
    """A connection missed its deadline (reading the head or a body)."""


class _TimedReader(io.RawIOBase):
    """The connection's reads, each bounded by ``_IDLE`` and by the
    deadline of the request head being read."""

    def __init__(self, sock):
        self._sock = sock
        self.deadline = None

    def readable(self):
        return True

    def readinto(self, buffer):
        timeout = _IDLE
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise _Deadline('request head too slow')
        self._sock.settimeout(timeout)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            raise _Deadline('silent client') from None


def agent_url(conf, server_address):
    """:returns: the URL HTTP boot clients are sent to on this agent, or
    ``None`` when ``[vmetal_tftp]http_port`` is not set."""
    group = conf.vmetal_tftp
    if not group.http_port:
        return None
    host = group.address or server_address
    name = urllib.parse.quote(group.http_boot_file.lstrip('/'))
    return f'http://{host}:{group.http_port}/{name}'


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'vmetal-dhcp-agent'
    sys_version = ''
    timeout = _IDLE
    protocol_version = 'HTTP/1.1'

    def setup(self):
        super().setup()
        self._reader = _TimedReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self):
        # The head's deadline starts when the previous response ended (a
        # kept-alive connection waits for its next request the same way).
        self._reader.deadline = time.monotonic() + _HEAD_DEADLINE
        self._waiting(True)
        try:
            super().handle_one_request()
        except _Deadline:
            self.server.service.limited('http_deadline')
            self.close_connection = True

    def _waiting(self, waiting):
        connection = self.server.connection_of(self.connection)
        if connection is not None:
            self.server.slots.waiting(connection, waiting)

    def parse_request(self):
        ok = super().parse_request()
        self._reader.deadline = None  # the head is in
        self._waiting(False)
        return ok

    def do_GET(self):
        self._serve(body=True)

    def do_HEAD(self):
        self._serve(body=False)

    def _serve(self, body):
        service = self.server.service
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        path = service.open_file(name.lstrip('/')) if name else None
        if path is None:
            service.result('refused')
            service.refusals.warning('HTTP %s of %r from %s refused: outside '
                                     '%s or not a file', self.command,
                                     name[:100], self.client_address[0],
                                     service.root)
            self.send_error(404)
            return
        try:
            handle = open(path, 'rb')  # noqa: SIM115 - closed below
        except OSError as exc:
            service.result('failed')
            service.refusals.warning('HTTP read of %r failed: %s', name,
                                     exc.strerror)
            self.send_error(404)
            return
        with handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            self.send_response(200)
            self.send_header('Content-Type', 'application/octet-stream')
            self.send_header('Content-Length', str(size))
            self.end_headers()
            if body:
                self.wfile.flush()
                self._send_body(handle, size)
        service.result('served', size if body else 0)

    def _send_body(self, handle, size):
        sock = self.connection
        started = time.monotonic()
        deadline = started + _IDLE + size / _MIN_RATE
        offset = 0
        while offset < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Deadline('body read too slowly')
            sock.settimeout(min(_IDLE, left))
            try:
                sent = sock.sendfile(handle, offset,
                                     min(_CHUNK, size - offset))
            except TimeoutError:
                raise _Deadline('body read too slowly') from None
            if not sent:
                break  # the file shrank
            offset += sent

    def log_request(self, code='-', size='-'):
        LOG.debug('HTTP %s %s from %s: %s', self.command, self.path[:100],
                  self.client_address[0], code)

    def log_error(self, format, *args):
        # Malformed requests, timeouts: rate-limited like TFTP refusals.
        self.server.service.refusals.warning(
            'HTTP request from %s refused: ' + format,
            self.client_address[0], *args)


class _Connection:
    """One admitted connection: its socket, address and whether it is
    waiting for a request head (the idle state a full server evicts)."""

    __slots__ = ('address', 'gone', 'sock')

    def __init__(self, sock, address):
        self.sock = sock
        self.address = address
        self.gone = False


class _Slots:
    """Admission: ``slots`` connections in all, ``per_address`` of one
    address. A connection that finds no room ends the oldest connection
    still waiting for its request head (of its own address first, then of
    anyone): a trickling head is what a slow attack holds slots with,
    while a connection sending a body is doing real work."""

    def __init__(self, slots, per_address):
        self.slots = slots
        self.per_address = per_address
        self._lock = threading.Lock()
        self._by_address = {}       # address -> {connection: None}
        self._waiting = {}          # connections waiting for a head
        self._count = 0

    def admit(self, sock, address):
        """:returns: ``(connection or None, evicted or None)``."""
        with self._lock:
            mine = self._by_address.get(address, {})
            evicted = None
            if len(mine) >= self.per_address:
                evicted = next((c for c in self._waiting
                                if c.address == address), None)
                if evicted is None:
                    return None, None
                self._drop(evicted)
            elif self._count >= self.slots:
                evicted = next(iter(self._waiting), None)
                if evicted is None:
                    return None, None
                self._drop(evicted)
            connection = _Connection(sock, address)
            self._by_address.setdefault(address, {})[connection] = None
            self._waiting[connection] = None
            self._count += 1
        return connection, evicted

    def _drop(self, connection):
        if connection.gone:
            return
        connection.gone = True
        self._count -= 1
        self._waiting.pop(connection, None)
        mine = self._by_address[connection.address]
        del mine[connection]
        if not mine:
            del self._by_address[connection.address]

    def waiting(self, connection, waiting):
        """The connection started (``True``) or ended waiting for a head."""
        with self._lock:
            if connection.gone:
                return
            if waiting:
                self._waiting[connection] = None
            else:
                self._waiting.pop(connection, None)

    def release(self, connection):
        with self._lock:
            self._drop(connection)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # A boot storm connects all at once.
    request_queue_size = 1024

    def __init__(self, address, service, slots, slots_per_address):
        self.service = service
        self.slots = _Slots(slots, slots_per_address)
        self._connections = {}  # socket -> _Connection, for the handler
        # Handler threads still running. They are daemon threads, so a
        # slow client cannot hold the agent's exit; ThreadingMixIn keeps
        # no list of those, and close_connections() needs one.
        self._handlers = set()
        super().__init__(address, _Handler)

    def connection_of(self, sock):
        return self._connections.get(sock)

    def process_request(self, request, client_address):
        # Never waits: a connection that finds no room is told 503 and
        # closed, and accept goes on.
        connection, evicted = self.slots.admit(request, client_address[0])
        if evicted is not None:
            self.service.limited('http_evicted')
            # Its handler's read fails at once and the thread ends.
            with contextlib.suppress(OSError):
                evicted.sock.shutdown(socket.SHUT_RDWR)
        if connection is None:
            self.service.result('busy')
            self.service.limited('http_busy')
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        self._connections[request] = connection
        handler = threading.Thread(target=self.process_request_thread,
                                   args=(request, client_address),
                                   name='http-boot-connection', daemon=True)
        self._handlers.add(handler)
        try:
            handler.start()
        except Exception:
            self._handlers.discard(handler)
            self._forget(request, connection)
            raise

    def _forget(self, request, connection):
        self._connections.pop(request, None)
        self.slots.release(connection)

    def process_request_thread(self, request, client_address):
        connection = self._connections.get(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request, connection)
            self._handlers.discard(threading.current_thread())

    def close_connections(self, timeout):
        """Cut every admitted connection and wait up to ``timeout``
        seconds in all for their handlers to end (and log what they log)
        before the caller goes on."""
        for sock in list(self._connections):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for handler in list(self._handlers):
            handler.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request, client_address):
        # A client that went away mid-transfer: not a traceback.
        self.service.refusals.warning('HTTP connection from %s ended early',
                                      client_address[0])


class HttpBootService:
    """Serve the boot-file root over HTTP on a daemon thread.

    :param root: directory to serve.
    :param address: address to listen on.
    :param port: TCP port.
    :param link_dirs: real directories symlinks in ``root`` may point into.
    :param max_connections: connections served at once.
    :param max_connections_per_address: connections of one client address
        at once.
    :param metrics: :class:`~vmetal_ironic.dhcp_agent.metrics.Metrics` or ``None``.
    :raises ValueError: ``root`` is not a readable directory.
    """

    def __init__(self, root, address, port, link_dirs=(), max_connections=256,
                 metrics=None, max_connections_per_address=16):
        self.root = tftp.real_root(root)
        self.link_dirs = tuple(tftp.real_root(d, 'link_dirs')
                               for d in link_dirs)
        self.address = address
        self.port = port
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.metrics = metrics
        self.refusals = log_limit.LogLimiter(
            10, 10.0, what='refused HTTP boot requests')
        self._server = None
        self._thread = None

    def open_file(self, name):
        return tftp.resolve(self.root, name, self.link_dirs)

    def result(self, result, size=0):
        if self.metrics is not None:
            self.metrics.http_requests.labels(result).inc()
            if size:
                self.metrics.http_bytes.inc(size)

    def limited(self, what):
        if self.metrics is not None:
            self.metrics.tftp_limited.labels(what).inc()

    def start(self):
        """Bind and serve.

        :raises OSError: the address/port cannot be bound.
        """
        self._server = _Server((self.address, self.port), self,
                               self.max_connections,
                               self.max_connections_per_address)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={'poll_interval': 0.2},
                                        name='http-boot', daemon=True)
        self._thread.start()

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            # Accepting has stopped: no handler starts after this.
            self._server.close_connections(timeout=2.0)
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
