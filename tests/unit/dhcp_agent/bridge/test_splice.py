"""splice between real TCP sockets over loopback."""

import asyncio
import os
import socket
import threading
import time

import pytest

from vmetal_ironic.dhcp_agent.bridge import splice

pytestmark = pytest.mark.skipif(not splice.available(),
                                reason='no os.splice')


def _pair():
    """``(ours, theirs)``: two ends of a loopback TCP connection."""
    with socket.create_server(('127.0.0.1', 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    ours.setblocking(False)
    return ours, theirs


def _relay(count, feed, idle_timeout=5.0):
    """Relay ``count`` bytes that ``feed(sender, finished)`` sends (in a
    thread; ``finished`` is set once the relay returned);
    :returns: ``(result or exception, bytes the receiver got, what was
    left unread at the source)``."""
    source, sender = _pair()
    target, receiver = _pair()
    got = bytearray()
    finished = threading.Event()

    def receive():
        while chunk := receiver.recv(1 << 20):
            got.extend(chunk)

    threads = [threading.Thread(target=feed, args=(sender, finished)),
               threading.Thread(target=receive)]
    for thread in threads:
        thread.start()
    try:
        result = asyncio.run(splice.relay(source.fileno(), target.fileno(),
                                          count, idle_timeout))
    except Exception as exc:
        result = exc
    finally:
        finished.set()
        target.close()
        threads[1].join(10)
        threads[0].join(10)
    source.setblocking(True)
    source.settimeout(0.5)
    try:
        left = source.recv(1 << 20)
    except TimeoutError:
        left = b''
    for sock in (source, sender, receiver):
        sock.close()
    return result, bytes(got), left


def test_moves_exactly_the_length_and_no_more():
    body = os.urandom(3 * 1048576 + 12345)

    def feed(sender, _finished):
        sender.sendall(body + b'NEXT')
        sender.shutdown(socket.SHUT_WR)

    result, got, left = _relay(len(body), feed)
    assert result == len(body)
    assert got == body
    # What followed the body is still the source's, unread.
    assert left == b'NEXT'


def test_a_source_closing_early_is_a_short_body():
    def feed(sender, _finished):
        sender.sendall(b'x' * 1000)
        sender.close()

    result, got, _left = _relay(5000, feed)
    assert isinstance(result, splice.ShortBody)
    assert got == b'x' * 1000


def test_a_silent_source_times_out():
    def feed(sender, finished):
        sender.sendall(b'y' * 10)
        finished.wait(10)

    result, got, _left = _relay(100, feed, idle_timeout=0.3)
    assert isinstance(result, TimeoutError)
    assert got == b'y' * 10


def test_a_client_that_stops_reading_holds_the_source_back():
    """Bounded memory: while the target takes nothing, the relay takes
    no more from the source than its pipe and the sockets hold, and
    gives up after the idle time."""
    source, sender = _pair()
    target, receiver = _pair()
    sent = [0]

    def feed():
        sender.settimeout(1.0)
        try:
            while True:
                sent[0] += sender.send(b'z' * 65536)
        except OSError:
            pass

    thread = threading.Thread(target=feed)
    thread.start()
    try:
        with pytest.raises(TimeoutError):
            asyncio.run(splice.relay(source.fileno(), target.fileno(),
                                     1 << 30, 0.5))
    finally:
        thread.join(10)
        for sock in (source, sender, target, receiver):
            sock.close()
    # A few socket buffers and one pipe, never the gigabyte asked for.
    assert sent[0] < 64 * 1048576


@pytest.fixture(params=[0, 2], ids=['loop', 'threads'])
def sender(request):
    """``None`` (turns on the event loop) or a :class:`splice.Sender`."""
    if not request.param:
        yield None
        return
    sender = splice.Sender(request.param)
    yield sender
    sender.close()


def _send_file(path, offset, count, read=True, idle_timeout=5.0,
               sender=None):
    """``send_file`` of ``path`` to a loopback socket whose other end
    reads everything (or nothing); :returns: ``(result or exception,
    bytes received)``."""
    target, receiver = _pair()
    got = bytearray()

    def receive():
        while chunk := receiver.recv(1 << 20):
            got.extend(chunk)

    thread = threading.Thread(target=receive)
    if read:
        thread.start()
    fd = os.open(path, os.O_RDONLY)
    try:
        result = asyncio.run(splice.send_file(fd, target.fileno(), offset,
                                              count, idle_timeout, sender))
    except Exception as exc:
        result = exc
    finally:
        os.close(fd)
        target.close()
        if read:
            thread.join(10)
        receiver.close()
    return result, bytes(got)


def test_send_file_sends_the_range_past_several_turns(tmp_path, sender):
    data = os.urandom(3 * splice.TURN + 12345)
    path = tmp_path / 'copy'
    path.write_bytes(data)
    result, got = _send_file(path, 1000, len(data) - 2000, sender=sender)
    assert result == len(data) - 2000
    assert got == data[1000:-1000]


def test_send_file_of_a_short_file_is_short_body(tmp_path, sender):
    path = tmp_path / 'copy'
    path.write_bytes(b'x' * 1000)
    result, got = _send_file(path, 0, 2000, sender=sender)
    assert isinstance(result, splice.ShortBody)
    assert got == b'x' * 1000


def test_send_file_to_a_client_taking_nothing_times_out(tmp_path, sender):
    path = tmp_path / 'copy'
    path.write_bytes(os.urandom(64 * 2**20))
    result, _got = _send_file(path, 0, 64 * 2**20, read=False,
                              idle_timeout=0.5, sender=sender)
    assert isinstance(result, TimeoutError)


def test_a_client_taking_nothing_holds_no_sending_thread(tmp_path):
    """With one thread, a client that stopped reading (holding that
    thread until its idle timeout) does not stop another client's
    download: with no thread free, it is sent from the loop."""
    data = os.urandom(32 * 2**20)
    path = tmp_path / 'copy'
    path.write_bytes(data)
    sender = splice.Sender(1)
    stuck, stuck_peer = _pair()
    fast, fast_peer = _pair()
    got = bytearray()

    def receive():
        while chunk := fast_peer.recv(1 << 20):
            got.extend(chunk)

    async def both():
        fd = os.open(path, os.O_RDONLY)
        try:
            blocked = asyncio.ensure_future(splice.send_file(
                fd, stuck.fileno(), 0, len(data), 3.0, sender))
            await asyncio.sleep(0.2)
            moved = await splice.send_file(fd, fast.fileno(), 0, len(data),
                                           3.0, sender)
            finished_first = not blocked.done()
            with pytest.raises(TimeoutError):
                await blocked
            return moved, finished_first
        finally:
            os.close(fd)

    thread = threading.Thread(target=receive)
    thread.start()
    try:
        moved, finished_first = asyncio.run(both())
    finally:
        fast.close()
        thread.join(10)
        for sock in (stuck, stuck_peer, fast_peer):
            sock.close()
        sender.close()
    assert moved == len(data) and bytes(got) == data
    assert finished_first


class _HeldSend:
    """A sender whose one download is finished by the test: a
    cancellation that lands while a thread is inside ``sendfile`` cannot
    be timed for real, so this stands in for the thread (the
    interleaving is the point, not the sending)."""

    def __init__(self):
        self.future = None
        self.descriptors = None

    def send(self, target, source, offset, end, idle_timeout):
        self.descriptors = (target, source)
        self.future = asyncio.get_running_loop().create_future()
        return self.future


def _is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_cancelled_send_closes_nothing_under_a_running_thread(
        tmp_path):
    """The descriptors a thread sends with stay open until it is
    done, even when the download is cancelled meanwhile (an agent
    stopping): closed earlier, their numbers could be reused by another
    connection while the thread still writes to them."""
    path = tmp_path / 'copy'
    path.write_bytes(b'x' * 1000)
    target, peer = _pair()
    held = _HeldSend()

    async def scenario():
        fd = os.open(path, os.O_RDONLY)
        task = asyncio.ensure_future(splice.send_file(
            fd, target.fileno(), 0, 1000, 5.0, held))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        os.close(fd)
        open_while_running = [_is_open(d) for d in held.descriptors]
        held.future.set_result(1000)
        await asyncio.sleep(0)
        return open_while_running, [_is_open(d) for d in held.descriptors]

    try:
        during, after = asyncio.run(scenario())
    finally:
        target.close()
        peer.close()
    assert during == [True, True]
    assert after == [False, False]


def test_a_cancelled_send_wakes_its_thread(tmp_path):
    """Cancelling a download whose client stopped reading (an agent
    stopping) frees its thread at once, not after the idle timeout, and
    closes its descriptors once the thread let go of them."""
    path = tmp_path / 'copy'
    path.write_bytes(os.urandom(64 * 2**20))
    sender = splice.Sender(1)
    target, peer = _pair()
    opened = set(os.listdir('/proc/self/fd'))

    async def scenario():
        fd = os.open(path, os.O_RDONLY)
        try:
            task = asyncio.ensure_future(splice.send_file(
                fd, target.fileno(), 0, 64 * 2**20, 30.0, sender))
            await asyncio.sleep(0.3)
            busy = sender.free
            task.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            while not sender.free and time.monotonic() - started < 5:
                await asyncio.sleep(0.01)
            return busy, time.monotonic() - started
        finally:
            os.close(fd)

    try:
        busy, freed_after = asyncio.run(scenario())
        left = set(os.listdir('/proc/self/fd')) - opened
    finally:
        target.close()
        peer.close()
        sender.close()
    assert busy == 0
    assert freed_after < 2.0
    assert not left
