import ipaddress

import pytest

from vmetal_ironic.dhcp_agent.bridge import routes

RESERVED = frozenset({ipaddress.IPv4Address('198.51.100.20').packed})


@pytest.mark.parametrize('method,target', [
    ('GET', '/boot.ipxe'), ('HEAD', '/images/ipa.initramfs'),
    ('GET', '/lab-images/image.qcow2?x=1'), ('GET', '/a%20b')])
def test_http_root_forwards_get_and_head(method, target):
    route = routes.http_root(method, target)
    assert not route.refused and route.path == target


@pytest.mark.parametrize('method,target,reason', [
    ('GET', 'http://203.0.113.9/x', routes.NOT_ORIGIN_FORM),
    ('CONNECT', '203.0.113.9:443', routes.NOT_ORIGIN_FORM),
    ('OPTIONS', '*', routes.NOT_ORIGIN_FORM),
    ('GET', '//evil/x', routes.NOT_ORIGIN_FORM),
    ('GET', '/../etc/passwd', routes.NOT_ORIGIN_FORM),
    ('GET', '/a/%2e%2e/b', routes.NOT_ORIGIN_FORM),
    ('GET', '/a%2Fb', routes.NOT_ORIGIN_FORM),
    ('GET', '/a\\b', routes.NOT_ORIGIN_FORM),
    ('GET', '/a#b', routes.NOT_ORIGIN_FORM),
    ('POST', '/boot.ipxe', routes.METHOD),
    ('PUT', '/boot.ipxe', routes.METHOD)])
def test_http_root_refuses(method, target, reason):
    assert routes.http_root(method, target).reason == reason


@pytest.mark.parametrize('method,target', [
    ('GET', '/'), ('GET', '/v1'), ('GET', '/v1/'),
    ('GET', '/v1/lookup?addresses=52:54:00:12:34:56'),
    ('POST', '/v1/continue_inspection')])
def test_api_forwards_the_ramdisks_calls(method, target):
    route = routes.ironic_api(method, target)
    assert route.path == target and not route.heartbeat


def test_api_marks_heartbeats():
    route = routes.ironic_api(
        'POST', '/v1/heartbeat/1be26c0b-03f2-4d2e-ae87-c02d7f33c123')
    assert route.heartbeat and not route.refused
    assert routes.ironic_api('POST', '/v1/heartbeat/ns~host').heartbeat


@pytest.mark.parametrize('method,target,reason', [
    ('GET', '/v1/nodes', routes.PATH),
    ('PATCH', '/v1/nodes/x', routes.PATH),
    ('DELETE', '/v1/lookup', routes.METHOD),
    ('POST', '/v1/lookup', routes.METHOD),
    ('GET', '/v1/heartbeat/x', routes.METHOD),
    ('POST', '/v1/heartbeat/a/b', routes.PATH),
    ('POST', '/v1/heartbeat/', routes.PATH),
    ('GET', '/v1/continue_inspection', routes.METHOD),
    ('GET', 'http://ironic:6385/v1/nodes', routes.NOT_ORIGIN_FORM)])
def test_api_refuses_everything_else(method, target, reason):
    assert routes.ironic_api(method, target).reason == reason


def test_callback_reaches_a_reserved_ramdisk():
    route = routes.callback('POST', '/198.51.100.20/v1/commands/?wait=true',
                            RESERVED)
    assert route.address == '198.51.100.20'
    assert route.path == '/v1/commands/?wait=true'
    assert routes.callback('GET', '/198.51.100.20/v1', RESERVED).path == \
        '/v1'


@pytest.mark.parametrize('method,target,reason', [
    ('GET', '/198.51.100.21/v1/commands/', routes.NOT_RESERVED),
    ('GET', '/198.51.100.20/metrics', routes.PATH),
    ('GET', '/198.51.100.20/v10', routes.PATH),
    ('GET', '/198.051.100.20/v1/commands/', routes.PATH),
    ('GET', '/ironic.svc/v1/commands/', routes.PATH),
    ('GET', '/198.51.100.20', routes.PATH),
    ('DELETE', '/198.51.100.20/v1/commands/', routes.METHOD),
    ('GET', 'http://198.51.100.20:9999/v1/', routes.NOT_ORIGIN_FORM),
    ('CONNECT', '198.51.100.20:9999', routes.NOT_ORIGIN_FORM)])
def test_callback_refuses(method, target, reason):
    assert routes.callback(method, target, RESERVED).reason == reason
