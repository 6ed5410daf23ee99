import logging
import os
import time

import pytest
import tftpy

from tests import tftp_peer
from tests.unit.dhcp_agent import helpers
from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent import tftp
from vmetal_ironic.dhcp_agent import tftp_pump


@pytest.fixture
def root(tmp_path):
    base = helpers.boot_root(tmp_path, {'boot.efi': os.urandom(5000),
                                        'sub/x.bin': b'x'})
    (tmp_path / 'outside').mkdir()
    (tmp_path / 'outside' / 'ok.efi').write_text('ok')
    (base / 'allowed').symlink_to(tmp_path / 'outside' / 'ok.efi')
    (base / 'inner').symlink_to(base / 'sub' / 'x.bin')
    return base


def test_resolve(root):
    real = os.path.realpath(root)
    assert tftp.resolve(real, 'boot.efi') == os.path.join(real, 'boot.efi')
    assert tftp.resolve(real, 'sub/x.bin') == os.path.join(real, 'sub',
                                                           'x.bin')
    assert tftp.resolve(real, 'inner') == os.path.join(real, 'sub', 'x.bin')
    for name in ('../secret', 'sub/../../secret', '/etc/passwd', 'escape',
                 'allowed', 'sub', 'missing', '', 'a\0b', 'sub\\x.bin'):
        assert tftp.resolve(real, name) is None, name
    outside = os.path.realpath(root.parent / 'outside')
    assert tftp.resolve(real, 'allowed', (outside,)) == os.path.join(
        outside, 'ok.efi')
    assert tftp.resolve(real, 'escape', (outside,)) is None


def test_root_must_be_a_directory(tmp_path):
    with pytest.raises(ValueError, match='is not a readable directory'):
        tftp.TftpService(str(tmp_path / 'nope'), '127.0.0.1', 0)


def test_download_and_refusals_over_loopback(root, tmp_path):
    metrics = metrics_mod.Metrics()
    service = tftp.TftpService(str(root), '127.0.0.1', 0, metrics=metrics,
                               timeout=1, retries=2)
    service.start()
    try:
        port = service.port
        client = tftpy.TftpClient('127.0.0.1', port,
                                  options={'blksize': 1428, 'tsize': 0})
        target = tmp_path / 'out.efi'
        client.download('boot.efi', str(target))
        assert target.read_bytes() == (root / 'boot.efi').read_bytes()
        for name in ('escape', '../secret'):
            with pytest.raises(tftpy.TftpException):
                tftpy.TftpClient('127.0.0.1', port).download(
                    name, str(tmp_path / 'bad'))
        with pytest.raises(tftpy.TftpException):
            tftpy.TftpClient('127.0.0.1', port).upload(
                'new.bin', str(target))
        assert not (root / 'new.bin').exists()
        _wait_idle(service)
    finally:
        service.stop()
    text = metrics.render()
    assert 'vmetal_tftp_transfers_total{result="served"} 1.0' in text
    assert 'vmetal_tftp_bytes_total 5000.0' in text
    assert 'vmetal_tftp_transfers_total{result="write_refused"} 1.0' in text


def _wait_idle(service, limit=5.0):
    # The last ACK reaches the server after the client has returned.
    give_up = time.monotonic() + limit
    while service.session_count and time.monotonic() < give_up:
        time.sleep(0.01)
    assert service.session_count == 0


# Classic mode with its default two loops (sessions handed to the second
# one, evictions posted across) on the compiled data path and on the
# Python one, with one loop, and single-port mode on both paths.
@pytest.fixture(params=[(False, 2, True), (False, 2, False),
                        (False, 1, True), (True, 1, True), (True, 1, False)],
                ids=['classic', 'classic-python', 'classic-one-loop',
                     'single-port', 'single-port-python'])
