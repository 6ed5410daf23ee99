"""Read-only TFTP for the boot files, on tftpy.

tftpy opens any file that exists under its root itself, following
symlinks wherever they point, and accepts writes. So tftpy is given an
empty private directory as its root: every read reaches
:meth:`TftpService.open_file` (tftpy's ``dyn_file_func``), which resolves
the name inside the real root with ``realpath`` and refuses anything that
lands outside; every write reaches ``upload_open``, which refuses it (TFTP
error 2, access violation). tftpy itself already refuses names whose
``..`` climb out of its root with TFTP error 4.
"""

import contextlib
import os
import shutil
import tempfile
import threading

import tftpy
from oslo_log import log

LOG = log.getLogger(__name__)


class _CountingFile:
    """A read-only file that reports the bytes tftpy reads from it."""

    def __init__(self, handle, on_read):
        self._handle = handle
        self._on_read = on_read

    def read(self, size=-1):
        data = self._handle.read(size)
        if data:
            self._on_read(len(data))
        return data

    def __getattr__(self, name):
        # seek, tell, close, closed, name, fileno: tftpy uses them all.
        return getattr(self._handle, name)


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
    :param metrics: :class:`~vmetal_ironic.pxe.metrics.Metrics` or ``None``.
    :raises ValueError: ``root`` is not a readable directory.
    """

    def __init__(self, root, address, port=69, metrics=None, timeout=5,
                 retries=3, link_dirs=()):
        real = os.path.realpath(root)
        if not os.path.isdir(real) or not os.access(real, os.R_OK | os.X_OK):
            raise ValueError(f'[vmetal_tftp]root {root!r} is not a readable '
                             'directory')
        self.root = real
        self.link_dirs = tuple(os.path.realpath(d) for d in link_dirs)
        self.address = address
        self.port = port
        self.metrics = metrics
        self.timeout = timeout
        self.retries = retries
        self._jail = None
        self._server = None
        self._thread = None

    def _count_bytes(self, size):
        if self.metrics is not None:
            self.metrics.tftp_bytes.inc(size)

    def _result(self, result):
        if self.metrics is not None:
            self.metrics.tftp_transfers.labels(result).inc()

    def open_file(self, name, raddress=None, rport=None):
        """tftpy's ``dyn_file_func``: open ``name`` read-only or refuse."""
        path = resolve(self.root, name, self.link_dirs)
        if path is None:
            LOG.warning('TFTP read of %r from %s refused: outside %s or not '
                        'a file', name, raddress, self.root)
            self._result('refused')
            return None
        try:
            handle = open(path, 'rb')  # noqa: SIM115 - tftpy closes it
        except OSError as exc:
            LOG.warning('TFTP read of %r from %s failed: %s', name, raddress,
                        exc)
            self._result('failed')
            return None
        LOG.debug('TFTP read of %s from %s:%s', name, raddress, rport)
        self._result('served')
        return _CountingFile(handle, self._count_bytes)

    def refuse_upload(self, path, context):
        """tftpy's ``upload_open``: this server is read-only."""
        LOG.warning('TFTP write of %r refused: read-only server', path)
        self._result('write_refused')
        return None

    def start(self):
        """Bind and serve on a daemon thread.

        :raises OSError: the address/port cannot be bound.
        """
        self._jail = tempfile.mkdtemp(prefix='vmetal-tftp-')
        self._server = tftpy.TftpServer(self._jail,
                                        dyn_file_func=self.open_file,
                                        upload_open=self.refuse_upload)
        ready = threading.Event()
        failure = []

        def serve():
            while True:
                try:
                    self._server.listen(self.address, self.port,
                                        timeout=self.timeout,
                                        retries=self.retries)
                    return
                except Exception as exc:  # see below
                    if not self._server.is_running.is_set():
                        # Bind failed: report it to start().
                        failure.append(exc)
                        ready.set()
                        return
                    # A transfer broke tftpy's loop: drop its sessions and
                    # serve again rather than stop serving boot files.
                    LOG.exception('TFTP server loop failed; restarting')
                    if not self._restart():
                        return

        self._thread = threading.Thread(target=serve, name='tftp',
                                        daemon=True)
        self._thread.start()
        # listen() binds first, then marks itself running.
        while not ready.is_set() and not self._server.is_running.is_set():
            ready.wait(0.01)
        if failure:
            raise failure[0]

    def _restart(self):
        old = self._server
        old.is_running.clear()
        for session in list(old.sessions.values()):
            with contextlib.suppress(Exception):
                session.end()
        old.sock.close()
        if old.shutdown_immediately or old.shutdown_gracefully:
            return False
        self._server = tftpy.TftpServer(self._jail,
                                        dyn_file_func=self.open_file,
                                        upload_open=self.refuse_upload)
        return True

    def stop(self):
        if self._server is not None:
            self._server.stop(now=True)
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._jail is not None:
            shutil.rmtree(self._jail, ignore_errors=True)
