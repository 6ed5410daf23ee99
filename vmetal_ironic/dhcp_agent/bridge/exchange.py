"""One request through the bridge and its response, streamed.

HTTP/1.1 framing is h11's (a sans-I/O parser kept by the python-hyper
project, the one under httpcore and uvicorn): it bounds the head's size,
decodes chunked bodies and knows that a ``HEAD`` response has no body.
This module does the I/O around it on asyncio streams, one request per
connection (``Connection: close`` both ways), with a deadline on every
wait so that a silent client or upstream frees its slot:

* the whole request head within ``header_timeout``;
* the upstream's connection and response head within
  ``upstream_timeout`` (else 504; refused or unreachable: 502);
* every other read or write within ``idle_timeout``.

A body of known length between two plain TCP sockets (kernels, ramdisks
and images from Ironic's HTTP root) is moved inside the kernel by
``splice`` once the head is parsed (:mod:`.splice`); other bodies (TLS,
chunked) go through in pieces of at most :data:`CHUNK` bytes and a write
waits for the previous ones to drain. Either way memory per connection
stays bounded whatever the body's size; ``Range`` and its ``206`` pass as
they are. A heartbeat's body is the one thing read whole (up to
``max_heartbeat_bytes``), to rewrite its callback URL.

With local copies on (``[vmetal_bridge]cache_dir``, :mod:`.http_cache`),
a ``GET`` or ``HEAD`` of the HTTP root with a copy waits for Ironic to say
whether the copy is current: one conditional request that the downloads
of the copy arriving together share (:mod:`.revalidation`, which says
which may share it). ``304`` is answered from the copy by ``sendfile``
(``Range`` and ``HEAD`` included); otherwise, and without a copy, Ironic
is asked with the bridge's own headers only, the answer goes through as
above, and a whole ``200`` body fills a copy on its way
(:mod:`.cache_policy` says what may be kept).
"""

import asyncio
import dataclasses
import os
import ssl

import h11

from vmetal_ironic.dhcp_agent.bridge import cache_policy
from vmetal_ironic.dhcp_agent.bridge import heartbeat as heartbeat_mod
from vmetal_ironic.dhcp_agent.bridge import revalidation
from vmetal_ironic.dhcp_agent.bridge import splice

#: Bytes read from a socket at once, and what a connection buffers each
#: way before it waits: about 1 MiB a connection at most (the reader
#: pauses its socket at twice its limit). Smaller pieces cost the relay
#: its throughput in per-piece overhead (bench/bench_bridge.py).
CHUNK = 262144

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the bridge sets itself.
_NOT_FORWARDED = frozenset((
    b'connection', b'keep-alive', b'proxy-connection', b'proxy-authorization',
    b'proxy-authenticate', b'te', b'trailer', b'transfer-encoding',
    b'upgrade', b'host', b'expect', b'content-length'))

_REASONS = {400: 'Bad Request', 403: 'Forbidden', 408: 'Request Timeout',
            413: 'Content Too Large', 431: 'Request Header Fields Too Large',
            502: 'Bad Gateway', 503: 'Service Unavailable',
            504: 'Gateway Timeout'}


@dataclasses.dataclass(frozen=True)
class Limits:
    """The deadlines (seconds) and sizes (bytes) of every exchange."""

    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    upstream_timeout: float = 60.0
    max_header_bytes: int = 16384
    max_heartbeat_bytes: int = 65536
    # Responses up to this size are read whole to translate URLs in them
    # (iPXE scripts and configs are a few KiB; kernels are megabytes).
    max_translated_response: int = 65536
    # Conductor commands are read whole to translate URLs (a config drive
    # travels in one: Ironic allows 64 MiB).
    max_translated_request: int = 67108864


class UpstreamUnknown(Exception):
    """The route's upstream cannot be named (a ramdisk never seen)."""


class _Cut(Exception):
    """The client went silent or away: close without an answer."""


def error_response(status, text='', head_only=False):
    """A complete, self-contained error response (bytes)."""
    body = (text + '\n').encode() if text else b''
    head = (f'HTTP/1.1 {status} {_REASONS.get(status, "Error")}\r\n'
            'Content-Type: text/plain; charset=utf-8\r\n'
            f'Content-Length: {len(body)}\r\n'
            'Connection: close\r\n\r\n').encode()
    return head if head_only else head + body


