"""One TFTP read transfer, and the table of open boot files.

A :class:`Session` is a state machine driven by the server loop: it is told
each datagram its peer sent and when its deadline passed, and it answers
through the ``send`` callable it was given. It never raises for what a
peer sends: a datagram it cannot use is ignored (RFC 1350 leaves a wrong
or duplicate ACK to the retransmission timer, which is also what keeps
the Sorcerer's Apprentice syndrome away).

Blocks are counted from 1 without limit and sent with their number
modulo 65536, so files above 32 MiB at 512-byte blocks roll over the way
tftp-hpa, iPXE and EDK2 expect.

A datagram's source address can be forged, so a session trusts its peer
only once the peer has acknowledged a DATA block (an ACK 0 proves
nothing: it can be sent blind, to port 69 in single-port mode). Until
then at most :data:`UNPROVEN_BYTES` of DATA go out, first window and
resends together, so a forged request aims no more than that at its
victim. Once proven, a lost window costs one block: the deadline resends
the oldest unacknowledged block, and the peer's ACK for it asks for the
rest.
"""

import errno
import os
import stat

from vmetal_ironic.dhcp_agent import tftp_packet as packet
from vmetal_ironic.dhcp_agent import tftp_pump

# Results a session ends with (the ``result`` label of the metric).
COMPLETED = 'served'
TIMED_OUT = 'timeout'
ABORTED = 'aborted'
EVICTED = 'evicted'

# DATA bytes (headers included) sent to a peer that has not acknowledged
# any DATA yet; one block always goes. Two 1468-byte windows of 16 fit, or
# one 64 KiB block.
UNPROVEN_BYTES = 64 * 1024
# Block sizes of one file whose DATA datagrams are kept (see
# FileTable.frames): a boot storm uses one or two (512, 1468); a peer
# asking odd sizes cannot make the table keep more copies than this.
FRAME_SETS = 4
# What one kept datagram costs beyond its bytes (the bytes object's header
# and the list slot), counted against the cache budget.
_FRAME_OVERHEAD = 48


class _Cached:
    """A whole file in memory: no system call per block."""

    __slots__ = ('_data',)

    def __init__(self, data):
        self._data = data

    @property
    def data(self):
        """The bytes, which a session keeps for the compiled path."""
        return self._data

    def chunk(self, offset, size):
        return self._data[offset:offset + size]

    def close(self):
        self._data = b''


class _Open:
    """A file too large for the cache, read block by block."""

    __slots__ = ('_fd',)

    def __init__(self, fd):
        self._fd = fd

    def chunk(self, offset, size):
        return os.pread(self._fd, size, offset)

    def close(self):
        os.close(self._fd)


def _read_all(fd, size):
    parts = []
    offset = 0
    while offset < size:
        part = os.pread(fd, size - offset, offset)
        if not part:
            break  # shrank while read: serve what is there
        parts.append(part)
        offset += len(part)
    return b''.join(parts)