def service(request, root):
    (root / 'big.bin').write_bytes(os.urandom(300_000))
    metrics = metrics_mod.Metrics()
    single_port, threads, compiled = request.param
    if compiled and not tftp_pump.AVAILABLE:
        pytest.skip('the compiled path is not built (see the test below)')
    service = tftp.TftpService(str(root), '127.0.0.1', 0, metrics=metrics,
                               timeout=1, retries=1,
                               single_port=single_port, max_sessions=50,
                               max_windowsize=8, threads=threads,
                               compiled=compiled)
    service.start()
    assert service.data_path == (tftp_pump.COMPILED if compiled
                                 else tftp_pump.PYTHON)
    yield service
    service.stop()


def test_the_compiled_data_path_is_built():
    # CI builds it (bindep installs the compiler): every "classic" case
    # above runs it. Without it they would all test the Python path.
    assert tftp_pump.AVAILABLE


def _pumped(service):
    """ACKs the compiled path answered without Python, all loops."""
    return sum(loop.pump.counts()[0] for loop in service._server._loops
               if loop.pump is not None)


def test_the_data_path_is_a_metric(service):
    # Both series, one at 1: a fleet's agents on the slower path show up
    # in one query, without knowing each agent's configuration.
    text = service.metrics.render()
    running = service.data_path
    other = ({tftp_pump.COMPILED, tftp_pump.PYTHON} - {running}).pop()
    assert f'vmetal_tftp_data_path{{path="{running}"}} 1.0' in text
    assert f'vmetal_tftp_data_path{{path="{other}"}} 0.0' in text


def _server(service):
    return ('127.0.0.1', service.port)


def test_windowsize_blksize_tsize_and_the_reply_port(service, root):
    expected = (root / 'big.bin').read_bytes()
    with tftp_peer.Peer(_server(service)) as peer:
        data, granted = peer.download('big.bin', windowsize=16, blksize=1468,
                                      tsize=0)
        assert data == expected
        # Asked 16, the server grants at most 8.
        assert granted == {'blksize': 1468, 'tsize': 300_000,
                           'windowsize': 8}
        single = service.single_port
        assert (peer.transfer[1] == service.port) is single
    with tftp_peer.Peer(_server(service)) as peer:
        # A client that acknowledges every other block of a window of 8
        # (as after a loss) still gets the whole file.
        data, _ = peer.download('big.bin', windowsize=8, ack_every=2)
        assert data == expected
    _wait_idle(service)
    text = service.metrics.render()
    assert 'result="served"} 2.0' in text, [
        line for line in text.splitlines() if 'transfers_total{' in line]
    if service.data_path == tftp_pump.COMPILED:
        # Past the first window every in-order ACK took the C path.
        assert _pumped(service) > 10


def test_file_of_whole_blocks_ends_with_an_empty_block(service, root):
    (root / 'even.bin').write_bytes(b'x' * 1024)
    with tftp_peer.Peer(_server(service)) as peer:
        assert peer.download('even.bin')[0] == b'x' * 1024
        assert peer.download('sub/x.bin', windowsize=4)[0] == b'x'


@pytest.mark.parametrize('datagram, code', [
    (b'\0\x04\0', 5),
    (b'\0\x01\xff\xfeboot.efi\0octet\0', 4),
    (b'\0\x01boot.efi\0octet\0bl\xffk\x00512\x00', 4),
    (tftp_peer.rrq('boot.efi', blksize='abc'), 8),
    (tftp_peer.rrq('boot.efi', blksize=7), 8),
    (tftp_peer.rrq('../secret'), 1),
    (tftp_peer.rrq('escape'), 1),
    (b'\0\x02new.bin\0octet\0', 2),
])
def test_a_bad_datagram_gets_an_error_and_harms_no_other_transfer(
        service, root, datagram, code):
    expected = (root / 'big.bin').read_bytes()
    with tftp_peer.Peer(_server(service)) as victim, \
            tftp_peer.Peer(_server(service)) as attacker:
        victim.send(tftp_peer.rrq('big.bin'))
        opcode, first, source = victim.recv()
        assert opcode == 3
        attacker.send(datagram)
        assert attacker.expect_error() == code
        # Aimed at the victim's transfer port as well: ignored there.
        attacker.send(datagram, source)
        assert victim.read_rest(first, source) == expected


