import http.client
import os
import socket
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


def test_connections_are_bounded(service):
    # Two idle connections take both slots; a third waits for one.
    idle = [socket.create_connection(('127.0.0.1', service.port))
            for _ in range(2)]
    try:
        time.sleep(0.2)
        waiting = http.client.HTTPConnection('127.0.0.1', service.port,
                                             timeout=10)
        waiting.request('GET', '/sub/a%20b.efi')
        started = time.monotonic()
        idle[0].close()
        response = waiting.getresponse()
        assert (response.status, response.read()) == (200, b'spaced')
        assert time.monotonic() - started < 5
        waiting.close()
    finally:
        for sock in idle:
            sock.close()


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
