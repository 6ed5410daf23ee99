"""The places the bridge forwards to, and the connections to them.

An :class:`Upstream` is one base URL: Ironic's HTTP root, Ironic's API,
or one ramdisk's API. TLS is checked against a CA bundle (or the system's
store, or a ramdisk's own certificate); there is no switch to turn the
check off.
"""

import asyncio
import dataclasses
import ipaddress
import socket
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

        :returns: a :class:`SocketLink` (plain HTTP: the body can be
            spliced) or a :class:`StreamLink` (TLS).
        :raises OSError: refused or unreachable; ``ssl.SSLError`` on a bad
            certificate; ``asyncio.TimeoutError`` after ``timeout``.
        """
        if self.tls is None:
            return await asyncio.wait_for(_plain(self.host, self.port),
                                          timeout)
        # The reader's limit sizes its buffer (see exchange.CHUNK).
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            self.host, self.port, ssl=self.tls, server_hostname=self.host,
            limit=262144), timeout)
        return StreamLink(reader, writer)


class SocketLink:
    """A plain TCP connection that no asyncio transport owns, so that a
    body can go from its socket to the client's by ``splice``
    (:mod:`.splice`)."""

    def __init__(self, sock):
        self.sock = sock
        self._loop = asyncio.get_running_loop()

    def fileno(self):
        """The socket's descriptor."""
        return self.sock.fileno()

    async def read(self, size):
        """Up to ``size`` bytes, ``b''`` at the end."""
        return await self._loop.sock_recv(self.sock, size)

    async def write(self, data):
        """Send all of ``data``."""
        await self._loop.sock_sendall(self.sock, data)

    def close(self):
        self.sock.close()


class StreamLink:
    """A connection on asyncio streams (TLS): no descriptor to splice."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    def fileno(self):
        return None

    async def read(self, size):
        return await self.reader.read(size)

    async def write(self, data):
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > 262144:
            await self.writer.drain()

    def close(self):
        self.writer.transport.abort()


async def _plain(host, port):
    """A connected non-blocking TCP socket to ``host`` (a name is
    resolved; each address tried in turn)."""
    loop = asyncio.get_running_loop()
    try:
        ipaddress.ip_address(host)
        addresses = [(socket.AF_INET6 if ':' in host else socket.AF_INET,
                      (host, port))]
    except ValueError:
        addresses = [(family, address) for family, _t, _p, _c, address in
                     await loop.getaddrinfo(host, port,
                                            type=socket.SOCK_STREAM)]
    error = OSError(f'{host} resolves to no address')
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # The request head and its body go in separate sends: no
            # waiting for the first one's ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return SocketLink(sock)
    raise error


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
