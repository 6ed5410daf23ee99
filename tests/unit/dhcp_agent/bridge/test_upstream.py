import ssl

import pytest

from vmetal_ironic.dhcp_agent.bridge import heartbeat
from vmetal_ironic.dhcp_agent.bridge import upstream


def test_from_url():
    up = upstream.from_url('x', 'http://ironic.svc:6180/httpboot/')
    assert (up.scheme, up.host, up.port, up.base) == (
        'http', 'ironic.svc', 6180, '/httpboot')
    assert up.target('/boot.ipxe') == '/httpboot/boot.ipxe'
    assert up.authority == 'ironic.svc:6180' and up.tls is None
    tls = upstream.from_url('x', 'https://ironic.svc')
    assert tls.port == 443 and tls.authority == 'ironic.svc'
    assert tls.tls.verify_mode == ssl.CERT_REQUIRED
    assert tls.tls.check_hostname


@pytest.mark.parametrize('url', [
    'ftp://ironic', 'http://', 'http://ironic/?q=1', 'http://u@ironic/',
    'http://ironic:99999/', 'ironic:6385'])
def test_bad_urls_name_the_option(url):
    with pytest.raises(upstream.UpstreamError, match='opt'):
        upstream.from_url('opt', url)


def test_missing_ca_file_is_named(tmp_path):
    with pytest.raises(upstream.UpstreamError, match='ca_file'):
        upstream.from_url('x', 'https://ironic', str(tmp_path / 'nope'))


def test_ramdisk_upstream():
    up = upstream.ramdisk('198.51.100.20', 9999, heartbeat.Ramdisk('http'))
    assert (up.scheme, up.host, up.port, up.tls) == (
        'http', '198.51.100.20', 9999, None)


def test_plain_upstreams_get_a_socket_to_splice_from():
    """http: a socket no transport owns (the body can be spliced), found
    by name as well as by address; a refused port is an OSError."""
    import asyncio
    import socket

    async def connect(url):
        link = await upstream.from_url('x', url).connect(5)
        try:
            return link.fileno() is not None
        finally:
            link.close()

    with socket.create_server(('127.0.0.1', 0)) as listener:
        port = listener.getsockname()[1]
        assert asyncio.run(connect(f'http://127.0.0.1:{port}'))
        assert asyncio.run(connect(f'http://localhost:{port}'))
    with pytest.raises(OSError):
        asyncio.run(connect(f'http://127.0.0.1:{port}'))