def forwarded_headers(headers, authority, length=None, chunked=False):
    """The end-to-end headers of ``headers`` plus the bridge's own."""
    result = [(name, value) for name, value in headers
              if name.lower() not in _NOT_FORWARDED]
    if authority is not None:
        result.insert(0, (b'host', authority.encode()))
    if length is not None:
        result.append((b'content-length', str(length).encode()))
    elif chunked:
        result.append((b'transfer-encoding', b'chunked'))
    result.append((b'connection', b'close'))
    return result


def head_size(event):
    """Bytes of a parsed head, near enough: h11 bounds only a head that
    arrives in pieces, a whole one read at once is checked with this."""
    start = getattr(event, 'target', b'') or getattr(event, 'reason', b'')
    return len(start) + sum(len(name) + len(value) + 4
                            for name, value in event.headers)


def _framing(headers):
    """``(content_length, chunked)`` of a parsed message's headers."""
    length, chunked = None, False
    for name, value in headers:
        if name == b'content-length':
            length = int(value)
        elif name == b'transfer-encoding':
            chunked = True
    return length, chunked


async def within(awaitable, seconds):
    """``await awaitable`` within ``seconds``, else
    ``asyncio.TimeoutError``. asyncio.timeout (3.11) where there is one: no
    task a call, which wait_for costs on the body's hot path."""
    if hasattr(asyncio, 'timeout'):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


async def _next_event(conn, read, timeout, cut=_Cut):
    """The next h11 event, reading as needed (``await read(size)``), each
    read within ``timeout``; a closed socket gives h11 the end of data."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await within(read(CHUNK), timeout)
        except (asyncio.TimeoutError, OSError):
            raise cut() from None
        conn.receive_data(data)


async def _write(writer, data, timeout):
    if writer.transport.is_closing():
        # The client went away (reset) while its buffer was below the
        # high-water mark, where no drain() reports it: asyncio would
        # drop what follows in silence, and a fill would go on reading
        # Ironic for no one.
        raise _Cut()
    writer.write(data)
    if writer.transport.get_write_buffer_size() <= CHUNK:
        # Below the high-water mark drain() would not wait.
        return
    try:
        await within(writer.drain(), timeout)
    except (asyncio.TimeoutError, OSError):
        raise _Cut() from None


async def _send(link, data, timeout):
    """Send ``data`` upstream (an :mod:`.upstream` link)."""
    try:
        await within(link.write(data), timeout)
    except (asyncio.TimeoutError, OSError):
        raise _Cut() from None


async def _flush(writer, timeout):
    """Wait until the transport has handed everything to its socket, so
    that bytes written to the socket itself come after them."""
    transport = writer.transport
    if not transport.get_write_buffer_size():
        return
    transport.set_write_buffer_limits(high=0)
    try:
        await within(writer.drain(), timeout)
    except (asyncio.TimeoutError, OSError):
        raise _Cut() from None


async def _read_head(conn, read, timeout):
    """The client's request head within ``timeout`` in all."""
    try:
        return await asyncio.wait_for(_next_event(conn, read, timeout),
                                      timeout)
    except asyncio.TimeoutError:
        raise _Cut() from None


async def _connect(upstream, limits, observer, listener):
    """A link to ``upstream``, or the :class:`~.revalidation.Failed` its
    client gets (the failure told to ``observer``)."""
    try:
        link = await upstream.connect(limits.upstream_timeout)
    except asyncio.TimeoutError:
        observer.upstream_failed(listener, upstream.name, 'timeout',
                                 'no connection')
        return revalidation.Failed(504, 'upstream_timeout',
                                   f'{upstream.name} did not answer')
    except (OSError, ssl.SSLError) as exc:
        observer.upstream_failed(listener, upstream.name, 'unreachable',
                                 str(exc))
        return revalidation.Failed(502, 'upstream_unreachable',
                                   f'{upstream.name} is unreachable')
    observer.connected(listener, upstream.scheme)
    return link


