"""TFTP packets: parse a read request, negotiate its options, build replies.

No I/O here. Everything a peer sends is checked before it is used, and every
problem is one :class:`BadPacket` carrying the TFTP error code that the peer
is answered with (RFC 1350 section 5, RFC 2347 for code 8). Nothing else is
raised for any input, whatever its bytes (the fuzz test holds this).

Options: ``blksize`` (RFC 2348, 8..65464), ``tsize`` (RFC 2349, the
server answers the file size), ``timeout`` (RFC 2349, 1..255 s) and
``windowsize`` (RFC 7440, 1..65535). Unknown options are left out of the
OACK, as RFC 2347 asks, and so is a ``timeout`` above the server's
maximum: RFC 2349 lets the server only echo or omit it, and a peer that
never answers must not hold a session for 4 x 255 s.
"""

import dataclasses
import struct

RRQ = 1
WRQ = 2
DATA = 3
ACK = 4
ERROR = 5
OACK = 6

# RFC 1350 section 5 and RFC 2347.
NOT_DEFINED = 0
FILE_NOT_FOUND = 1
ACCESS_VIOLATION = 2
ILLEGAL_OPERATION = 4
UNKNOWN_TID = 5
BAD_OPTION = 8

DEFAULT_BLKSIZE = 512
MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464  # RFC 2348: the largest block one IPv4 datagram carries
MAX_TIMEOUT = 255
MAX_WINDOWSIZE = 65535
# A file name or option longer than this is not a boot file request.
MAX_FIELD = 255
# Digits accepted in a numeric option value: enough for any valid one.
MAX_DIGITS = 10

_HEADER = struct.Struct('!HH')


class BadPacket(Exception):
    """A datagram the server refuses.

    :ivar code: the TFTP error code to answer with.
    :ivar reason: one line for the peer and the log.
    """

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Request:
    """A parsed RRQ or WRQ.

    :ivar opcode: :data:`RRQ` or :data:`WRQ`.
    :ivar filename: the requested name (printable ASCII).
    :ivar mode: ``octet`` or ``netascii`` (lower case).
    :ivar options: option name (lower case) -> value, first one wins.
    """

    opcode: int
    filename: str
    mode: str
    options: dict


@dataclasses.dataclass(frozen=True)
class Transfer:
    """What a read request was granted.

    :ivar blksize: bytes per DATA block.
    :ivar timeout: seconds before an unacknowledged window is resent.
    :ivar windowsize: blocks sent before waiting for an ACK.
    :ivar oack: the OACK to send first, or ``None`` (no option accepted:
        the transfer starts with DATA block 1).
    :ivar declined: names of valid options left out of the OACK.
    """

    blksize: int
    timeout: int
    windowsize: int
    oack: bytes | None
    declined: tuple = ()


def _text(raw, what):
    # Printable ASCII only: names end up in paths and in log lines.
    if not raw:
        raise BadPacket(ILLEGAL_OPERATION, f'empty {what}')
    if len(raw) > MAX_FIELD:
        raise BadPacket(ILLEGAL_OPERATION, f'{what} longer than {MAX_FIELD} '
                                           'bytes')
    if min(raw) < 0x20 or max(raw) > 0x7e:
        raise BadPacket(ILLEGAL_OPERATION, f'{what} is not printable ASCII')
    return raw.decode('ascii')


def opcode_of(data):
    """:returns: the opcode of a datagram, or ``None`` when it has none."""
    if len(data) < 2:
        return None
    return (data[0] << 8) | data[1]


