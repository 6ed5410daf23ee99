"""The TFTP event loop: every session on one thread, over epoll.

Two modes:

- classic (RFC 1350): each transfer gets its own UDP socket (its own
  port, the server's transfer ID), connected to the peer, so the kernel
  drops datagrams from anyone else.
- single-port: every transfer is sent from the listening port and told
  apart by the peer's address and port. Needed where only port 69 is
  reachable: pods behind NAT, kube-proxy, a firewall with no TFTP helper.

The loop owns every socket and session; nothing a peer sends reaches
another session: a datagram is handled by exactly one session, or it is a
request, which is parsed in full before anything is opened and refused to
that peer alone with an ERROR packet. The loop waits on epoll, which has
no descriptor ceiling (``select()`` stops at 1,023) and costs the same
with 2 or 20,000 idle sessions.

Nobody on the L2 can lock the others out: a session whose peer never
answered is the first to go when the table is full, an address holds at
most ``max_sessions_per_address`` sessions (its oldest idle one makes
room for its next request), and a requested ``timeout`` above
``max_timeout`` is not granted. Every such decision is counted
(``on_limit``).
"""

import contextlib
import select
import socket
import time

from oslo_log import log

from vmetal_ironic.dhcp_agent import log_limit
from vmetal_ironic.dhcp_agent import tftp_packet as packet
from vmetal_ironic.dhcp_agent import tftp_session as session_mod

LOG = log.getLogger(__name__)

# Datagrams read from the listening socket per wake-up, so a flood of
# requests cannot starve the transfers in progress.
_BURST = 16
# Receive sizes. A request fits in 512 bytes (RFC 1350; RFC 2347 keeps
# options inside that), a client sends only ACKs and ERRORs inside a
# transfer; a larger datagram is cut and then refused or ignored. Small
# buffers matter: recv() allocates its full size for every datagram, from
# Python's small-object pool only up to about 450 bytes. A transfer needs
# the opcode and block number of what it receives (an ERROR's text is only
# logged by the client that sent it).
_RECV_LISTENER = 2048
_RECV_SESSION = 256
# How often deadlines are checked; timeouts are whole seconds.
_TICK = 0.2
# Events taken per epoll wait. Level-triggered: the rest come with the
# next wait. (Without a number, Python allocates room for 1,023 events on
# every wait, once or more per DATA block.)
_EVENTS = 64
# Buffers of the listening socket.
_SOCKET_BUFFER = 4 * 1024 * 1024
# Linux <asm-generic/socket.h>; Python's socket module does not name them.
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33


def _grow_buffer(sock, option, force):
    # FORCE passes net.core.[rw]mem_max (root, CAP_NET_ADMIN); without the
    # capability the kernel caps the plain option at that maximum.
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, _SOCKET_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)


class Limits:
    """Server-wide limits.

    :param timeout: default retransmission timeout (seconds).
    :param retries: resends of a window before a transfer is dropped.
    :param max_sessions: transfers at once; more are refused as busy.
    :param max_blksize: largest block size granted.
    :param max_windowsize: largest window granted.
    :param max_timeout: longest client ``timeout`` option granted.
    :param max_sessions_per_address: transfers of one peer address at once.
    """

    def __init__(self, timeout=5, retries=3, max_sessions=4096,
                 max_blksize=packet.MAX_BLKSIZE, max_windowsize=64,
                 max_timeout=10, max_sessions_per_address=32):
        self.timeout = timeout
        self.retries = retries
        self.max_sessions = max_sessions
        self.max_blksize = max_blksize
        self.max_windowsize = max_windowsize
        self.max_timeout = max_timeout
        self.max_sessions_per_address = max_sessions_per_address


