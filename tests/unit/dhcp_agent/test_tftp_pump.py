"""The compiled data path against the Python one, datagram by datagram.

Each case runs two copies of one transfer over real loopback sockets: one
driven by the Python session code alone, one by the C pump (which answers
what it can and hands the rest to the same Python code). Both are sent the
same datagrams; afterwards their fields and every datagram they sent must
be the same. The datagrams are random: in-window, stale and future ACKs,
ACKs with trailing bytes, short and empty datagrams, other opcodes,
ERRORs, and block numbers around the 65536 wrap.
"""

import errno
import random
import select
import socket

import pytest

from tests import tftp_peer
from vmetal_ironic.dhcp_agent import tftp_packet as packet
from vmetal_ironic.dhcp_agent import tftp_pump
from vmetal_ironic.dhcp_agent import tftp_server
from vmetal_ironic.dhcp_agent import tftp_session

compiled_only = pytest.mark.skipif(
    not tftp_pump.AVAILABLE,
    reason='the compiled path is not built (test_tftp checks it is in CI)')

_FIELDS = ('_base', '_sent_upto', '_retries_left', 'proven', 'heard',
           'result', 'deadline', 'last_heard', 'withheld')


class _Source:
    def __init__(self, data):
        self.data = data

    def chunk(self, offset, size):
        return self.data[offset:offset + size]