class FileTable:
    """Open boot files, shared by every transfer of the same file.

    A boot storm asks for one or two files thousands of times. Each
    distinct file is read once and kept in memory while transfers use it
    (up to ``cache_bytes`` in total; larger ones stay open and are read
    with ``pread``), so the process holds no descriptor per transfer and
    makes no system call per block. A file rewritten since (other inode,
    size or modification time) is a new entry; its old content stays
    consistent for the transfers already reading it.

    The DATA datagrams of a cached file are kept too, per block size
    (:meth:`frames`), so every transfer after the first sends a block with
    no copy, no header packing and no slicing.

    :param cache_bytes: memory for file contents and their datagrams.
    """

    def __init__(self, cache_bytes=256 * 1024 * 1024):
        self.cache_bytes = cache_bytes
        self.cached_bytes = 0
        self._open = {}

    def __len__(self):
        return len(self._open)

    def acquire(self, path, netascii=False):
        """Open ``path`` read-only (or share it if it is already open).

        :param netascii: serve it translated to netascii (RFC 764 line
            ends: LF as CR LF, CR as CR NUL), which a client asking for
            that mode turns back into the original bytes; it is always
            held in memory.
        :returns: ``(key, file, size)``; ``file.chunk(offset, size)`` reads;
            ``size`` is what is served; give ``key`` back to
            :meth:`release`.
        :raises OSError: it cannot be opened, is not a regular file, or is
            too large for netascii.
        """
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise IsADirectoryError(f'{path} is not a regular file')
            key = (info.st_dev, info.st_ino, info.st_size,
                   info.st_mtime_ns, netascii)
            entry = self._open.get(key)
            if entry is not None:
                os.close(fd)
                entry[1] += 1
                return key, entry[0], entry[3]
            if netascii:
                data = _read_all(fd, info.st_size).replace(
                    b'\r', b'\r\0').replace(b'\n', b'\r\n')
                if self.cached_bytes + len(data) > self.cache_bytes:
                    raise OSError(errno.EFBIG, 'too large for netascii')
                handle, held = _Cached(data), len(data)
                os.close(fd)
            elif self.cached_bytes + info.st_size <= self.cache_bytes:
                handle = _Cached(_read_all(fd, info.st_size))
                held = info.st_size
                os.close(fd)
            else:
                handle, held = _Open(fd), 0
        except OSError:
            os.close(fd)
            raise
        size = held if netascii else info.st_size
        self.cached_bytes += held
        # [file, users, bytes charged, size served, blksize -> datagrams]
        self._open[key] = [handle, 1, held, size, {}]
        return key, handle, size

    def frames(self, key, blksize):
        """The shared DATA datagrams of an acquired file at ``blksize``.

        :returns: a list, one slot per block (block ``n`` at ``n - 1``),
            ``None`` where that datagram is not built yet; sessions fill
            it as they first send a block. ``None`` instead of a list when
            the file is not held in memory, already has
            :data:`FRAME_SETS` block sizes, or the budget is spent (the
            session then builds each datagram itself).
        """
        entry = self._open.get(key)
        if entry is None or not isinstance(entry[0], _Cached):
            return None
        kept = entry[4]
        frames = kept.get(blksize)
        if frames is None:
            if len(kept) >= FRAME_SETS:
                return None
            count = entry[3] // blksize + 1
            cost = entry[3] + count * (_FRAME_OVERHEAD + 4)
            if self.cached_bytes + cost > self.cache_bytes:
                return None
            frames = kept[blksize] = [None] * count
            entry[2] += cost
            self.cached_bytes += cost
        return frames

    def release(self, key):
        entry = self._open.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._open[key]
            self.cached_bytes -= entry[2]
            entry[0].close()

    def close(self):
        for key in list(self._open):
            self._open[key][1] = 0
            self.release(key)