def parse_request(data):
    """Parse an RRQ or WRQ.

    :param data: the datagram as received.
    :returns: :class:`Request`.
    :raises BadPacket: not a well-formed request.
    """
    opcode = opcode_of(data)
    if opcode not in (RRQ, WRQ):
        raise BadPacket(ILLEGAL_OPERATION, 'not a read or write request')
    if len(data) < 6 or data[-1] != 0:
        raise BadPacket(ILLEGAL_OPERATION, 'request not NUL-terminated')
    fields = bytes(data[2:-1]).split(b'\0')
    if len(fields) < 2 or len(fields) % 2:
        raise BadPacket(ILLEGAL_OPERATION, 'request fields are not pairs')
    filename = _text(fields[0], 'file name')
    mode = _text(fields[1], 'mode').lower()
    if mode not in ('octet', 'netascii'):
        raise BadPacket(ILLEGAL_OPERATION, f'transfer mode {mode!r} not '
                                           'supported')
    options = {}
    for index in range(2, len(fields), 2):
        name = _text(fields[index], 'option name').lower()
        value = _text(fields[index + 1], f'value of option {name}')
        options.setdefault(name, value)
    return Request(opcode, filename, mode, options)


def _number(options, name, low, high=None):
    value = options[name]
    if not value.isdigit() or len(value) > MAX_DIGITS:
        raise BadPacket(BAD_OPTION, f'{name}={value!r} is not a number')
    number = int(value)
    if number < low or (high is not None and number > high):
        limit = f'{low}..{high}' if high is not None else f'>= {low}'
        raise BadPacket(BAD_OPTION, f'{name}={number} is outside {limit}')
    return number


def negotiate(request, size, timeout, max_blksize=MAX_BLKSIZE,
              max_windowsize=MAX_WINDOWSIZE, max_timeout=MAX_TIMEOUT):
    """Decide the transfer parameters of a read request.

    A ``blksize`` or ``windowsize`` above what the server allows is lowered
    to its limit (RFC 2348 and RFC 7440 let the server answer less); a value
    that is not a number, or below the RFC minimum, is refused.

    :param request: the :class:`Request`.
    :param size: the file's size in bytes (answered for ``tsize``).
    :param timeout: the server's retransmission timeout in seconds.
    :param max_blksize: the largest block the server sends.
    :param max_windowsize: the largest window the server sends.
    :param max_timeout: the longest ``timeout`` accepted; a longer one is
        left out of the OACK and ``timeout`` applies.
    :returns: :class:`Transfer`.
    :raises BadPacket: an option value is refused (code 8).
    """
    options = request.options
    accepted = []
    declined = ()
    blksize = DEFAULT_BLKSIZE
    windowsize = 1
    if 'blksize' in options:
        blksize = min(_number(options, 'blksize', MIN_BLKSIZE),
                      max_blksize, MAX_BLKSIZE)
        accepted.append(('blksize', blksize))
    if 'tsize' in options:
        _number(options, 'tsize', 0)
        accepted.append(('tsize', size))
    if 'timeout' in options:
        asked = _number(options, 'timeout', 1, MAX_TIMEOUT)
        if asked <= max_timeout:
            timeout = asked
            accepted.append(('timeout', timeout))
        else:
            declined = ('timeout',)
    if 'windowsize' in options:
        windowsize = min(_number(options, 'windowsize', 1, MAX_WINDOWSIZE),
                         max_windowsize)
        accepted.append(('windowsize', windowsize))
    oack = None
    if accepted:
        oack = b'\0\x06' + b''.join(
            b'%s\0%d\0' % (name.encode(), value) for name, value in accepted)
    return Transfer(blksize, timeout, windowsize, oack, declined)


def error(code, message):
    """:returns: an ERROR packet (the message is cut to ASCII, 100 bytes)."""
    text = message.encode('ascii', 'replace')[:100]
    return _HEADER.pack(ERROR, code) + text + b'\0'


def data_header(block):
    """:returns: the 4-byte header of DATA ``block`` (wrapped to 16 bits)."""
    return _HEADER.pack(DATA, block & 0xffff)


def parse_ack(data):
    """:returns: the block number of an ACK, or ``None`` if not an ACK.

    Bytes after the block number are ignored (some PXE ROMs pad).
    """
    if len(data) < 4 or data[0] != 0 or data[1] != ACK:
        return None
    return (data[2] << 8) | data[3]
