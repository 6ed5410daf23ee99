"""The TFTP event loops: every session over epoll, on one or a few threads.

Two modes:

- classic (RFC 1350): each transfer gets its own UDP socket (its own
  port, the server's transfer ID), connected to the peer, so the kernel
  drops datagrams from anyone else.
- single-port: every transfer is sent from the listening port and told
  apart by the peer's address and port. Needed where only port 69 is
  reachable: pods behind NAT, kube-proxy, a firewall with no TFTP helper.

Nothing a peer sends reaches another session: a datagram is handled by
exactly one session, or it is a request, which is parsed in full before
anything is opened and refused to that peer alone with an ERROR packet.
A loop waits on epoll, which has no descriptor ceiling (``select()``
stops at 1,023) and costs the same with 2 or 20,000 idle sessions.

Most of a block's cost is the kernel's ``send()`` (on a veth or loopback
the sender also pays the delivery to the receiver), which runs without
the GIL. In classic mode the server can therefore run ``threads`` loops:
loop 0 reads the listening socket and its own share of sessions, and
every new session is given to the least loaded loop for its whole life.
A session, its socket and its deadline are only ever touched by its
loop's thread; what another thread needs done to it (end it to make room,
answer a repeated request) is posted to that loop's inbox. The tables the
limits are counted on (sessions per address, unanswered sessions, the
session count) are server-wide and changed under one lock, never per
loop. Single-port mode has one loop: every datagram arrives on the one
socket, and handing each to another thread would cost more than it saves.

Each loop may run on the compiled data path
(:mod:`~vmetal_ironic.dhcp_agent.tftp_pump`): the loop's C pump waits on
its epoll with the GIL released and answers the in-order ACKs of proven
transfers itself (in single-port mode it also reads the listening
socket); every other event comes back to the same Python code as on the
Python path, with the datagram the pump read.

Nobody on the L2 can lock the others out: a session whose peer never
answered is the first to go when the table is full, an address holds at
most ``max_sessions_per_address`` sessions (its oldest idle one makes
room for its next request), and a requested ``timeout`` above
``max_timeout`` is not granted. Every such decision is counted
(``on_limit``).
"""

import collections
import contextlib
import os
import select
import socket
import threading
import time

from oslo_log import log

from vmetal_ironic.dhcp_agent import log_limit
from vmetal_ironic.dhcp_agent import socket_buffers
from vmetal_ironic.dhcp_agent import tftp_packet as packet
from vmetal_ironic.dhcp_agent import tftp_pump
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


def peer_key(peer):
    """A single-port session's key in its loop's table: the IPv4 address
    and port as one integer, which the compiled path makes from a
    datagram's source without building the ``(address, port)`` tuple."""
    address, port = peer
    return int.from_bytes(socket.inet_aton(address), 'big') << 16 | port


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