def _pair(single_port=False):
    """A server socket (connected unless ``single_port``) and the client
    socket it talks to."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(('127.0.0.1', 0))
    client.bind(('127.0.0.1', 0))
    if not single_port:
        server.connect(client.getsockname())
    client.connect(server.getsockname())
    server.setblocking(False)
    client.setblocking(False)
    return server, client


class _Copy:
    """One transfer; ``pump`` set: the compiled path serves it."""

    def __init__(self, data, request, pumped, single_port=False):
        self.server, self.client = _pair(single_port)
        self.single_port = single_port
        transfer = packet.negotiate(packet.parse_request(request),
                                    len(data), 1)
        peer = self.client.getsockname()
        self.session = tftp_session.Session(
            peer, self.server.sendto if single_port else self.server.send,
            _Source(data), len(data), transfer, retries=3, now=0.0,
            addressed=single_port)
        self.session._fd = self.server.fileno()
        self.epoll = self.pump = None
        if pumped:
            self.epoll = select.epoll()
            self.epoll.register(self.server.fileno(), select.EPOLLIN)
            key = (tftp_server.peer_key(peer) if single_port
                   else self.server.fileno())
            self.pump = tftp_pump.Pump(
                self.epoll.fileno(), {key: self.session},
                tftp_session.ABORTED, 64,
                self.server.fileno() if single_port else -1)
        self.session.start(0.0)

    def deliver(self, datagram, now):
        """The server gets ``datagram``; :returns: the time used."""
        self.client.send(datagram)
        if self.pump is None:
            # The Python loop: one recv of at most 256 bytes (2048 from
            # the listening socket).
            select.select([self.server], [], [], 1.0)
            self.session.on_datagram(
                self.server.recv(2048 if self.single_port else 256), now)
            return now
        now, events = self.pump.poll(1.0)
        for _fd, session, what in events:
            if self.single_port and session is None:
                # The listener's datagram: (datagram, peer).
                assert what[1] == self.client.getsockname()
                self.session.on_datagram(what[0], now)
                continue
            assert session is self.session
            if what is None:
                if session.result is None:
                    session.on_datagram(self.server.recv(256), now)
            else:
                assert isinstance(what, bytes), what
                session.on_datagram(what, now)
        return now

    def received(self):
        out = []
        while True:
            try:
                out.append(self.client.recv(70000))
            except BlockingIOError:
                return out

    def close(self):
        for sock in (self.server, self.client):
            sock.close()
        if self.epoll is not None:
            self.epoll.close()


def _datagram(rng, session, may_end):
    base = session._base
    choice = rng.random()
    if choice < 0.55:
        block = rng.randint(base - 2, session._sent_upto + 2)
        return tftp_peer.ack(block & 0xffff)
    if choice < 0.62:
        return tftp_peer.ack(rng.randrange(65536))
    if choice < 0.68:
        return tftp_peer.ack(base & 0xffff) + rng.randbytes(
            rng.randint(1, 300))
    if choice < 0.74:
        return rng.randbytes(rng.randint(0, 5))
    if choice < 0.8:
        return bytes([0, rng.choice((1, 2, 3, 6, 7, 255))]) + rng.randbytes(
            rng.randint(0, 20))
    if choice < 0.805 and may_end:
        return packet.error(0, 'gone')  # ends the transfer
    return tftp_peer.ack(session._sent_upto & 0xffff)


def _same(python, compiled):
    for name in _FIELDS:
        assert getattr(python.session, name) == getattr(
            compiled.session, name), name
    assert python.received() == compiled.received()


@compiled_only
@pytest.mark.parametrize('single_port', [False, True],
                         ids=['classic', 'single-port'])
@pytest.mark.parametrize('seed', range(12))
def test_fuzz_pump_does_what_the_python_path_does(seed, single_port):
    rng = random.Random(seed)
    blksize = rng.choice((8, 512, 1468))
    windowsize = rng.choice((1, 1, 4))
    blocks = rng.choice((40, 70010)) if blksize == 8 else 40
    data = rng.randbytes(blocks * blksize + rng.randrange(blksize))
    options = {'blksize': blksize} if blksize != 512 else {}
    if windowsize > 1:
        options['windowsize'] = windowsize
    request = tftp_peer.rrq('f', **options)
    python = _Copy(data, request, pumped=False, single_port=single_port)
    compiled = _Copy(data, request, pumped=True, single_port=single_port)
    try:
        if options:
            for copy in (python, compiled):
                copy.session.on_datagram(tftp_peer.ack(0), 0.0)
        _same(python, compiled)
        if blocks > 65536:
            # Straight to the wrap: both copies proven, 30 blocks before.
            for copy in (python, compiled):
                session = copy.session
                session.proven = session.heard = True
                session._base = session._sent_upto = 65536 - 30
        now = 0.0
        for count in range(400):
            if python.session.done:
                break
            datagram = _datagram(rng, python.session, count > 200)
            now = compiled.deliver(datagram, now + 0.001)
            python.deliver(datagram, now)
            _same(python, compiled)
        assert compiled.pump.counts()[0] > 0
    finally:
        python.close()
        compiled.close()


@compiled_only
def test_a_whole_file_through_the_pump_wraps_and_ends_in_python():
    data = random.Random(3).randbytes(70000 * 8 + 3)
    copy = _Copy(data, tftp_peer.rrq('f', blksize=8), pumped=True)
    try:
        assert copy.received()[0][:2] == b'\0\x06'   # the OACK
        copy.session.on_datagram(tftp_peer.ack(0), 0.0)
        got = copy.received()
        block = 0
        while not copy.session.done:
            block += 1
            copy.deliver(tftp_peer.ack(block & 0xffff), 0.0)
            got.extend(copy.received())
        assert copy.session.result == tftp_session.COMPLETED
        assert b''.join(d[4:] for d in got) == data
        assert [d[:4] for d in got[65534:65537]] == [
            b'\0\x03\xff\xff', b'\0\x03\0\0', b'\0\x03\0\x01']
        # All but the first and the last ACK: answered in C.
        assert copy.pump.counts()[0] == 70000 - 1
    finally:
        copy.close()


@compiled_only
def test_a_refused_send_is_given_back_and_a_failed_one_ends_it():
    data = bytes(70000 * 10)
    copy = _Copy(data, tftp_peer.rrq('f'), pumped=True)
    try:
        copy.deliver(tftp_peer.ack(1), 0.0)   # proven, in Python
        assert copy.session.proven and copy.session._sent_upto == 2
        copy.received()
        # The client closes: the resend draws an ICMP port unreachable,
        # which the next recv() reports; the pump hands back its errno.
        port = copy.client.getsockname()
        copy.client.close()
        copy.session.on_deadline(10.0)
        copy.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        copy.client.bind(port)
        copy.client.connect(copy.server.getsockname())
        copy.client.send(tftp_peer.ack(2))
        _now, events = copy.pump.poll(1.0)
        assert [what for _fd, _session, what in events] == [
            errno.ECONNREFUSED]
        assert copy.session._base == 2 and copy.session.result is None
        # What the server's _recv_failed then does: the ACK is still there.
        assert copy.server.recv(256) == tftp_peer.ack(2)
        # A datagram the kernel refuses outright (over 64 KiB: EMSGSIZE)
        # ends the transfer, as on the Python path.
        copy.session.blksize = 70000
        copy.session._last = 100
        copy.client.send(tftp_peer.ack(2))
        _now, events = copy.pump.poll(1.0)
        assert [what for _fd, _session, what in events] == [None]
        assert copy.session.result == tftp_session.ABORTED
    finally:
        copy.close()


@compiled_only
def test_a_failed_send_in_single_port_mode_ends_the_transfer():
    data = bytes(70000 * 10)
    copy = _Copy(data, tftp_peer.rrq('f'), pumped=True, single_port=True)
    try:
        copy.deliver(tftp_peer.ack(1), 0.0)   # proven, in Python
        assert copy.session.proven and copy.session._sent_upto == 2
        copy.received()
        # The next block over 64 KiB: sendto() refuses it (EMSGSIZE), and
        # the session comes back, ended, for Python to close.
        copy.session.blksize = 70000
        copy.session._last = 100
        copy.client.send(tftp_peer.ack(2))
        _now, events = copy.pump.poll(1.0)
        assert [(session, what) for _fd, session, what in events] == [
            (copy.session, None)]
        assert copy.session.result == tftp_session.ABORTED
        assert copy.session._base == 3
    finally:
        copy.close()


@compiled_only
def test_a_session_that_is_not_in_the_fast_state_is_handed_back():
    data = bytes(512 * 10)
    copy = _Copy(data, tftp_peer.rrq('f', blksize=1024), pumped=True)
    try:
        # Waiting for ACK 0 of the OACK: unread, Python's.
        copy.client.send(tftp_peer.ack(0))
        _now, events = copy.pump.poll(1.0)
        assert [(what, session is copy.session)
                for _fd, session, what in events] == [(None, True)]
        assert copy.pump.counts() == (0, 1)
    finally:
        copy.close()


@compiled_only
def test_pump_rejects_a_bad_event_count():
    with pytest.raises(ValueError):
        tftp_pump.Pump(0, {}, 'aborted', 0)


@compiled_only
def test_both_cores_have_the_same_fields():
    """The Python path's record has every field of the C one, so a session
    works the same whichever is its base class."""
    from vmetal_ironic.dhcp_agent import _tftp_pump
    names = {name for name, value in vars(_tftp_pump.SessionCore).items()
             if type(value).__name__ == 'member_descriptor'}
    assert names == set(tftp_pump.PySessionCore.__slots__)


def test_which_path_a_server_runs():
    assert tftp_pump.choose(False) == tftp_pump.PYTHON
    assert tftp_pump.choose(True) == (
        tftp_pump.COMPILED if tftp_pump.AVAILABLE else tftp_pump.PYTHON)
