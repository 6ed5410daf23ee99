"""splice between real TCP sockets over loopback."""

import asyncio
import os
import socket
import threading

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
