"""The boot-file root over HTTP, for UEFI HTTP boot clients.

A UEFI HTTP boot client (DHCP vendor class ``HTTPClient``) is answered
with a URL instead of a TFTP file name; pointing it at the agent itself
means the bootloader needs no web server besides the agent. The server is
read-only: ``GET`` and ``HEAD`` of a regular file under the root (the same
jail as TFTP, :func:`~vmetal_ironic.dhcp_agent.tftp.resolve`); no listings, no
other methods, a bounded number of connections, a timeout on each.
"""

import http.server
import threading
import urllib.parse

from oslo_log import log

from vmetal_ironic.dhcp_agent import tftp
from vmetal_ironic.dhcp_agent import log_limit

LOG = log.getLogger(__name__)

# Seconds a client may be silent mid-request or mid-response.
_IDLE = 30
# Seconds a new connection waits for a free slot before it is closed.
_QUEUE_WAIT = 10


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
                self.connection.sendfile(handle)
        service.result('served', size if body else 0)

    def log_request(self, code='-', size='-'):
        LOG.debug('HTTP %s %s from %s: %s', self.command, self.path[:100],
                  self.client_address[0], code)

    def log_error(self, format, *args):
        # Malformed requests, timeouts: rate-limited like TFTP refusals.
        self.server.service.refusals.warning(
            'HTTP request from %s refused: ' + format,
            self.client_address[0], *args)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # A boot storm connects all at once.
    request_queue_size = 1024

    def __init__(self, address, service, slots):
        self.service = service
        self._slots = threading.BoundedSemaphore(slots)
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        # Past the limit a connection waits here (and the next ones in the
        # listen backlog) until a slot frees up.
        if not self._slots.acquire(timeout=_QUEUE_WAIT):
            self.service.result('busy')
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

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
    :param metrics: :class:`~vmetal_ironic.dhcp_agent.metrics.Metrics` or ``None``.
    :raises ValueError: ``root`` is not a readable directory.
    """

    def __init__(self, root, address, port, link_dirs=(), max_connections=256,
                 metrics=None):
        self.root = tftp.real_root(root)
        self.link_dirs = tuple(tftp.real_root(d, 'link_dirs')
                               for d in link_dirs)
        self.address = address
        self.port = port
        self.max_connections = max_connections
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

    def start(self):
        """Bind and serve.

        :raises OSError: the address/port cannot be bound.
        """
        self._server = _Server((self.address, self.port), self,
                               self.max_connections)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={'poll_interval': 0.2},
                                        name='http-boot', daemon=True)
        self._thread.start()

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