def test_blksize_65535_is_held_to_the_rfc_maximum(service, root):
    with tftp_peer.Peer(_server(service)) as peer:
        data, granted = peer.download('big.bin', blksize=65535)
    assert granted == {'blksize': 65464}
    assert data == (root / 'big.bin').read_bytes()


def test_idle_sessions_time_out_after_timeout_and_retries(service):
    with tftp_peer.Peer(_server(service)) as peer:
        peer.send(tftp_peer.rrq('big.bin', timeout=1))
        started = time.monotonic()
        assert peer.recv()[0] == 6
        assert service.session_count == 1
        while service.session_count and time.monotonic() - started < 5:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    assert service.session_count == 0
    # timeout 1 s x (1 retry + 1)
    assert 1.5 < elapsed < 3.5, elapsed
    assert 'result="timeout"} 1.0' in service.metrics.render()


def test_first_packet_is_resent_only_when_the_client_asks_again(service):
    """One answer per request datagram until the client has answered once
    (a forged request draws no resends), then resends on the timer."""
    with tftp_peer.Peer(_server(service), timeout=1.5) as peer:
        request = tftp_peer.rrq('big.bin')
        peer.send(request)
        opcode, first, source = peer.recv()
        assert opcode == 3
        with pytest.raises(TimeoutError):
            peer.recv()  # no resend after the 1 s timeout
        peer.send(request)
        opcode, again, again_source = peer.recv()
        # The same transfer answers again; no second session.
        assert (opcode, again, again_source) == (3, first, source)
        assert service.session_count == 1
        peer.send(tftp_peer.ack(1), source)
        assert peer.recv()[1][:2] == b'\0\x02'
        # Now the client has answered: block 2 comes again on the timer.
        assert peer.recv()[1][:2] == b'\0\x02'


def _value(service, sample):
    for line in service.metrics.render().splitlines():
        if line.startswith(sample + ' '):
            return float(line.split()[-1])
    return 0.0


def _start(service, count, answer):
    peers = [tftp_peer.Peer(_server(service)) for _ in range(count)]
    for peer in peers:
        peer.send(tftp_peer.rrq('big.bin'))
        opcode, _payload, source = peer.recv()
        assert opcode == 3
        peer.transfer_source = source
        if answer:
            peer.send(tftp_peer.ack(1), source)
            assert peer.recv()[0] == 3
    return peers


def _assert_evicted_once(service, sessions, why):
    assert service.session_count == sessions
    assert _value(service, f'vmetal_tftp_limited_total{{what="{why}"}}') == 1
    assert _value(service, 'vmetal_tftp_transfers_total'
                           '{result="evicted"}') == 1


def test_a_table_of_answering_peers_refuses_as_busy(service):
    service.limits.max_sessions_per_address = 100
    peers = _start(service, 50, answer=True)
    try:
        with tftp_peer.Peer(_server(service)) as late:
            late.send(tftp_peer.rrq('big.bin'))
            assert late.expect_error() == 0
        assert 'vmetal_tftp_sessions 50.0' in service.metrics.render()
        # One descriptor for the file, however many transfers read it.
        assert len(service._server.files) == 1
    finally:
        for peer in peers:
            peer.close()


def test_a_full_table_drops_its_oldest_unanswered_session(service):
    """Review finding 5: requests nobody answers cannot lock anyone out;
    the oldest of them makes room."""
    service.limits.max_sessions_per_address = 100
    silent = _start(service, 50, answer=False)
    try:
        with tftp_peer.Peer(_server(service)) as late:
            late.send(tftp_peer.rrq('big.bin'))
            assert late.recv()[0] == 3
        _assert_evicted_once(service, 50, 'evicted_unanswered')
    finally:
        for peer in silent:
            peer.close()