class _Loop:
    """One thread's share of the transfers.

    Its thread alone reads and changes ``sessions``, registers and closes
    their sockets and runs their deadlines; other threads only append to
    ``inbox`` and signal ``wake_fd``.
    """

    def __init__(self):
        self.epoll = select.epoll()
        # Session socket fd (classic) or peer_key (single-port) -> session.
        self.sessions = {}
        # Sessions assigned and not yet ended (changed under the server's
        # lock): the next one goes to the loop with the fewest.
        self.load = 0
        # (action, session) posted by other threads; deque appends and
        # pops are atomic.
        self.inbox = collections.deque()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.epoll.register(self.wake_fd, select.EPOLLIN)
        # The compiled path's pump (TftpServer), or None.
        self.pump = None

    def post(self, action, session):
        self.inbox.append((action, session))
        os.eventfd_write(self.wake_fd, 1)

    def close(self):
        self.epoll.close()
        os.close(self.wake_fd)


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
        Both callables may be called from any of the loops' threads.
    :param clock: monotonic clock.
    :param threads: event loops in classic mode (single-port mode always
        has one).
    :param compiled: run the compiled data path when it is built (it
        reads the monotonic clock itself, so a server given another
        ``clock`` runs the Python path). ``data_path`` says which
        one runs.
    """

    def __init__(self, sock, open_file, limits, single_port=False,
                 on_result=None, on_limit=None, clock=time.monotonic,
                 threads=1, compiled=True):
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
        # Guards the server-wide tables below and the file table.
        self._lock = threading.Lock()
        # peer -> session: every session not yet ended, in both modes.
        self._by_peer = {}
        # Sessions whose peer has not sent a datagram yet, oldest first:
        # the first to make room in a full table.
        self._unheard = {}
        # Peer address -> its sessions (dict as an ordered set).
        self._by_address = {}
        self.refusals = log_limit.LogLimiter(
            10, 10.0, what='refused TFTP requests')
        self._loops = [_Loop()
                       for _ in range(1 if single_port else max(1, threads))]
        self._listener_loop = self._loops[0]
        self._listener_loop.epoll.register(sock.fileno(), select.EPOLLIN)
        self._listen_fd = sock.fileno()
        #: ``compiled`` or ``python``: which per-block path the loops run.
        self.data_path = tftp_pump.choose(compiled and clock is time.monotonic)
        if self.data_path == tftp_pump.COMPILED:
            for loop in self._loops:
                loop.pump = tftp_pump.Pump(
                    loop.epoll.fileno(), loop.sessions, session_mod.ABORTED,
                    _EVENTS, self._listen_fd if single_port else -1)
        self._running = True
        # A boot storm sends thousands of requests at once; the default
        # buffer holds about 300. Single-port mode also sends every window
        # of every transfer through this socket.
        socket_buffers.grow(sock, socket.SO_RCVBUF, _SOCKET_BUFFER,
                            'the TFTP listener')
        if single_port:
            socket_buffers.grow(sock, socket.SO_SNDBUF, _SOCKET_BUFFER,
                                'the TFTP listener')

    @property
    def session_count(self):
        """Transfers in progress."""
        return len(self._by_peer)

    def stop(self):
        self._running = False

    def serve(self):
        """Run the loops until :meth:`stop`: loop 0 (with the listening
        socket) on the calling thread, the others on threads of their own,
        which are joined before every session is closed."""
        others = [threading.Thread(target=self._serve_other, args=(loop,),
                                   name=f'tftp-{number}', daemon=True)
                  for number, loop in enumerate(self._loops[1:], 1)]
        try:
            for thread in others:
                thread.start()
            self._run(self._listener_loop)
        finally:
            self._running = False
            for thread in others:
                thread.join()
            self._close_all()

    def _serve_other(self, loop):
        try:
            self._run(loop)
        except Exception:  # the loop's own bug: say so, stop serving
            LOG.exception('TFTP loop stopped; stopping the TFTP server')
            self._running = False

    def _run(self, loop):
        if loop.pump is not None:
            self._run_pumped(loop)
            return
        # Names bound once: this loop runs once or more per DATA block.
        poll = loop.epoll.poll
        clock = self._clock
        sessions = loop.sessions
        listen_fd = self._listen_fd if loop is self._listener_loop else None
        wake_fd = loop.wake_fd
        unheard = self._unheard
        next_scan = clock() + _TICK
        while self._running:
            events = poll(_TICK, _EVENTS)
            # One reading of the clock per wake-up serves every datagram
            # it brought: they arrived within microseconds.
            now = clock()
            for fd, _mask in events:
                session = sessions.get(fd)
                if session is not None:
                    # A transfer's datagram, read and handled inline: this
                    # runs once per block. One datagram per wake-up: epoll
                    # is level-triggered, so anything still queued wakes
                    # the loop again, and the common case (one ACK) costs
                    # no extra failing recv().
                    try:
                        data = session.sock.recv(_RECV_SESSION)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        self._guarded(self._recv_failed, session)
                        continue
                    try:
                        if unheard and session in unheard:
                            self._heard(session, data)
                        if session.on_datagram(data, now):
                            self._finish(session)
                    except Exception:
                        self._lost(session)
                elif fd == listen_fd:
                    self._guarded(self._read_listener)
                elif fd == wake_fd:
                    self._read_inbox(loop)
            if now >= next_scan:
                next_scan = now + _TICK
                self._expire(loop, now)

    def _run_pumped(self, loop):
        # The compiled path: the pump has already answered every in-order
        # ACK of a proven transfer; what it hands back is handled as the
        # Python loop above handles it.
        poll = loop.pump.poll
        sessions = loop.sessions
        listen_fd = self._listen_fd if loop is self._listener_loop else None
        wake_fd = loop.wake_fd
        next_scan = self._clock() + _TICK
        while self._running:
            # Back here only with work for Python, or at the next scan.
            now, events = poll(_TICK, next_scan)
            for fd, session, what in events:
                if session is None:
                    if fd == wake_fd:
                        self._read_inbox(loop)
                    elif fd != listen_fd:
                        continue
                    elif what is None:
                        self._guarded(self._read_listener)
                    else:
                        # Single-port: one datagram the pump did not take.
                        try:
                            self._listener_datagram(*what)
                        except Exception:
                            self._lost(None)
                elif sessions.get(session.key) is session:
                    # (Not: an earlier event of this wake-up ended it.)
                    try:
                        self._handed_back(session, what, now)
                    except Exception:
                        self._lost(session)
            if now >= next_scan:
                next_scan = now + _TICK
                self._expire(loop, now)

    def _handed_back(self, session, what, now):
        if what is None:
            if session.result is not None:
                self._finish(session)  # the pump's send failed for good
                return
            try:
                what = session.sock.recv(_RECV_SESSION)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._recv_failed(session)
                return
        elif what.__class__ is int:
            self._recv_failed(session)  # the pump's recv() failed
            return
        self._on_datagram(session, what, now)

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
        # A session is only lost on its own loop's thread.
        self.refusals.warning('TFTP server error; %s dropped',
                              'one transfer' if session else
                              'one request', exc_info=True)
        if session is not None:
            session.result = session.result or 'failed'
            with contextlib.suppress(Exception):
                self._finish(session)

    # -- the listening socket (loop 0's thread) -------------------------

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
            self._listener_datagram(data, peer)

    def _listener_datagram(self, data, peer):
        current = self._by_peer.get(peer)
        if current is not None:
            if data == current.request:
                # The client resent its request: its first packet was
                # lost, or it is still on the way.
                self._repeated(current)
                return
            if self.single_port and packet.opcode_of(data) not in (
                    packet.RRQ, packet.WRQ):
                self._on_datagram(current, data, self._clock())
                return
        with self._lock:
            self._request(data, peer)

    def _repeated(self, session):
        if session.loop is not self._listener_loop:
            session.loop.post('repeat', session)
        elif session.on_repeated_request(self._clock()):
            self._finish(session)

    def _reply_error(self, peer, code, reason):
        with contextlib.suppress(OSError):
            self.sock.sendto(packet.error(code, reason), peer)

    def _request(self, data, peer):
        # Holds the lock: the tables, the file table.
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
            self._end(current, session_mod.ABORTED)
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
            # Its own oldest idle session: unanswered ones first. (Read
            # while the sessions' own loops may change them: at worst a
            # session heard a microsecond ago is taken for idle.)
            victim = min(mine, key=lambda s: (s.heard, s.last_heard))
            self._evict(victim, 'evicted_per_address')
        if len(self._by_peer) < self.limits.max_sessions:
            return True
        if not self._unheard:
            return False
        self._evict(next(iter(self._unheard)), 'evicted_unanswered')
        return True

    def _evict(self, session, why):
        self._on_limit(why)
        self._end(session, session_mod.EVICTED)

    def _end(self, session, result):
        """End a session from the listener's thread (lock held).

        It leaves the tables at once, so the room it made counts now;
        its own loop sends the eviction notice and closes it.
        """
        if not self._forget(session, result):
            return
        if session.loop is self._listener_loop:
            self._close_evicted(session, result)
        else:
            session.loop.post(result, session)

    def _close_evicted(self, session, result):
        # On the session's loop, lock held.
        if result == session_mod.EVICTED and session.heard:
            # It answered once: say why it ends (unanswered peers may be
            # forged addresses, and get nothing more).
            session.notify(packet.error(packet.NOT_DEFINED,
                                        'session evicted'))
        self._close(session)

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
        # The socket the compiled path sends on: the transfer's own, or
        # in single-port mode the listening one.
        session._fd = sock.fileno() if sock is not None else self._listen_fd
        session.request = data
        session.file_key = file_key
        session.sock = sock
        session.key = peer_key(peer) if sock is None else sock.fileno()
        loop = session.loop = min(self._loops, key=lambda item: item.load)
        loop.load += 1
        self._unheard[session] = None
        self._by_address.setdefault(peer[0], {})[session] = None
        self._by_peer[peer] = session
        LOG.debug('TFTP read of %s by %s:%s, %d B, blksize %d, window %d',
                  request.filename, peer[0], peer[1], size, transfer.blksize,
                  transfer.windowsize)
        # Sent from this thread: no loop knows the session yet.
        try:
            session.start(now)
        except Exception:
            # The caller releases the file it acquired.
            self._forget(session, 'failed')
            session.file_key = None
            self._close(session)
            raise
        if session.done:
            self._forget(session, session.result)
            self._close(session)
        elif loop is self._listener_loop:
            self._adopt(session)
        else:
            loop.post('adopt', session)

    def _adopt(self, session):
        # On the session's loop. A datagram that came meanwhile is still
        # queued on its socket: epoll is level-triggered.
        loop = session.loop
        loop.sessions[session.key] = session
        if session.sock is not None:
            loop.epoll.register(session.key, select.EPOLLIN)

    def _refuse(self, peer, code, reason, result, name=None):
        self._reply_error(peer, code, reason)
        self._on_result(result, 0)
        what = f'of {name!r} ' if name is not None else ''
        self.refusals.warning('TFTP request %sfrom %s:%s refused: %s', what,
                              peer[0], peer[1], reason)

    # -- a loop's own sessions -------------------------------------------

    def _read_inbox(self, loop):
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(loop.wake_fd)
        inbox = loop.inbox
        while inbox:
            action, session = inbox.popleft()
            if action == 'adopt':
                self._guarded(self._adopt, session)
            elif loop.sessions.get(session.key) is not session:
                continue  # it ended meanwhile
            elif action == 'repeat':
                self._guarded(self._answer_again, session)
            else:
                self._guarded(
                    lambda s, result=action: self._ended_elsewhere(s, result),
                    session)

    def _ended_elsewhere(self, session, result):
        # The listener has taken it out of the tables (_end).
        with self._lock:
            self._close_evicted(session, result)

    def _answer_again(self, session):
        if session.on_repeated_request(self._clock()):
            self._finish(session)

    def _recv_failed(self, session):
        # ICMP port unreachable, reported once. Datagrams queued before it
        # still count (the client's last ACK, sent just before it closed);
        # with none left, the client is gone.
        try:
            data = session.sock.recv(_RECV_SESSION)
        except OSError:
            session.result = session_mod.ABORTED
            self._finish(session)
            return
        self._on_datagram(session, data, self._clock())

    def _on_datagram(self, session, data, now):
        if self._unheard and session in self._unheard:
            self._heard(session, data)
        if session.on_datagram(data, now):
            self._finish(session)

    def _heard(self, session, data):
        # An ACK makes the session heard (Session.on_datagram): it leaves
        # the unanswered ones before it answers, or the listener on
        # another thread could take it for unanswered after its peer has
        # seen the answer.
        if packet.parse_ack(data) is not None:
            with self._lock:
                self._unheard.pop(session, None)

    def _expire(self, loop, now):
        late = [s for s in loop.sessions.values() if s.deadline <= now]
        for session in late:
            self._guarded(self._deadline, session)

    def _deadline(self, session):
        if session.on_deadline(self._clock()):
            self._finish(session)

    def _finish(self, session):
        """End a session on its own loop's thread (again: no effect)."""
        with self._lock:
            self._forget(session, session.result or session_mod.ABORTED)
            self._close(session)

    def _forget(self, session, result):
        """Take a session out of the server-wide tables (lock held).

        :returns: ``False`` if it was already out.
        """
        if self._by_peer.get(session.peer) is not session:
            return False
        # Counted before the session leaves the table, so whoever sees the
        # session count drop also sees its result.
        self._on_result(result,
                        session.size if result == session_mod.COMPLETED
                        else 0)
        del self._by_peer[session.peer]
        session.loop.load -= 1
        self._unheard.pop(session, None)
        mine = self._by_address.get(session.peer[0])
        if mine is not None:
            mine.pop(session, None)
            if not mine:
                del self._by_address[session.peer[0]]
        return True

    def _close(self, session):
        """Close a session's socket and file (lock held, on its loop, or
        before any loop has it; after :meth:`_forget`)."""
        loop = session.loop
        if loop.sessions.get(session.key) is session:
            del loop.sessions[session.key]
            if session.sock is not None:
                loop.epoll.unregister(session.key)
        session._fd = -1
        if session.sock is not None:
            session.sock.close()
        if session.file_key is not None:
            # Released here, not in _forget: the file stays readable
            # while the session's loop may still send from it.
            self.files.release(session.file_key)
            session.file_key = None
            if session.withheld:
                self._on_limit('resend_withheld')

    def _close_all(self):
        # Every loop's thread has ended.
        with self._lock:
            for loop in self._loops:
                for session in list(loop.sessions.values()):
                    self._forget(session,
                                 session.result or session_mod.ABORTED)
                    self._close(session)
                for _action, session in loop.inbox:
                    self._forget(session,
                                 session.result or session_mod.ABORTED)
                    self._close(session)
                loop.inbox.clear()
                loop.close()
            self.files.close()