class Session(tftp_pump.SessionCore):
    """One read transfer to one peer.

    The fields the per-block path changes (``_base``, ``_sent_upto``,
    ``deadline``, ``last_heard``, ``_retries_left``...) live in the base
    class, which in the compiled path is the C pump's own record: the
    pump and this code read and write the same fields.

    :param peer: ``(address, port)`` of the client.
    :param send: callable taking the bytes of one datagram for the peer.
    :param source: the file, from :meth:`FileTable.acquire`.
    :param size: the file's size.
    :param transfer: the negotiated :class:`~.tftp_packet.Transfer`.
    :param retries: resends of one window before giving up.
    :param now: the current monotonic time.
    :param frames: the file's shared datagrams at this block size
        (:meth:`FileTable.frames`), or ``None``.
    :param addressed: ``send`` takes the peer too (``sendto`` on an
        unconnected socket) rather than the datagram alone.
    """

    __slots__ = (
        '_chunk',
        '_frames',
        '_oack',
        '_send',
        '_to',
        '_unproven_sent',
        'file_key',
        'heard',
        'key',
        'loop',
        'peer',
        'request',
        'size',
        'sock',
        'withheld',
    )

    def __init__(self, peer, send, source, size, transfer, retries, now,
                 frames=None, addressed=False):
        self.peer = peer
        self.request = None
        self.file_key = None
        self.sock = None
        # The server's: where the session is filed, which loop runs it.
        self.key = None
        self.loop = None
        self._send = send
        # Called as send(datagram, peer) directly: no wrapper per block.
        self._to = peer if addressed else None
        self._chunk = source.chunk
        self._frames = frames
        # The compiled path sends straight from the file's bytes, held
        # here until the session is closed; it also needs the socket
        # (``_fd``, set by the server: the transfer's own, or the
        # listening one in single-port mode).
        self._data = getattr(source, 'data', None)
        self._fd = -1
        self.size = size
        self.blksize = transfer.blksize
        self.windowsize = transfer.windowsize
        self.timeout = transfer.timeout
        self.retries = retries
        self._retries_left = retries
        # The last block is the first one shorter than blksize (maybe 0 B).
        self._last = size // self.blksize + 1
        self._base = 1
        self._sent_upto = 0
        self._oack = transfer.oack
        self._waiting_oack = transfer.oack is not None
        self.deadline = now + self.timeout
        self.result = None
        #: The peer has sent anything at all (an ACK 0, an ERROR).
        self.heard = False
        #: The peer has acknowledged DATA: it receives what it asked for.
        self.proven = False
        self.last_heard = now
        self._unproven_sent = 0
        #: Resends left out because the unproven budget was spent.
        self.withheld = 0

    @property
    def done(self):
        return self.result is not None

    def start(self, now):
        """Send the OACK or the first window."""
        self._transmit(now)

    def _transmit(self, now, oldest_only=False):
        self.deadline = now + self.timeout
        if self._waiting_oack:
            self._emit(self._oack)
            return
        base = self._base
        end = base if oldest_only or self.windowsize == 1 else min(
            base + self.windowsize - 1, self._last)
        frames = self._frames
        proven = self.proven
        # The hot path of every transfer: one datagram per block, most
        # often already built by an earlier transfer of the same file.
        for block in range(base, end + 1):
            if not proven and not self._may_send_unproven(block):
                return
            datagram = frames[block - 1] if frames is not None else None
            if datagram is None:
                datagram = self._datagram(block)
            if not self._emit(datagram):
                return
            if block > self._sent_upto:
                self._sent_upto = block

    def _datagram(self, block):
        blksize = self.blksize
        datagram = packet.data_header(block) + self._chunk(
            (block - 1) * blksize, blksize)
        if self._frames is not None:
            self._frames[block - 1] = datagram
        return datagram

    def _may_send_unproven(self, block):
        # Every DATA datagram is at most blksize + 4 bytes; the first one
        # always goes, or no transfer could start.
        size = self.blksize + 4
        if self._unproven_sent and self._unproven_sent + size > \
                UNPROVEN_BYTES:
            self.withheld += 1
            return False
        self._unproven_sent += size
        return True

    def _emit(self, datagram):
        try:
            if self._to is None:
                self._send(datagram)
            else:
                self._send(datagram, self._to)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            # Send buffer full, or an ICMP error from an earlier datagram
            # (the client may have closed after its last ACK, which may be
            # waiting to be read): the datagram counts as lost; the timer
            # resends it, and the server loop ends the session if the
            # client is really gone.
            return False
        except OSError:
            # Peer unreachable (ICMP), no route: this transfer is over.
            self.result = ABORTED
            return False
        return True

    def notify(self, datagram):
        """Send one datagram outside the transfer (an ERROR)."""
        self._emit(datagram)

    def on_repeated_request(self, now):
        """The client sent its request again.

        Until the client has answered once, this is the only resend: the
        timer does not resend a first packet nobody acknowledged, so a
        request with a forged source draws one answer, not one per retry
        (every client resends its request when the answer is lost).

        :returns: ``True`` if the session is over.
        """
        if not self.heard:
            self._transmit(now)
        return self.done

    def on_datagram(self, data, now):
        """Handle one datagram from the peer.

        :returns: ``True`` if the session finished with it.
        """
        base = self._base
        if (self.windowsize == 1 and self.proven and base == self._sent_upto
                and len(data) >= 4 and data[0] == 0 and data[1] == packet.ACK
                and (data[2] << 8 | data[3]) == base & 0xffff
                and base != self._last):
            # Lock-step after the first ACK (every BIOS, tftp-hpa): the ACK
            # of the one block in flight asks for the next. The general
            # path below does the same; this one skips its calls, most of
            # the interpreter's time per block.
            self.last_heard = now
            self._retries_left = self.retries
            self.deadline = now + self.timeout
            self._base = base + 1
            frames = self._frames
            datagram = frames[base] if frames is not None else None
            if datagram is None:
                datagram = self._datagram(base + 1)
            if self._emit(datagram):
                self._sent_upto = base + 1
            return self.result is not None
        block = packet.parse_ack(data)
        if block is None:
            if packet.opcode_of(data) == packet.ERROR:
                # The peer gave up, or it only wanted tsize (EDK2 does).
                self.result = ABORTED
            return self.done
        self.heard = True
        self.last_heard = now
        if self._waiting_oack:
            if block == 0:
                self._waiting_oack = False
                self._retries_left = self.retries
                self._transmit(now)
            return self.done
        # The block this ACK names, counted from 1 without wrapping: the
        # only candidates are base-1 .. sent_upto, under 65536 apart.
        acked = self._base - 1 + ((block - self._base + 1) & 0xffff)
        if acked > self._sent_upto or acked < self._base:
            return self.done  # stale, duplicate or bogus: leave to timer
        if acked == self._last:
            self.result = COMPLETED
            return True
        self.proven = True
        self._base = acked + 1
        self._retries_left = self.retries
        self._transmit(now)
        return self.done

    def on_deadline(self, now):
        """Resend the oldest unacknowledged block (or the OACK), or give up
        after the last retry.

        :returns: ``True`` if the session is over.
        """
        if self._retries_left <= 0:
            self.result = TIMED_OUT
            return True
        self._retries_left -= 1
        if not self.heard:
            # See on_repeated_request: wait for the client to ask again.
            self.deadline = now + self.timeout
            return False
        # One block, not the window: a loss costs the peer a block, and a
        # peer that stopped answering draws one block per timeout.
        self._transmit(now, oldest_only=True)
        return self.done