def test_one_address_holds_at_most_its_share(service):
    service.limits.max_sessions_per_address = 4
    peers = _start(service, 6, answer=False)
    try:
        assert service.session_count == 4
        assert _value(service, 'vmetal_tftp_limited_total'
                               '{what="evicted_per_address"}') == 2
    finally:
        for peer in peers:
            peer.close()


def test_an_evicted_peer_that_answered_is_told_so(service):
    """The victim is the address's oldest idle session; in classic mode
    with two loops the second session lives on the other loop from the
    listener, so its eviction is posted there."""
    service.limits.max_sessions_per_address = 2
    first, second = _start(service, 2, answer=True)
    try:
        # The first one answers again: the second is now the idle one.
        first.send(tftp_peer.ack(2), first.transfer_source)
        assert first.recv()[0] == 3  # its ACK was handled
        with tftp_peer.Peer(_server(service)) as third:
            third.send(tftp_peer.rrq('big.bin'))
            assert third.recv()[0] == 3
        # (Block 2 may come again first on a slow machine: 1 s timeout.)
        opcodes = [second.recv()]
        while opcodes[-1][0] == 3 and len(opcodes) < 4:
            opcodes.append(second.recv())
        assert opcodes[-1][:2] == (5, b'\0\0session evicted\0'), opcodes
        _assert_evicted_once(service, 2, 'evicted_per_address')
    finally:
        first.close()
        second.close()


def test_a_long_timeout_option_is_not_granted(service):
    with tftp_peer.Peer(_server(service)) as peer:
        peer.send(tftp_peer.rrq('big.bin', timeout=255, tsize=0))
        opcode, payload, _source = peer.recv()
    assert (opcode, payload) == (6, b'tsize\x00300000\x00')
    assert _value(service, 'vmetal_tftp_limited_total'
                           '{what="timeout_declined"}') == 1


def test_a_client_that_gives_up_ends_its_session(service):
    with tftp_peer.Peer(_server(service)) as peer:
        # EDK2 asks for tsize first, then aborts with an ERROR.
        peer.send(tftp_peer.rrq('big.bin', tsize=0))
        opcode, _payload, source = peer.recv()
        assert opcode == 6
        peer.send(b'\0\x05\0\x00size only\0', source)
        _wait_idle(service)
    assert 'result="aborted"} 1.0' in service.metrics.render()


def test_file_table_shares_caches_and_falls_back_to_pread(root):
    from vmetal_ironic.dhcp_agent import tftp_session

    path = str(root / 'boot.efi')
    expected = (root / 'boot.efi').read_bytes()
    table = tftp_session.FileTable(cache_bytes=6000)
    key, cached, size = table.acquire(path)
    again = table.acquire(path)
    assert again[1] is cached and size == 5000 and len(table) == 1
    assert cached.chunk(4096, 512) == expected[4096:4608]
    # Over the budget: served from the file, same bytes.
    big = str(root / 'big.bin')
    (root / 'big.bin').write_bytes(os.urandom(2000))
    big_key, opened, _ = table.acquire(big)
    assert opened.chunk(1000, 2000) == (root / 'big.bin').read_bytes()[1000:]
    assert table.cached_bytes == 5000
    table.release(key)
    table.release(key)
    table.release(big_key)
    assert len(table) == 0 and table.cached_bytes == 0
    with pytest.raises(OSError):
        table.acquire(str(root / 'sub'))


def test_a_bug_on_one_request_does_not_stop_the_server(root, caplog):
    """A failure no datagram can cause (the jail itself raising) is put in
    by hand: that request is lost, the server goes on serving."""
    service = tftp.TftpService(str(root), '127.0.0.1', 0, timeout=1)
    real_open = service.open_file

    def open_file(name):
        if name == 'boom':
            raise RuntimeError('injected')
        return real_open(name)
    service.open_file = open_file
    service.start()
    try:
        with caplog.at_level(logging.WARNING), \
                tftp_peer.Peer(('127.0.0.1', service.port), timeout=1) as peer:
            peer.send(tftp_peer.rrq('boom'))
            with pytest.raises(TimeoutError):
                peer.recv()
            data, _ = peer.download('boot.efi')
            assert data == (root / 'boot.efi').read_bytes()
        assert any(record.exc_info for record in caplog.records)
    finally:
        service.stop()