class TftpServer:
    """Serve read requests on ``sock`` until :meth:`stop`.

    :param sock: the bound listening UDP socket (port 69).
    :param open_file: callable ``name -> path or None`` (the jail).
    :param limits: :class:`Limits`.
    :param single_port: send every transfer from ``sock``.
    :param on_result: callable ``(result, bytes)`` for metrics.
    :param on_limit: callable ``(what)``, once per limit applied:
        ``timeout_declined``, ``evicted_unanswered`` (the table was full),
        ``evicted_per_address``, ``resend_withheld`` (a session ended with
        resends left out for a peer that never acknowledged DATA).
    :param clock: monotonic clock.
    """

    def __init__(self, sock, open_file, limits, single_port=False,
                 on_result=None, on_limit=None, clock=time.monotonic):
        self.sock = sock
        self.sock.setblocking(False)
        self.address = sock.getsockname()[0]
        self._open_file = open_file
        self.limits = limits
        self.single_port = single_port
        self._on_result = on_result or (lambda result, size: None)
        self._on_limit = on_limit or (lambda what: None)
        self._clock = clock
        self.files = session_mod.FileTable()
        # classic: socket fd -> session; single-port: peer -> session.
        self.sessions = {}
        # peer -> session, in both modes (the same dict in single-port).
        self._by_peer = self.sessions if single_port else {}
        # Sessions whose peer has not sent a datagram yet, oldest first:
        # the first to make room in a full table.
        self._unheard = {}
        # Peer address -> its sessions (dict as an ordered set).
        self._by_address = {}
        self.refusals = log_limit.LogLimiter(
            10, 10.0, what='refused TFTP requests')
        self._epoll = select.epoll()
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        self._listen_fd = sock.fileno()
        self._running = True
        # A boot storm sends thousands of requests at once; the default
        # buffer holds about 300. Single-port mode also sends every window
        # of every transfer through this socket.
        _grow_buffer(sock, socket.SO_RCVBUF, _SO_RCVBUFFORCE)
        if single_port:
            _grow_buffer(sock, socket.SO_SNDBUF, _SO_SNDBUFFORCE)

    def stop(self):
        self._running = False

    def serve(self):
        """Run the loop on the calling thread until :meth:`stop`."""
        # Names bound once: this loop runs once or more per DATA block.
        poll = self._epoll.poll
        clock = self._clock
        sessions = self.sessions
        listen_fd = self._listen_fd
        on_session = self._read_session
        next_scan = clock() + _TICK
        try:
            while self._running:
                events = poll(_TICK, _EVENTS)
                # One reading of the clock per wake-up serves every
                # datagram it brought: they arrived within microseconds.
                now = clock()
                for fd, _mask in events:
                    if fd == listen_fd:
                        self._guarded(self._read_listener)
                        continue
                    session = sessions.get(fd)
                    if session is None:
                        continue
                    try:
                        on_session(session, now)
                    except Exception:
                        self._lost(session)
                if now >= next_scan:
                    next_scan = now + _TICK
                    self._expire(now)
        finally:
            self._close_all()

    def _guarded(self, handler, session=None):
        # The last line of defence, for a bug rather than a bad packet
        # (those are BadPacket or ignored): the one session (or datagram)
        # is lost, every other transfer goes on, and the traceback is
        # logged under the same rate limit as refusals.
        try:
            if session is None:
                handler()
            else:
                handler(session)
        except Exception:
            self._lost(session)

    def _lost(self, session):
        # Called from an except block: the traceback is the current one.
        self.refusals.warning('TFTP server error; %s dropped',
                              'one transfer' if session else
                              'one request', exc_info=True)
        if session is not None:
            session.result = session.result or 'failed'
            with contextlib.suppress(Exception):
                self._finish(session)

    # -- the listening socket -----------------------------------------

    def _read_listener(self):
        sock = self.sock
        for _ in range(_BURST):
            try:
                data, peer = sock.recvfrom(_RECV_LISTENER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # An ICMP error for an earlier single-port datagram.
                continue
            current = self._by_peer.get(peer)
            if current is not None:
                if data == current.request:
                    # The client resent its request: its first packet was
                    # lost, or it is still on the way.
                    if current.on_repeated_request(self._clock()):
                        self._finish(current)
                    continue
                if self.single_port and packet.opcode_of(data) not in (
                        packet.RRQ, packet.WRQ):
                    self._on_datagram(current, data, self._clock())
                    continue
            self._request(data, peer)

    def _reply_error(self, peer, code, reason):
        with contextlib.suppress(OSError):
            self.sock.sendto(packet.error(code, reason), peer)

    def _request(self, data, peer):
        opcode = packet.opcode_of(data)
        if opcode == packet.ERROR:
            return  # never answer an error (no loops between servers)
        if opcode in (packet.DATA, packet.ACK, packet.OACK):
            # Not for this port in classic mode; for no session in
            # single-port mode.
            self._reply_error(peer, packet.UNKNOWN_TID, 'unknown transfer')
            return
        try:
            request = packet.parse_request(data)
        except packet.BadPacket as exc:
            self._refuse(peer, exc.code, exc.reason, 'malformed')
            return
        current = self._by_peer.get(peer)
        if current is not None:
            # A new, well-formed request from the same port: the client
            # gave up its transfer. (Anything else from that address and
            # port leaves the transfer alone.)
            current.result = session_mod.ABORTED
            self._finish(current)
        if request.opcode == packet.WRQ:
            self._refuse(peer, packet.ACCESS_VIOLATION, 'read-only server',
                         'write_refused', request.filename)
            return
        if not self._make_room(peer[0]):
            self._refuse(peer, packet.NOT_DEFINED, 'server busy', 'busy',
                         request.filename)
            return
        path = self._open_file(request.filename)
        if path is None:
            self._refuse(peer, packet.FILE_NOT_FOUND, 'file not found',
                         'refused', request.filename)
            return
        try:
            file_key, source, size = self.files.acquire(
                path, netascii=request.mode == 'netascii')
        except OSError as exc:
            self._refuse(peer, packet.ACCESS_VIOLATION, 'cannot read file',
                         'failed', f'{request.filename} ({exc.strerror})')
            return
        try:
            transfer = packet.negotiate(
                request, size, self.limits.timeout,
                max_blksize=self.limits.max_blksize,
                max_windowsize=self.limits.max_windowsize,
                max_timeout=self.limits.max_timeout)
            for _name in transfer.declined:
                self._on_limit('timeout_declined')
            self._start(request, data, peer, file_key, source, size,
                        transfer,
                        self.files.frames(file_key, transfer.blksize))
        except packet.BadPacket as exc:
            self.files.release(file_key)
            self._refuse(peer, exc.code, exc.reason, 'bad_option',
                         request.filename)
        except OSError as exc:
            self.files.release(file_key)
            self._refuse(peer, packet.NOT_DEFINED, 'server error', 'failed',
                         f'{request.filename} ({exc.strerror})')

    def _make_room(self, address):
        """Evict what a new request from ``address`` needs evicted.

        :returns: ``False`` when the table is full of sessions whose peers
            answer (the request is refused as busy).
        """
        mine = self._by_address.get(address)
        if mine and len(mine) >= self.limits.max_sessions_per_address:
            # Its own oldest idle session: unanswered ones first.
            victim = min(mine, key=lambda s: (s.heard, s.last_heard))
            self._evict(victim, 'evicted_per_address')
        if len(self.sessions) < self.limits.max_sessions:
            return True
        if not self._unheard:
            return False
        self._evict(next(iter(self._unheard)), 'evicted_unanswered')
        return True

    def _evict(self, session, why):
        self._on_limit(why)
        if session.heard:
            # It answered once: say why it ends (unanswered peers may be
            # forged addresses, and get nothing more).
            session.notify(packet.error(packet.NOT_DEFINED,
                                        'session evicted'))
        session.result = session_mod.EVICTED
        self._finish(session)

    def _start(self, request, data, peer, file_key, source, size,
               transfer, frames):
        now = self._clock()
        if self.single_port:
            sock = None
            send = self.sock.sendto
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.address, 0))
                sock.connect(peer)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            send = sock.send
        session = session_mod.Session(peer, send, source, size, transfer,
                                      self.limits.retries, now, frames,
                                      addressed=sock is None)
        session.request = data
        session.file_key = file_key
        session.sock = sock
        self._unheard[session] = None
        self._by_address.setdefault(peer[0], {})[session] = None
        if sock is None:
            self.sessions[peer] = session
        else:
            self.sessions[sock.fileno()] = session
            self._by_peer[peer] = session
            self._epoll.register(sock.fileno(), select.EPOLLIN)
        LOG.debug('TFTP read of %s by %s:%s, %d B, blksize %d, window %d',
                  request.filename, peer[0], peer[1], size, transfer.blksize,
                  transfer.windowsize)
        session.start(now)
        if session.done:
            self._finish(session)

    def _refuse(self, peer, code, reason, result, name=None):
        self._reply_error(peer, code, reason)
        self._on_result(result, 0)
        what = f'of {name!r} ' if name is not None else ''
        self.refusals.warning('TFTP request %sfrom %s:%s refused: %s', what,
                              peer[0], peer[1], reason)

    # -- transfers -------------------------------------------------------

    def _read_session(self, session, now):
        # One datagram per wake-up: epoll is level-triggered, so anything
        # still queued wakes the loop again, and the common case (one ACK)
        # costs no extra failing recv().
        try:
            data = session.sock.recv(_RECV_SESSION)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # ICMP port unreachable, reported once. Datagrams queued before
            # it still count (the client's last ACK, sent just before it
            # closed); with none left, the client is gone.
            try:
                data = session.sock.recv(_RECV_SESSION)
            except OSError:
                session.result = session_mod.ABORTED
                self._finish(session)
                return
        self._on_datagram(session, data, now)

    def _on_datagram(self, session, data, now):
        if session.on_datagram(data, now):
            self._finish(session)
        elif self._unheard and session.heard:
            self._unheard.pop(session, None)

    def _expire(self, now):
        late = [s for s in self.sessions.values() if s.deadline <= now]
        for session in late:
            self._guarded(self._deadline, session)

    def _deadline(self, session):
        if session.on_deadline(self._clock()):
            self._finish(session)

    def _finish(self, session):
        key = session.peer if session.sock is None else session.sock.fileno()
        if self.sessions.get(key) is not session:
            return  # already finished
        # Counted before the session leaves the table, so whoever sees the
        # session count drop also sees its result.
        result = session.result or session_mod.ABORTED
        self._on_result(result,
                        session.size if result == session_mod.COMPLETED
                        else 0)
        del self.sessions[key]
        self._unheard.pop(session, None)
        mine = self._by_address.get(session.peer[0])
        if mine is not None:
            mine.pop(session, None)
            if not mine:
                del self._by_address[session.peer[0]]
        if session.withheld:
            self._on_limit('resend_withheld')
        if session.sock is not None:
            if self._by_peer.get(session.peer) is session:
                del self._by_peer[session.peer]
            self._epoll.unregister(key)
            session.sock.close()
        self.files.release(session.file_key)

    def _close_all(self):
        for session in list(self.sessions.values()):
            session.result = session.result or session_mod.ABORTED
            self._finish(session)
        self.files.close()
        self._epoll.close()