async def _final_head(client, link, upstream, limits, observer, listener):
    """The upstream's final response head within ``upstream_timeout``, or
    the :class:`~.revalidation.Failed` its client gets (told to
    ``observer``)."""
    timeout = limits.upstream_timeout

    async def final():
        while True:
            # The outer deadline below is the one that fires (504); this
            # one only has to be later.
            event = await _next_event(client, link.read, timeout + 1,
                                      cut=ConnectionError)
            if not isinstance(event, h11.InformationalResponse):
                return event

    try:
        event = await asyncio.wait_for(final(), timeout)
    except asyncio.TimeoutError:
        observer.upstream_failed(listener, upstream.name, 'timeout',
                                 'no response')
        return revalidation.Failed(504, 'upstream_timeout',
                                   f'{upstream.name} did not answer')
    except (h11.RemoteProtocolError, ConnectionError) as exc:
        observer.upstream_failed(listener, upstream.name, 'bad_response',
                                 str(exc) or 'connection closed')
        return revalidation.Failed(502, 'upstream_bad_response',
                                   f'{upstream.name} sent no valid response')
    if (not isinstance(event, h11.Response)
            or head_size(event) > limits.max_header_bytes):
        observer.upstream_failed(listener, upstream.name, 'bad_response',
                                 'closed or head too large')
        return revalidation.Failed(502, 'upstream_bad_response',
                                   f'{upstream.name} sent no valid response')
    return event


async def revalidate(upstream, limits, observer, listener, cache, entry,
                     sending):
    """Ask ``upstream`` whether the copy ``entry`` is current: a
    conditional ``GET`` with the bridge's own headers and the copy's
    validator, of which only the answer's head is read (a changed file's
    body is not: the connection is closed). The ``ask`` of a
    :class:`~.revalidation.Revalidations`; the whole question within
    ``upstream_timeout``.

    :param cache: the :class:`~.http_cache.HttpCache`, told the answer
        (a changed copy is dropped there).
    :param sending: called just before the request is written.
    :returns: :data:`~.revalidation.CURRENT`,
        :data:`~.revalidation.CHANGED` or a
        :class:`~.revalidation.Failed`.
    """
    link = None

    async def ask():
        nonlocal link
        link = await _connect(upstream, limits, observer, listener)
        if isinstance(link, revalidation.Failed):
            return link
        client = h11.Connection(
            h11.CLIENT, max_incomplete_event_size=limits.max_header_bytes)
        validator = entry.validator
        request = client.send(h11.Request(
            method='GET', target=upstream.target(entry.key),
            headers=[(b'host', upstream.authority.encode()),
                     (validator.header, validator.value),
                     (b'connection', b'close')])) + client.send(
                         h11.EndOfMessage())
        sending()
        try:
            await link.write(request)
        except OSError as exc:
            observer.upstream_failed(listener, upstream.name,
                                     'unreachable', str(exc))
            return revalidation.Failed(502, 'upstream_unreachable',
                                       f'{upstream.name} is unreachable')
        response = await _final_head(client, link, upstream, limits,
                                     observer, listener)
        if isinstance(response, revalidation.Failed):
            return response
        observer.upstream_ok(listener, upstream.name)
        current = response.status_code == 304
        cache.revalidated(entry, current)
        return revalidation.CURRENT if current else revalidation.CHANGED

    try:
        return await within(ask(), limits.upstream_timeout)
    except asyncio.TimeoutError:
        observer.upstream_failed(listener, upstream.name, 'timeout',
                                 'no response')
        return revalidation.Failed(504, 'upstream_timeout',
                                   f'{upstream.name} did not answer')
    finally:
        if link is not None and not isinstance(link, revalidation.Failed):
            link.close()


