import contextlib
import http.client
import os
import socket
import threading
import time

import pytest
from oslo_config import cfg

from tests.unit.dhcp_agent import helpers
from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic.dhcp_agent import http_boot
from vmetal_ironic.dhcp_agent import metrics as metrics_mod


@pytest.fixture
def root(tmp_path):
    return helpers.boot_root(tmp_path, {'snponly.efi': os.urandom(300_000),
                                        'sub/a b.efi': b'spaced'})


@pytest.fixture
def service(root):
    service = http_boot.HttpBootService(str(root), '127.0.0.1', 0,
                                        max_connections=2,
                                        metrics=metrics_mod.Metrics())
    service.start()
    yield service
    service.stop()


def _get(service, path, method='GET'):
    connection = http.client.HTTPConnection('127.0.0.1', service.port,
                                            timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read(), response
    finally:
        connection.close()


def test_serves_files_under_the_root(service, root):
    status, body, response = _get(service, '/snponly.efi')
    assert status == 200
    assert body == (root / 'snponly.efi').read_bytes()
    assert response.getheader('Content-Length') == '300000'
    assert _get(service, '/sub/a%20b.efi?x=1')[:2] == (200, b'spaced')
    status, body, response = _get(service, '/snponly.efi', 'HEAD')
    assert (status, body) == (200, b'')
    assert response.getheader('Content-Length') == '300000'
    # Counted once the handler is done, which may be after the client read.
    give_up = time.monotonic() + 5
    while time.monotonic() < give_up:
        text = service.metrics.render()
        if 'vmetal_http_boot_requests_total{result="served"} 3.0' in text:
            break
        time.sleep(0.02)
    assert 'vmetal_http_boot_requests_total{result="served"} 3.0' in text
    assert 'vmetal_http_boot_bytes_total 300006.0' in text


@pytest.mark.parametrize('path', [
    '/', '/sub', '/sub/', '/escape', '/../secret', '/%2e%2e/secret',
    '/sub/../../secret', '//etc/passwd', '/missing.efi', '/a%00b',
])
def test_refuses_listings_traversal_and_escapes(service, path):
    status, body, _ = _get(service, path)
    assert status == 404
    assert b'secret' not in body


def test_only_get_and_head(service):
    for method in ('POST', 'PUT', 'DELETE'):
        assert _get(service, '/snponly.efi', method)[0] == 501


@contextlib.contextmanager
def _stalled_readers(service, root, count):
    """``count`` connections from 127.0.0.1, each asking a 48 MiB file and
    never reading it, so each holds a slot sending."""
    (root / 'large.bin').write_bytes(bytes(48 * 1024 * 1024))
    readers = []
    try:
        for _ in range(count):
            reader = socket.create_connection(('127.0.0.1', service.port))
            reader.sendall(b'GET /large.bin HTTP/1.1\r\nHost: x\r\n\r\n')
            readers.append(reader)
        time.sleep(0.5)
        yield
    finally:
        for sock in readers:
            sock.close()


def _wait_metric(service, sample, limit=5.0):
    give_up = time.monotonic() + limit
    while sample not in service.metrics.render():
        assert time.monotonic() < give_up, sample
        time.sleep(0.02)


def test_idle_connections_make_room_for_a_request(service):
    """Review finding 12: two connections that never send a request take
    both slots; the next one ends the oldest of them at once instead of
    waiting for a slot."""
    idle = [socket.create_connection(('127.0.0.1', service.port))
            for _ in range(2)]
    try:
        time.sleep(0.2)
        started = time.monotonic()
        assert _get(service, '/sub/a%20b.efi')[:2] == (200, b'spaced')
        assert time.monotonic() - started < 2
        idle[0].settimeout(2)
        assert idle[0].recv(10) == b''     # the evicted one is closed
    finally:
        for sock in idle:
            sock.close()
    _wait_metric(service, 'vmetal_tftp_limited_total{what="http_evicted"}')


def test_a_server_busy_sending_answers_503_at_once(service, root):
    """Both slots send a body to clients that do not read: a third
    connection is answered 503 at once, not queued."""
    with _stalled_readers(service, root, 2):
        started = time.monotonic()
        assert _get(service, '/sub/a%20b.efi')[:2] == (503, b'')
        assert time.monotonic() - started < 2
    _wait_metric(service, 'vmetal_tftp_limited_total{what="http_busy"}')


def test_one_address_holds_at_most_its_share(root):
    service = http_boot.HttpBootService(str(root), '127.0.0.1', 0,
                                        max_connections=8,
                                        max_connections_per_address=2,
                                        metrics=metrics_mod.Metrics())
    service.start()
    try:
        with _stalled_readers(service, root, 2):
            # Its two connections are busy; other addresses are not
            # limited.
            assert _get(service, '/sub/a%20b.efi')[0] == 503
    finally:
        service.stop()


def test_stop_ends_the_connections_and_waits_for_their_handlers(root):
    """A handler blocked sending to a client that does not read (up to
    10 s) and one waiting for a request head both end, and have logged
    what they log, before stop() returns."""
    before = set(threading.enumerate())
    service = http_boot.HttpBootService(str(root), '127.0.0.1', 0,
                                        metrics=metrics_mod.Metrics())
    service.start()
    idle = socket.create_connection(('127.0.0.1', service.port))
    try:
        with _stalled_readers(service, root, 1):
            started = time.monotonic()
            service.stop()
            assert time.monotonic() - started < 2.5
            assert set(threading.enumerate()) - before == set()
    finally:
        idle.close()


def test_a_trickled_request_head_is_cut_at_its_deadline(service,
                                                        monkeypatch):
    """A client sending one header byte at a time, each within the idle
    timeout, is closed once the head deadline passes."""
    monkeypatch.setattr(http_boot, '_HEAD_DEADLINE', 1.0)
    slow = socket.create_connection(('127.0.0.1', service.port))
    try:
        slow.sendall(b'GET /snponly.efi HTTP/1.1\r\n')
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5:
            try:
                slow.sendall(b'X')
            except OSError:
                closed = True
                break
            slow.settimeout(0.3)
            try:
                if slow.recv(100) == b'':
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed, 'the trickling connection is still open'
        assert time.monotonic() - started < 3
    finally:
        slow.close()
    _wait_metric(service, 'vmetal_tftp_limited_total{what="http_deadline"}')


def test_agent_url():
    conf = cfg.ConfigOpts()
    vmetal_conf.tftp.register_opts(conf)
    conf([])
    assert http_boot.agent_url(conf, '192.0.2.1') is None
    conf.set_override('http_port', 8069, group='vmetal_tftp')
    assert (http_boot.agent_url(conf, '192.0.2.1')
            == 'http://192.0.2.1:8069/snponly.efi')
    conf.set_override('address', '192.0.2.5', group='vmetal_tftp')
    conf.set_override('http_boot_file', 'x64/ipxe.efi', group='vmetal_tftp')
    assert (http_boot.agent_url(conf, '192.0.2.1')
            == 'http://192.0.2.5:8069/x64/ipxe.efi')