def test_netascii_translates_line_ends_and_counts_them(root):
    from vmetal_ironic.dhcp_agent import tftp_session

    (root / 'text').write_bytes(b'a\nb\rc\r\n')
    table = tftp_session.FileTable(cache_bytes=100)
    key, handle, size = table.acquire(str(root / 'text'), netascii=True)
    assert handle.chunk(0, 100) == b'a\r\nb\r\0c\r\0\r\n'
    assert size == 11 == table.cached_bytes
    octet = table.acquire(str(root / 'text'))
    assert octet[1].chunk(0, 100) == b'a\nb\rc\r\n' and octet[2] == 7
    table.release(key)
    table.release(octet[0])
    assert table.cached_bytes == 0
    (root / 'big.txt').write_bytes(b'\n' * 60)
    with pytest.raises(OSError, match='too large for netascii'):
        table.acquire(str(root / 'big.txt'), netascii=True)


def test_garbage_from_a_clients_own_port_leaves_its_transfer_alone(
        service, root):
    """What a forger of the client's address and port could send to port
    69: a truncated ACK, a malformed request. The transfer goes on; only a
    new well-formed request replaces it."""
    with tftp_peer.Peer(_server(service)) as peer:
        peer.send(tftp_peer.rrq('big.bin'))
        opcode, first, source = peer.recv()
        assert opcode == 3
        peer.send(b'\0\x04\0')
        if not service.single_port:
            assert peer.expect_error() == 5  # no transfer on port 69
        # (single-port: it reaches the transfer, which ignores it)
        peer.send(b'\0\x01\xffbad\0octet\0')
        assert peer.expect_error() == 4
        assert peer.read_rest(first, source) == (
            root / 'big.bin').read_bytes()


class _Source:
    def __init__(self, data):
        self.data = data

    def chunk(self, offset, size):
        return self.data[offset:offset + size]


def _session(blksize, windowsize, size=4 * 1024 * 1024):
    from vmetal_ironic.dhcp_agent import tftp_packet
    from vmetal_ironic.dhcp_agent import tftp_session
    sent = []
    request = tftp_packet.parse_request(tftp_peer.rrq(
        'big.bin', blksize=blksize, windowsize=windowsize))
    transfer = tftp_packet.negotiate(request, size, 1,
                                     max_windowsize=windowsize)
    session = tftp_session.Session(('192.0.2.9', 4000), sent.append,
                                   _Source(bytes(size)), size, transfer,
                                   retries=3, now=0.0)
    session.start(0.0)
    return session, sent


@pytest.mark.parametrize('blksize, windowsize', [(65464, 64), (1468, 64),
                                                 (512, 4)])
def test_a_peer_that_never_acknowledges_data_gets_at_most_64_kib(
        blksize, windowsize):
    """Review finding 4, the session's part: RRQ and a (forged) ACK 0,
    then silence: the first window and every resend together stay within
    UNPROVEN_BYTES (one block always goes)."""
    from vmetal_ironic.dhcp_agent import tftp_session
    session, sent = _session(blksize, windowsize)
    assert sent[0][:2] == b'\0\x06'      # the OACK
    session.on_datagram(tftp_peer.ack(0), 0.1)
    now = 0.1
    while not session.done:
        now += 1.0
        session.on_deadline(now)
    data = sum(len(d) for d in sent[1:])
    assert data <= max(tftp_session.UNPROVEN_BYTES, blksize + 4), data
    assert session.result == tftp_session.TIMED_OUT
    assert not session.proven


def test_a_proven_peer_gets_whole_windows_and_one_block_per_timeout():
    session, sent = _session(1468, 8)
    session.on_datagram(tftp_peer.ack(0), 0.1)
    assert len(sent) == 1 + 8
    session.on_datagram(tftp_peer.ack(8), 0.2)
    assert session.proven
    assert len(sent) == 1 + 16           # the next whole window
    session.on_deadline(5.0)
    # A lost window costs one block: the oldest unacknowledged one.
    assert len(sent) == 1 + 17
    assert sent[-1][:4] == b'\0\x03\0\x09'


