"""The places the bridge forwards to, and the connections to them.

An :class:`Upstream` is one base URL: Ironic's HTTP root, Ironic's API,
or one ramdisk's API. TLS is checked against a CA bundle (or the system's
store, or a ramdisk's own certificate); there is no switch to turn the
check off.
"""

import asyncio
import dataclasses
import ssl
import urllib.parse

DEFAULT_PORTS = {'http': 80, 'https': 443}


class UpstreamError(ValueError):
    """A bad upstream URL; the message names it."""


@dataclasses.dataclass(frozen=True)
class Upstream:
    """A forward's target: ``name`` for logs (its URL), ``scheme``,
    ``host``, ``port`` and ``base`` path (no trailing slash); ``tls`` is
    an ``ssl.SSLContext`` for https."""

    name: str
    scheme: str
    host: str
    port: int
    base: str = ''
    tls: ssl.SSLContext = None

    @property
    def authority(self):
        """The ``Host`` header for requests to it."""
        host = f'[{self.host}]' if ':' in self.host else self.host
        if self.port == DEFAULT_PORTS[self.scheme]:
            return host
        return f'{host}:{self.port}'

    def target(self, path):
        """The request target of ``path`` (with its query) upstream."""
        return self.base + path

    async def connect(self, timeout):
        """Open a connection.

        :returns: ``(reader, writer)``.
        :raises OSError: refused or unreachable; ``ssl.SSLError`` on a bad
            certificate; ``asyncio.TimeoutError`` after ``timeout``.
        """
        # The reader's limit sizes its buffer (see exchange.CHUNK).
        return await asyncio.wait_for(asyncio.open_connection(
            self.host, self.port, ssl=self.tls,
            server_hostname=self.host if self.tls else None,
            limit=262144), timeout)


def tls_context(ca_file=None, cadata=None):
    """A client context that checks the certificate and the host name."""
    context = ssl.create_default_context(cafile=ca_file, cadata=cadata)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def from_url(name, url, ca_file=None):
    """:returns: the :class:`Upstream` of ``url``.

    :raises UpstreamError: not http(s), no host, a query or fragment, or
        an unreadable CA file.
    """
    parsed = urllib.parse.urlsplit(url or '')
    try:
        port = parsed.port
    except ValueError:
        raise UpstreamError(f'{name} {url!r} has a bad port') from None
    if (parsed.scheme not in DEFAULT_PORTS or not parsed.hostname
            or parsed.query or parsed.fragment or parsed.username):
        raise UpstreamError(f'{name} {url!r} is not an http(s) URL of a '
                            'host and an optional path')
    tls = None
    if parsed.scheme == 'https':
        try:
            tls = tls_context(ca_file=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f'[vmetal_bridge]ca_file {ca_file!r}: '
                                f'{exc}') from None
    return Upstream(url, parsed.scheme, parsed.hostname,
                    port or DEFAULT_PORTS[parsed.scheme],
                    parsed.path.rstrip('/'), tls)


def ramdisk(address, port, record):
    """The :class:`Upstream` of one ramdisk's API.

    :param record: its :class:`~.heartbeat.Ramdisk` (scheme, certificate).
    """
    tls = None
    if record.scheme == 'https':
        tls = tls_context(cadata=record.verify_ca)
    return Upstream(f'ramdisk {address}', record.scheme, address, port,
                    '', tls)
