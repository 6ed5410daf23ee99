"""Read-only TFTP for the boot files.

:class:`TftpService` binds the listening socket and runs
:class:`~vmetal_ironic.dhcp_agent.tftp_server.TftpServer` on a daemon thread.
Every name a client asks for goes through :func:`resolve`, which keeps it
inside the root (no ``..``, no absolute path, no symlink pointing out
except into ``link_dirs``); writes are refused (TFTP error 2). Why this is
not tftpy's server loop: ``doc/source/tftp.rst``.
"""

import os
import resource
import socket
import threading

from oslo_log import log

from vmetal_ironic.dhcp_agent import mtu
from vmetal_ironic.dhcp_agent import tftp_packet
from vmetal_ironic.dhcp_agent import tftp_pump
from vmetal_ironic.dhcp_agent import tftp_server

LOG = log.getLogger(__name__)
# Descriptors kept free for the rest of the agent (DHCP, RA, metrics,
# store connections, the boot files themselves).
_SPARE_FDS = 256


def real_root(root, option='root'):
    """:returns: ``root`` with symlinks resolved.

    :raises ValueError: it is not a readable directory.
    """
    real = os.path.realpath(root)
    if not os.path.isdir(real) or not os.access(real, os.R_OK | os.X_OK):
        raise ValueError(f'[vmetal_tftp]{option} {root!r} is not a readable '
                         'directory')
    return real


def resolve(root, name, link_dirs=()):
    """Map a requested name to a file inside ``root``.

    :param root: the real root, already ``realpath``-ed.
    :param name: the name as the client sent it.
    :param link_dirs: real directories symlinks may also point into.
    :returns: the path, or ``None`` when the name is absolute, climbs out,
        or resolves (through symlinks) outside ``root`` and ``link_dirs``,
        or is not a regular file.
    """
    if not name or name.startswith('/') or '\\' in name or '\0' in name:
        return None
    if '..' in name.split('/'):
        return None
    path = os.path.realpath(os.path.join(root, name))
    inside = any(path.startswith(base + os.sep)
                 for base in (root, *link_dirs))
    if not inside or not os.path.isfile(path):
        return None
    return path


class TftpService:
    """The TFTP server thread.

    :param root: directory to serve.
    :param address: address to listen on.
    :param port: UDP port.
    :param metrics: :class:`~vmetal_ironic.dhcp_agent.metrics.Metrics` or ``None``.
    :param timeout: retransmission timeout (seconds) unless a client asks.
    :param retries: resends of a window before a transfer is dropped.
    :param link_dirs: real directories symlinks in ``root`` may point into.
    :param single_port: send every transfer from ``port``.
    :param max_sessions: concurrent transfers; more are answered "busy".
    :param max_windowsize: largest RFC 7440 window granted.
    :param max_timeout: longest client ``timeout`` option granted.
    :param max_sessions_per_address: transfers of one peer address at once.
    :param interface: the interface of ``address``; blocks are capped to
        its MTU (looked up by address when ``None``).
    :param threads: event loops sharing the transfers in classic mode
        (single-port mode runs one).
    :param compiled: run the compiled data path when it is built;
        :attr:`data_path` says which one runs.
    :raises ValueError: ``root`` is not a readable directory.
    """

    def __init__(self, root, address, port=69, metrics=None, timeout=5,
                 retries=3, link_dirs=(), single_port=False,
                 max_sessions=4096, max_windowsize=64, max_timeout=10,
                 max_sessions_per_address=32, interface=None, threads=2,
                 compiled=True):
        self.root = real_root(root)
        self.link_dirs = tuple(os.path.realpath(d) for d in link_dirs)
        self.address = address
        self.port = port
        self.metrics = metrics
        self.single_port = single_port
        self.interface = interface
        self.threads = threads
        self.compiled = compiled
        self.limits = tftp_server.Limits(
            timeout=timeout, retries=retries, max_sessions=max_sessions,
            max_windowsize=max_windowsize, max_timeout=max_timeout,
            max_sessions_per_address=max_sessions_per_address)
        self._server = None
        self._thread = None

    @property
    def session_count(self):
        """Transfers in progress (0 when not running)."""
        return self._server.session_count if self._server else 0

    def _on_result(self, result, size):
        if self.metrics is not None:
            self.metrics.tftp_transfers.labels(result).inc()
            if size:
                self.metrics.tftp_bytes.inc(size)

    def _on_limit(self, what):
        if self.metrics is not None:
            self.metrics.tftp_limited.labels(what).inc()

    def open_file(self, name):
        """The jail: :returns: the path to serve for ``name``, or ``None``."""
        return resolve(self.root, name, self.link_dirs)

    def _reserve_descriptors(self):
        # Classic mode holds one socket per transfer: make sure the process
        # may open that many, or serve fewer transfers than configured
        # rather than fail on accept.
        need = self.limits.max_sessions + _SPARE_FDS
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < need:
            target = need if hard == resource.RLIM_INFINITY else min(
                hard, need)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        if (not self.single_port and soft != resource.RLIM_INFINITY
                and soft < need):
            allowed = max(1, soft - _SPARE_FDS)
            LOG.warning('[vmetal_tftp]max_sessions %d lowered to %d: the '
                        'descriptor limit is %d', self.limits.max_sessions,
                        allowed, soft)
            self.limits.max_sessions = allowed

    def start(self):
        """Bind and serve on a daemon thread.

        :raises OSError: the address/port cannot be bound.
        """
        if not self.single_port:
            self._reserve_descriptors()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        # Looked up at each start: the agent restarts TFTP on a re-created
        # interface, whose MTU may have changed.
        self.limits.max_blksize = mtu.max_blksize(
            self.address, tftp_packet.MAX_BLKSIZE, self.interface)
        self._server = tftp_server.TftpServer(
            sock, self.open_file, self.limits, single_port=self.single_port,
            on_result=self._on_result, on_limit=self._on_limit,
            threads=self.threads, compiled=self.compiled)
        LOG.info('TFTP on %s:%d serves blocks on the %s data path%s',
                 self.address, self.port, self._server.data_path,
                 '' if self._server.data_path == tftp_pump.COMPILED
                 else self._why_python())
        if self.metrics is not None:
            self.metrics.tftp_sessions.set_function(
                lambda: self.session_count)
            # Alerting on a fleet whose agents fell back to the slower
            # path needs both series, so the other one reads 0.
            for path in (tftp_pump.COMPILED, tftp_pump.PYTHON):
                self.metrics.tftp_data_path.labels(path).set(
                    int(path == self._server.data_path))
        self._thread = threading.Thread(target=self._serve, name='tftp',
                                        daemon=True)
        self._thread.start()

    def _why_python(self):
        if not self.compiled:
            return ' ([vmetal_tftp]compiled = false)'
        return ' (the compiled module is not built)'

    @property
    def data_path(self):
        """``compiled`` or ``python`` while serving, else ``None``."""
        return self._server.data_path if self._server else None

    def _serve(self):
        server = self._server
        try:
            server.serve()
        except Exception:  # the loop's own bug: say so, do not hide it
            LOG.exception('TFTP server stopped')
        finally:
            server.sock.close()

    def stop(self):
        """Stop serving and close every socket and file."""
        if self._server is not None:
            self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

