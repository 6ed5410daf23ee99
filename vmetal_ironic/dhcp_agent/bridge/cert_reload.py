"""The callback listener's certificate, taken up again when its files change.

On Kubernetes ``callback_cert_file`` and ``callback_key_file`` come from a
Secret that cert-manager renews; the kubelet swaps the mounted files by
flipping the volume's ``..data`` symlink. :class:`CertificateReload` reads
both files at every check, and when their contents changed loads the new
pair into the listener's own ``SSLContext``: OpenSSL applies it to the
handshakes that follow, while connections already open keep theirs.

Two facts shape it:

* a failed ``load_cert_chain`` on a live context is not harmless: a key
  that does not match leaves the context without a usable key, and every
  later handshake fails. So the pair is first loaded into a scratch
  context, and only a pair that loaded there goes into the live one;
* what is checked must be what is loaded, or a file rewritten in between
  would skip the check. So the bytes read once are handed to OpenSSL
  through anonymous in-memory files (``memfd_create``): nothing is written
  to disk, which also suits the pod's read-only root filesystem.

Python's ``ssl`` cannot tell what a loaded context serves, so the
certificate's expiry is read from the same bytes with ``cryptography``
whenever a pair goes in, and published as
``vmetal_bridge_callback_cert_expiry_timestamp_seconds`` for an alert
ahead of a renewal that did not happen.
"""

import contextlib
import hashlib
import os
import ssl

from cryptography import x509
from oslo_log import log

LOG = log.getLogger(__name__)

#: A certificate chain or key larger than this is not one (a chain of a
#: few certificates is a few KiB): read no further.
MAX_FILE_BYTES = 1024 * 1024
#: At most this many reads of the key, each followed by the certificate
#: again, for a pair of one version; then the pair read last is checked
#: as it is.
_PAIR_READS = 3


def _no_password():
    """An encrypted key fails to load (no option gives a password) rather
    than have OpenSSL ask for one on a terminal."""
    return b''


class _Broken(Exception):
    """A version of the files that does not load: ``path`` and ``reason``."""

    def __init__(self, path, reason):
        super().__init__(f'{path}: {reason}')
        self.path = path
        self.reason = reason


def not_after(cert):
    """The expiry (notAfter, Unix time) of the first certificate of the
    PEM chain ``cert`` (bytes): the one the listener presents.

    :raises ValueError: no PEM certificate in ``cert``.
    """
    return x509.load_pem_x509_certificate(
        cert).not_valid_after_utc.timestamp()


def _read(path):
    with open(path, 'rb') as source:
        data = source.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _Broken(path, f'larger than {MAX_FILE_BYTES} bytes')
    return data


def _read_named(path):
    """:func:`_read`, an error naming the file."""
    try:
        return _read(path)
    except OSError as exc:
        raise _Broken(path, exc.strerror or str(exc)) from None


@contextlib.contextmanager
def _in_memory(*contents):
    """Paths OpenSSL can open for ``contents`` (``None`` stays ``None``),
    backed by anonymous memory files closed on exit."""
    fds = []
    try:
        paths = []
        for data in contents:
            if data is None:
                paths.append(None)
                continue
            fd = os.memfd_create('vmetal-callback-tls', os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, data)
            paths.append(f'/proc/self/fd/{fd}')
        yield paths
    finally:
        for fd in fds:
            os.close(fd)