def test_file_table_keeps_a_files_datagrams_per_block_size(root):
    """Transfers of one file at one block size share its DATA datagrams;
    odd block sizes and the memory budget bound how many are kept, and
    giving the file back returns their memory."""
    from vmetal_ironic.dhcp_agent import tftp_session

    path = str(root / 'boot.efi')
    table = tftp_session.FileTable(cache_bytes=60000)
    key, _cached, size = table.acquire(path)
    frames = table.frames(key, 512)
    assert len(frames) == size // 512 + 1 and set(frames) == {None}
    assert table.acquire(path)[0] == key
    assert table.frames(key, 512) is frames
    charged = table.cached_bytes
    assert charged > 2 * size
    for blksize in (1468, 1000, 700):
        assert table.frames(key, blksize) is not None
    # A fifth block size gets none: the session builds its own.
    assert table.frames(key, 999) is None
    table.release(key)
    table.release(key)
    assert table.cached_bytes == 0
    # No budget left for datagrams: none kept, the file itself still is.
    small = tftp_session.FileTable(cache_bytes=size + 100)
    key, _cached, _size = small.acquire(path)
    assert small.frames(key, 512) is None
    assert small.cached_bytes == size
    # A file read with pread has none either.
    opened = tftp_session.FileTable(cache_bytes=10)
    key, _handle, _size = opened.acquire(path)
    assert opened.frames(key, 512) is None


def test_sessions_sharing_datagrams_send_the_same_bytes():
    """The second transfer of a file sends the datagrams the first built,
    byte for byte what a session building its own sends (the last one
    short, block numbers wrapping past 65535)."""
    from vmetal_ironic.dhcp_agent import tftp_packet
    from vmetal_ironic.dhcp_agent import tftp_session

    size = 70000 * 8 + 3
    data = os.urandom(size)
    request = tftp_packet.parse_request(tftp_peer.rrq('f', blksize=8))
    transfer = tftp_packet.negotiate(request, size, 1)
    frames = [None] * (size // 8 + 1)

    def download(frames, source):
        sent = []
        session = tftp_session.Session(('192.0.2.9', 4000), sent.append,
                                       source, size, transfer, retries=3,
                                       now=0.0, frames=frames)
        session.start(0.0)
        session.on_datagram(tftp_peer.ack(0), 0.0)
        block = 0
        while not session.done:
            block += 1
            session.on_datagram(tftp_peer.ack(block & 0xffff), 0.0)
        assert session.result == tftp_session.COMPLETED
        return sent[1:]

    class _Counting(_Source):
        reads = 0

        def chunk(self, offset, size):
            self.reads += 1
            return super().chunk(offset, size)

    own = download(None, _Source(data))
    first = download(frames, _Source(data))
    again = _Counting(data)
    second = download(frames, again)
    assert own == first == second
    assert again.reads == 0
    assert b''.join(d[4:] for d in own) == data
    assert own[65535][:4] == b'\0\x03\0\x00'
    assert len(own[-1]) == 4 + 3


def test_single_port_sessions_send_to_their_peer():
    from vmetal_ironic.dhcp_agent import tftp_packet
    from vmetal_ironic.dhcp_agent import tftp_session

    sent = []
    request = tftp_packet.parse_request(tftp_peer.rrq('f'))
    transfer = tftp_packet.negotiate(request, 10, 1)
    session = tftp_session.Session(
        ('192.0.2.9', 4000), lambda datagram, peer: sent.append(
            (datagram, peer)), _Source(bytes(10)), 10, transfer, retries=3,
        now=0.0, addressed=True)
    session.start(0.0)
    assert sent == [(b'\0\x03\0\x01' + bytes(10), ('192.0.2.9', 4000))]
