"""What the bridge's local copies of Ironic's HTTP root may answer and
what may fill them: pure decisions on HTTP heads, no I/O.

A copy is only ever served after Ironic's HTTP server said, to a
conditional request written after this request arrived, that it is still
current (``304``; :mod:`.revalidation` lets the requests that arrive
together share it), so the rules here are about which answers are safe to
keep and how to ask:

* only ``GET``/``HEAD`` of a path without a query, from a client that sent
  no conditional header of its own (those go through as before: the
  client asks its own question);
* only a whole ``200`` body larger than what the bridge translates (small
  iPXE scripts and configs carry per-node URLs and are rewritten; kernels,
  ramdisks and images pass unchanged), with a strong validator: a strong
  ``ETag``, or a ``Last-Modified`` at least a second older than the
  answer's ``Date`` (RFC 9110 8.8.2.2: a file changed within the second it
  was served could change again under the same date). Python's
  ``http.server`` (the lab) sends only ``Last-Modified``; Apache httpd
  (Metal3) and busybox httpd send both, and the ``ETag`` is asked with;
* never an answer that says ``no-store`` or ``private``, or varies by a
  request header (``Vary``).
"""

import dataclasses
import email.utils

#: Request headers that make a request the client's own question.
_CONDITIONAL = frozenset((b'if-none-match', b'if-modified-since',
                          b'if-match', b'if-unmodified-since', b'if-range'))

#: Response headers a copy does not keep: its own framing and date, and
#: the hop-by-hop ones (RFC 9110 7.6.1).
_NOT_KEPT = frozenset((
    b'content-length', b'content-range', b'date', b'connection',
    b'keep-alive', b'proxy-connection', b'proxy-authenticate', b'te',
    b'trailer', b'transfer-encoding', b'upgrade', b'age'))

#: :func:`byte_range`'s answer to a range past the end (416).
UNSATISFIABLE = 'unsatisfiable'


@dataclasses.dataclass(frozen=True)
class Validator:
    """How to ask whether a copy is current: the request header and its
    value (``if-none-match`` with the ETag, or ``if-modified-since`` with
    the Last-Modified date as Ironic's server wrote it)."""

    header: bytes
    value: bytes


def _header(headers, name):
    """The last value of ``name`` (lower-case bytes) in ``headers``."""
    found = None
    for key, value in headers:
        if key.lower() == name:
            found = value
    return found


def request_key(method, target, headers):
    """The key of the copy that may answer a request, or ``None``.

    :param target: the path as routed (with its query, if any).
    :param headers: the client's request headers (``(name, value)`` bytes).
    """
    if method not in ('GET', 'HEAD') or '?' in target:
        return None
    if any(name.lower() in _CONDITIONAL for name, _ in headers):
        return None
    return target


def client_range(headers):
    """The client's ``Range`` header (bytes), or ``None``."""
    return _header(headers, b'range')


def _date(value):
    if value is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(value.decode('latin-1'))
    except (TypeError, ValueError, IndexError):
        return None


def validator(headers):
    """The strong validator of a ``200`` answer's ``headers``, or ``None``
    when the answer must not be kept."""
    control = (_header(headers, b'cache-control') or b'').lower()
    if b'no-store' in control or b'private' in control:
        return None
    if _header(headers, b'vary') is not None:
        return None
    modified = _header(headers, b'last-modified')
    if modified is not None:
        modified_at = _date(modified)
        served_at = _date(_header(headers, b'date'))
        if modified_at is None or served_at is None or \
                (served_at - modified_at).total_seconds() < 1:
            return None
    etag = _header(headers, b'etag')
    if etag and not etag.startswith(b'W/'):
        return Validator(b'if-none-match', etag)
    if modified is not None:
        return Validator(b'if-modified-since', modified)
    return None


def fillable(method, wanted, status, length, smallest):
    """Whether an answer's body may fill a copy: the whole of a ``GET``
    (no ``Range``), ``200``, of a known length over ``smallest`` bytes."""
    return (method == 'GET' and wanted is None and status == 200
            and length is not None and length > smallest)


def kept_headers(headers):
    """The headers a copy keeps from the answer that filled it."""
    return tuple((name, value) for name, value in headers
                 if name.lower() not in _NOT_KEPT)


def byte_range(wanted, size):
    """The single range ``wanted`` (a ``Range`` value) asks of ``size``
    bytes.

    :returns: ``(first, last)`` (inclusive), :data:`UNSATISFIABLE`, or
        ``None`` for the whole body: no range, one the server may ignore
        (not ``bytes``, malformed, several ranges; RFC 9110 14.2).
    """
    if wanted is None:
        return None
    unit, _, spec = wanted.decode('latin-1').partition('=')
    if unit.strip().lower() != 'bytes' or ',' in spec:
        return None
    first, dash, last = spec.strip().partition('-')
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return max(size - suffix, 0), size - 1
    first = int(first)
    if last and int(last) < first:
        return None
    if first >= size:
        return UNSATISFIABLE
    return first, min(int(last), size - 1) if last else size - 1


def copy_answer(kept, size, wanted):
    """The answer a copy gives.

    :param kept: the copy's :func:`kept_headers`.
    :param size: its length.
    :param wanted: the client's ``Range`` (bytes) or ``None``.
    :returns: ``(status, headers, offset, count)``: the body is ``count``
        bytes of the copy from ``offset``.
    """
    headers = [(name, value) for name, value in kept
               if name.lower() != b'accept-ranges']
    headers.append((b'accept-ranges', b'bytes'))
    found = byte_range(wanted, size)
    if found == UNSATISFIABLE:
        headers += [(b'content-range', b'bytes */%d' % size),
                    (b'content-length', b'0')]
        return 416, headers, 0, 0
    if found is None:
        headers.append((b'content-length', b'%d' % size))
        return 200, headers, 0, size
    first, last = found
    headers += [(b'content-range', b'bytes %d-%d/%d' % (first, last, size)),
                (b'content-length', b'%d' % (last - first + 1))]
    return 206, headers, first, last - first + 1