class CertificateReload:
    """Keep ``context`` serving the pair the files hold now.

    :param context: the listener's server ``ssl.SSLContext``, already
        loaded from the files.
    :param cert_file: path of the PEM certificate (chain).
    :param key_file: path of its key, or ``None`` (in ``cert_file``).
    :param metrics: :class:`~vmetal_ironic.dhcp_agent.metrics.Metrics` or
        ``None``.

    Not thread-safe: call :meth:`check` from the thread that serves the
    listener (the bridge's event loop), so that no handshake reads the
    context while it changes.
    """

    def __init__(self, context, cert_file, key_file=None, metrics=None):
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self.metrics = metrics
        #: Digest of the pair being served (``None``: the one loaded at
        #: start, whose bytes were not seen here).
        self.served = None
        #: The version that did not load last: not tried, nor logged,
        #: again until the files change.
        self.broken = None
        #: ``(path, reason)`` of the version that did not load, while it
        #: is the files' latest; ``None`` once a pair loads.
        self.problem = None
        self._good = None

    def _version(self):
        """``(digest, cert bytes, key bytes)`` of the files now.

        The two files are read one after the other, and the kubelet may
        flip ``..data`` in between: the certificate of one version with
        the key of the next would be reported as a key that does not
        match. So the certificate is read again after the key, and the
        pair is taken only when it did not change meanwhile (a new key
        always comes with a new certificate). A few tries, then the last
        pair read goes on as is: files rewritten faster than they can be
        read are what the check reports.

        :raises _Broken: a file cannot be read.
        """
        cert, key = _read_named(self.cert_file), None
        for _attempt in range(_PAIR_READS if self.key_file else 0):
            key = _read_named(self.key_file)
            again = _read_named(self.cert_file)
            if again == cert:
                break
            cert = again
        contents = (cert, key)
        digest = hashlib.sha256()
        for data in contents:
            data = data or b''
            digest.update(len(data).to_bytes(8, 'big') + data)
        return (digest.hexdigest(), *contents)

    def _validate(self, cert, key):
        """Load the pair into a scratch context.

        :raises _Broken: naming the file at fault.
        """
        scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            # Parses every certificate of the chain: a truncated or
            # garbled certificate file is told apart from a bad key.
            scratch.load_verify_locations(cadata=cert.decode('ascii'))
        except (ValueError, ssl.SSLError) as exc:
            raise _Broken(self.cert_file,
                          f'no whole PEM certificate ({exc})') from None
        with _in_memory(cert, key) as (cert_path, key_path):
            try:
                scratch.load_cert_chain(cert_path, key_path,
                                        password=_no_password)
            except ssl.SSLError as exc:
                if exc.reason == 'KEY_VALUES_MISMATCH':
                    raise _Broken(self.key_file or self.cert_file,
                                  'the key does not match the certificate '
                                  f'in {self.cert_file}') from None
                raise _Broken(self.key_file or self.cert_file,
                              f'no usable private key ({exc})') from None

    def _install(self, cert, key):
        with _in_memory(cert, key) as (cert_path, key_path):
            self.context.load_cert_chain(cert_path, key_path,
                                         password=_no_password)

    def _count(self, result):
        if self.metrics is not None:
            self.metrics.bridge_callback_cert_reloads.labels(result).inc()

    def check(self):
        """Load the files' pair if it changed since the last check.

        :returns: ``'loaded'``, ``'failed'`` (a new version that did not
            load: the previous pair is still served) or ``None`` (nothing
            new).
        """
        try:
            digest, cert, key = self._version()
        except _Broken as exc:
            # Unreadable: its version is what it says, so the same error
            # is logged once.
            return self._failed(('unreadable', exc.path, exc.reason), exc)
        if digest in (self.served, self.broken):
            return None
        try:
            self._validate(cert, key)
        except _Broken as exc:
            return self._failed(digest, exc)
        try:
            self._install(cert, key)
        except (OSError, ssl.SSLError) as exc:
            # It loaded into the scratch context from the same bytes, so
            # only the system (no memory, no /proc) ends here: put the last
            # good pair back, as the failed load may have half-replaced it.
            if self._good is not None:
                self._install(*self._good)
            return self._failed(digest, _Broken(self.cert_file, str(exc)))
        changed = self.served is not None or self.broken is not None
        self.served, self.broken, self._good = digest, None, (cert, key)
        self.problem = None
        self._expiry(cert)
        if changed:
            self._count('loaded')
            LOG.info('Bridge: callback listener serves the new certificate '
                     'of %s from the next handshake on', self.cert_file)
        return 'loaded' if changed else None

    def _expiry(self, cert):
        if self.metrics is None:
            return
        try:
            expires = not_after(cert)
        except ValueError as exc:
            # OpenSSL took it, so only a certificate cryptography parses
            # more strictly ends here: the gauge keeps its last value.
            LOG.warning('Bridge: cannot read the expiry of %s: %s',
                        self.cert_file, exc)
            return
        self.metrics.bridge_callback_cert_expiry.set(expires)

    def _failed(self, version, exc):
        if version == self.broken:
            return None
        self.broken = version
        self.problem = (exc.path, exc.reason)
        self._count('failed')
        LOG.warning('Bridge: the callback listener keeps its certificate: '
                    '%s does not load (%s); tried again when the files '
                    'change', exc.path, exc.reason)
        return 'failed'