class Exchange:
    """Serve one connection of a listener.

    :param listener: gives ``name``, ``route(method, target, source)``,
        ``upstream(route)``, ``rewrite(body, source)`` and the
        :class:`~.urls.Translation` (or ``None``) of its ``requests`` and
        its ``responses`` (see :mod:`.service`).
    :param observer: told what happened: ``refused(listener, reason)``,
        ``forwarded(listener, status, nbytes)``,
        ``connected(listener, scheme)`` (a connection to the upstream was
        made: for https, its certificate checked),
        ``upstream_failed(listener, upstream_name, kind, detail)`` and
        ``upstream_ok(listener, upstream_name)``.
    """

    def __init__(self, listener, limits, observer, reader, writer, source):
        self.listener = listener
        self.limits = limits
        self.observer = observer
        self.reader = reader
        self.writer = writer
        self.source = source
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.head_only = False

    async def _refuse(self, status, reason, text=''):
        self.observer.refused(self.listener.name, reason)
        await _write(self.writer, error_response(status, text,
                                                 self.head_only),
                     self.limits.idle_timeout)

    async def run(self):
        try:
            await self._run()
        except _Cut:
            self.observer.refused(self.listener.name, 'cut_off')

    async def _run(self):
        try:
            request = await _read_head(self.conn, self.reader.read,
                                       self.limits.header_timeout)
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint or 400
            await self._refuse(status, 'head_too_large' if status == 431
                               else 'malformed', str(exc))
            return
        if not isinstance(request, h11.Request):
            return   # closed before sending anything
        if head_size(request) > self.limits.max_header_bytes:
            await self._refuse(431, 'head_too_large')
            return
        method = request.method.decode('ascii', 'replace')
        target = request.target.decode('ascii', 'replace')
        self.head_only = method == 'HEAD'
        route = self.listener.route(method, target, self.source)
        if route.refused:
            await self._refuse(403, route.reason,
                               f'{method} {target[:100]} is not forwarded')
            return
        body = None
        if route.heartbeat:
            body = await self._heartbeat_body()
            if body is None:
                return
        elif self.listener.requests and _framing(request.headers) != (
                None, False):
            body = await self._whole_body(
                self.limits.max_translated_request, 'request_too_large')
            if body is None:
                return
            body = self.listener.requests.apply(body)
        try:
            upstream = self.listener.upstream(route)
        except UpstreamUnknown as exc:
            await self._refuse(502, 'unknown_upstream', str(exc))
            return
        await self._forward(request, route, upstream, body)

    async def _client_body(self):
        """Yield the client's request body in pieces."""
        if self.conn.they_are_waiting_for_100_continue:
            await _write(self.writer, self.conn.send(
                h11.InformationalResponse(status_code=100, headers=[])),
                self.limits.idle_timeout)
        while True:
            event = await _next_event(self.conn, self.reader.read,
                                      self.limits.idle_timeout)
            if isinstance(event, h11.Data):
                yield event.data
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise _Cut()

    async def _whole_body(self, limit, reason):
        """The client's whole body, or ``None`` once refused (413 past
        ``limit``)."""
        body = bytearray()
        try:
            async for piece in self._client_body():
                body += piece
                if len(body) > limit:
                    await self._refuse(413, reason)
                    return None
        except h11.RemoteProtocolError as exc:
            await self._refuse(400, 'malformed', str(exc))
            return None
        return bytes(body)

    async def _heartbeat_body(self):
        """The heartbeat's body rewritten, or ``None`` once refused."""
        body = await self._whole_body(self.limits.max_heartbeat_bytes,
                                      'heartbeat_too_large')
        if body is None:
            return None
        try:
            return self.listener.rewrite(body, self.source)
        except heartbeat_mod.HeartbeatError as exc:
            await self._refuse(400, 'bad_heartbeat', str(exc))
            return None

    async def _forward(self, request, route, upstream, body):
        cache = getattr(self.listener, 'cache', None)
        if cache is not None and body is None and _framing(
                request.headers) == (None, False):
            key = cache_policy.request_key(
                request.method.decode('ascii', 'replace'), route.path,
                request.headers)
            if key is not None:
                await self._through_cache(request, route, upstream, cache,
                                          key)
                return
        link = await self._connect(upstream)
        if link is None:
            return
        try:
            await self._through(request, route, upstream, body, link)
        finally:
            link.close()

    async def _connect(self, upstream):
        """A link to ``upstream``, or ``None`` once the client got its
        502/504."""
        link = await _connect(upstream, self.limits, self.observer,
                              self.listener.name)
        if isinstance(link, revalidation.Failed):
            await self._refuse(link.status, link.reason, link.text)
            return None
        return link

    async def _through(self, request, route, upstream, body, link):
        limits = self.limits
        length, chunked = _framing(request.headers)
        client = h11.Connection(
            h11.CLIENT, max_incomplete_event_size=limits.max_header_bytes)
        if body is not None:
            length, chunked = len(body), False
        headers = forwarded_headers(request.headers, upstream.authority,
                                    length, chunked)
        await _send(link, client.send(h11.Request(
            method=request.method, target=upstream.target(route.path),
            headers=headers)), limits.idle_timeout)
        if body is not None:
            await _send(link, client.send(h11.Data(data=body)),
                        limits.idle_timeout)
        else:
            try:
                async for piece in self._client_body():
                    await _send(link, client.send(h11.Data(data=piece)),
                                limits.idle_timeout)
            except h11.RemoteProtocolError as exc:
                await self._refuse(400, 'malformed', str(exc))
                return
        await _send(link, client.send(h11.EndOfMessage()),
                    limits.idle_timeout)
        response = await self._response_head(client, link, upstream)
        if response is None:
            return
        self.observer.upstream_ok(self.listener.name, upstream.name)
        await self._answer(client, link, response)

    async def _through_cache(self, request, route, upstream, cache, key):
        """A ``GET`` or ``HEAD`` of the HTTP root with local copies on.

        With a copy, the download waits for Ironic's answer to a
        conditional request (:mod:`.revalidation`, shared with the
        downloads of the copy arriving with it): ``304`` is answered from
        the copy; Ironic failing is a 502/504 as always, never an
        unchecked copy; a changed file goes on as without a copy. Without
        one, Ironic is asked with the bridge's own headers only (and the
        client's ``Range``, whose ``206`` is never kept), so nothing a
        client sends shapes what is kept, and the answer goes through.
        """
        wanted = cache_policy.client_range(request.headers)
        held = cache.checkout(key)
        if held is not None:
            try:
                answer = await self.listener.revalidations.check(held[0])
                if isinstance(answer, revalidation.Failed):
                    await self._refuse(answer.status, answer.reason,
                                       answer.text)
                    return
                current = answer == revalidation.CURRENT
                cache.answered(current)
                if current:
                    await self._from_copy(held[0], held[1], wanted)
                    return
            finally:
                cache.release(*held)
        link = await self._connect(upstream)
        if link is None:
            return
        try:
            await self._fetch(request, route, upstream, link, cache, key,
                              wanted)
        finally:
            link.close()

    async def _fetch(self, request, route, upstream, link, cache, key,
                     wanted):
        """Ask Ironic for the file (no copy, or the copy changed), send
        the answer on and fill a copy from it where it may be kept."""
        limits = self.limits
        client = h11.Connection(
            h11.CLIENT, max_incomplete_event_size=limits.max_header_bytes)
        headers = [(b'host', upstream.authority.encode())]
        if wanted is not None:
            headers.append((b'range', wanted))
        headers.append((b'connection', b'close'))
        await _send(link, client.send(h11.Request(
            method=request.method, target=upstream.target(route.path),
            headers=headers)) + client.send(h11.EndOfMessage()),
            limits.idle_timeout)
        response = await self._response_head(client, link, upstream)
        if response is None:
            return
        self.observer.upstream_ok(self.listener.name, upstream.name)
        fill = None
        length, _chunked = _framing(response.headers)
        if not self.head_only and cache_policy.fillable(
                'GET', wanted, response.status_code, length,
                limits.max_translated_response):
            validator = cache_policy.validator(response.headers)
            if validator is not None:
                fill = cache.begin(
                    key, length, validator,
                    cache_policy.kept_headers(response.headers))
        try:
            await self._answer(client, link, response, fill)
        finally:
            if fill is not None:
                fill.finish()

    async def _from_copy(self, entry, fd, wanted):
        """Answer from a local copy (open as ``fd``): its head, then its
        bytes from the page cache by ``sendfile``."""
        timeout = self.limits.idle_timeout
        status, headers, offset, count = cache_policy.copy_answer(
            entry.headers, entry.size, wanted)
        headers.append((b'connection', b'close'))
        await _write(self.writer, self.conn.send(h11.Response(
            status_code=status, headers=headers)), timeout)
        if self.head_only:
            count = 0
        if count and self._client_is_plain():
            await _flush(self.writer, timeout)
            # As in _counted_body: named after the flush, no await before
            # send_file() duplicates it.
            target = self._client_descriptor()
            if target is None:
                raise _Cut()
            try:
                await splice.send_file(fd, target, offset, count, timeout,
                                       getattr(self.listener, 'sender',
                                               None))
            except (splice.ShortBody, asyncio.TimeoutError, OSError):
                raise _Cut() from None
        else:
            sent = 0
            while sent < count:
                data = os.pread(fd, min(CHUNK, count - sent), offset + sent)
                if not data:
                    raise _Cut()
                sent += len(data)
                await _write(self.writer, data, timeout)
        self.observer.forwarded(self.listener.name, status, count)

    async def _answer(self, client, link, response, fill=None):
        """Send Ironic's answer (its head already parsed) on to the client;
        ``fill`` (a :class:`~.http_cache.Fill`) gets the body too."""
        limits = self.limits
        name = self.listener.name
        length, _chunked = _framing(response.headers)
        if (self.listener.responses and not self.head_only
                and response.status_code == 200 and length is not None
                and length <= limits.max_translated_response):
            await self._translated(client, link, response, length)
            return
        await _write(self.writer, self.conn.send(h11.Response(
            status_code=response.status_code, reason=response.reason,
            headers=forwarded_headers(response.headers, None,
                                      *_framing(response.headers)))),
            limits.idle_timeout)
        length, _chunked = _framing(response.headers)
        if self.head_only or response.status_code in (204, 304):
            length = 0
        if length is None:
            sent = await self._framed_body(client, link)
        else:
            sent = await self._counted_body(client, link, length, fill)
        self.observer.forwarded(name, response.status_code, sent)

    async def _translated(self, client, link, response, length):
        """A small response read whole, its URLs translated, sent with its
        new length."""
        body = bytearray()
        while len(body) < length:
            event = await _next_event(client, link.read,
                                      self.limits.idle_timeout)
            if isinstance(event, h11.Data):
                body += event.data
            else:
                raise _Cut()
        body = self.listener.responses.apply(bytes(body))
        headers = forwarded_headers(response.headers, None, len(body))
        await _write(self.writer, self.conn.send(h11.Response(
            status_code=response.status_code, reason=response.reason,
            headers=headers)) + body, self.limits.idle_timeout)
        self.observer.forwarded(self.listener.name, response.status_code,
                                len(body))

    async def _framed_body(self, client, link):
        """A chunked or close-delimited body, re-framed by h11."""
        sent = 0
        while True:
            try:
                event = await _next_event(client, link.read,
                                          self.limits.idle_timeout)
            except h11.RemoteProtocolError:
                # The upstream broke off mid-body: so does the client's
                # copy (no end of message is sent), never a short file
                # that looks whole.
                raise _Cut() from None
            if isinstance(event, h11.Data):
                sent += len(event.data)
                await _write(self.writer, self.conn.send(event),
                             self.limits.idle_timeout)
            elif isinstance(event, h11.EndOfMessage):
                await _write(self.writer, self.conn.send(h11.EndOfMessage()),
                             self.limits.idle_timeout)
                return sent
            else:
                raise _Cut()

    async def _counted_body(self, client, link, length, fill=None):
        """A body of known length, copied as it comes: with
        ``Content-Length`` framing the bytes on the wire are the body's on
        both sides, so after what h11 already holds the rest goes straight
        from one socket to the other, without a parser in the way: inside
        the kernel (:mod:`.splice`) when both sockets are plain TCP, else
        through Python in pieces. A ``fill`` gets every piece before the
        client does, so it goes through Python (once per file and
        version)."""
        timeout = self.limits.idle_timeout
        sent = 0
        while sent < length:
            event = client.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Data):
                sent += len(event.data)
                if fill is not None:
                    fill.write(event.data)
                await _write(self.writer, event.data, timeout)
        if sent < length and fill is None and self._can_splice(link):
            await _flush(self.writer, timeout)
            # Named only now, with no await until relay() has duplicated
            # it: a client gone during the flush has its descriptor
            # closed, and its number may already be another client's.
            target = self._client_descriptor()
            if target is None:
                raise _Cut()
            try:
                sent += await splice.relay(link.fileno(), target,
                                           length - sent, timeout)
            except (splice.ShortBody, asyncio.TimeoutError, OSError):
                # Short or broken: the client's copy ends short too, and
                # its Content-Length tells it so.
                raise _Cut() from None
        while sent < length:
            try:
                data = await within(link.read(CHUNK), timeout)
            except (asyncio.TimeoutError, OSError):
                raise _Cut() from None
            if not data:
                raise _Cut()
            data = data[:length - sent]
            sent += len(data)
            if fill is not None:
                fill.write(data)
            await _write(self.writer, data, timeout)
        return sent

    def _can_splice(self, link):
        """Whether the body can be spliced from ``link`` to the client:
        both plain TCP."""
        return (link.fileno() is not None and splice.available()
                and self._client_is_plain())

    def _client_is_plain(self):
        """Whether the client's socket is plain TCP (no TLS): the kernel
        can write to it."""
        return (self.writer.get_extra_info('sslcontext') is None
                and self.writer.get_extra_info('socket') is not None)

    def _client_descriptor(self):
        """The client socket's descriptor, or ``None`` once it closed."""
        if self.writer.transport.is_closing():
            return None
        fd = self.writer.get_extra_info('socket').fileno()
        return fd if fd >= 0 else None

    async def _response_head(self, client, link, upstream):
        """The upstream's final response head, or ``None`` once the client
        got a 502/504."""
        event = await _final_head(client, link, upstream, self.limits,
                                  self.observer, self.listener.name)
        if isinstance(event, revalidation.Failed):
            await self._refuse(event.status, event.reason, event.text)
            return None
        return event
