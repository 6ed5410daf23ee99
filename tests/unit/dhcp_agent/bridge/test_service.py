"""The bridge over loopback against real HTTP servers (stdlib), each
listener and each refusal; 127.0.0.1 plays the provisioning side,
127.0.0.2 the cluster side, 127.0.0.3 a ramdisk."""

import concurrent.futures
import dataclasses
import functools
import http.client
import http.server
import ipaddress
import json
import os
import socket
import threading
import time

import pytest

from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent import settings
from vmetal_ironic.dhcp_agent.bridge import config
from vmetal_ironic.dhcp_agent.bridge import exchange
from vmetal_ironic.dhcp_agent.bridge import service as service_mod
from vmetal_ironic.dhcp_agent.bridge import upstream
from vmetal_ironic.dhcp_agent.bridge import urls
from vmetal_ironic.lab import observe
from vmetal_ironic.lab import tls

BODY = bytes(range(256)) * 12288   # 3 MiB
RAMDISK = '127.0.0.3'


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.do_GET(body=False)

    def do_GET(self, body=True):
        self.server.seen.append((self.command, self.path,
                                 {k.lower(): v for k, v in
                                  self.headers.items()}))
        if self.path.endswith('/slow'):
            time.sleep(3)
        data = BODY
        status = 200
        if self.headers.get('Range') == 'bytes=10-19':
            data, status = BODY[10:20], 206
        if self.path.endswith('/json'):
            data = json.dumps({'path': self.path}).encode()
        if self.path.endswith('/short'):
            # Announces the whole body, sends a third, and hangs up.
            self.send_response(200)
            self.send_header('Content-Length', str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:len(BODY) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path.endswith('/script'):
            data = (f'#!ipxe\nkernel {self.server.url}/k ipa-api-url='
                    f'{self.server.url}/api\n').encode()
        self.send_response(status)
        self.send_header('Content-Length', str(len(data)))
        if status == 206:
            self.send_header('Content-Range', f'bytes 10-19/{len(BODY)}')
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_POST(self):
        data = self.rfile.read(int(self.headers['Content-Length']))
        self.server.seen.append(('POST', self.path, data))
        self.send_response(202)
        self.send_header('Content-Length', '0')
        self.end_headers()


def _server(address):
    server = http.server.ThreadingHTTPServer((address, 0), _Handler)
    server.daemon_threads = True
    server.seen = []
    server.url = f'http://{address}:{server.server_address[1]}'
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def upstreams():
    servers = {'ironic': _server('127.0.0.1'), 'ramdisk': _server(RAMDISK)}
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


def _config(upstreams, **limits):
    ironic = upstreams['ironic'].server_address[1]
    return config.BridgeConfig(
        provisioning_address='127.0.0.1', http_port=0, api_port=0,
        callback_address='127.0.0.2', callback_port=0,
        http_upstream=upstream.from_url(
            'http', f'http://127.0.0.1:{ironic}/root'),
        api_upstream=upstream.from_url('api', f'http://127.0.0.1:{ironic}'),
        http_advertise_url='http://127.0.0.1:8080',
        api_advertise_url='http://127.0.0.1:6385',
        callback_advertise_url='http://cb.svc:8081',
        ipa_port=upstreams['ramdisk'].server_address[1],
        max_connections=8, max_connections_per_client=3,
        limits=exchange.Limits(**{'header_timeout': 1.0,
                                  'idle_timeout': 2.0,
                                  'upstream_timeout': 1.5, **limits}))


@pytest.fixture
def reserved():
    return {ipaddress.IPv4Address(RAMDISK).packed}


@pytest.fixture
def bridge(upstreams, reserved):
    service = service_mod.BridgeService(_config(upstreams),
                                        lambda: reserved,
                                        metrics=metrics_mod.Metrics())
    service.start()
    yield service
    service.stop()


def _request(bridge, listener, method, path, body=None, headers=None,
             source=None):
    host = '127.0.0.2' if listener == 'callback' else '127.0.0.1'
    connection = http.client.HTTPConnection(
        host, bridge.ports[listener], timeout=10,
        source_address=(source, 0) if source else None)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response
    finally:
        connection.close()


def _raw(bridge, listener, data, read=True):
    with socket.create_connection(('127.0.0.1', bridge.ports[listener]),
                                  timeout=10) as sock:
        sock.sendall(data)
        return sock.recv(65536) if read else b''


def _refused(bridge, listener, reason):
    return bridge.metrics.bridge_refused.labels(listener, reason)._value.get()


def test_http_root_streams_files_heads_and_ranges(bridge, upstreams):
    status, body, _ = _request(bridge, 'http', 'GET', '/images/ipa')
    assert status == 200 and body == BODY
    status, body, response = _request(bridge, 'http', 'HEAD', '/images/ipa')
    assert (status, body) == (200, b'')
    assert response.getheader('Content-Length') == str(len(BODY))
    status, body, response = _request(bridge, 'http', 'GET', '/images/ipa',
                                      headers={'Range': 'bytes=10-19'})
    assert (status, body) == (206, BODY[10:20])
    assert response.getheader('Content-Range') == 'bytes 10-19/3145728'
    # The base path of ironic_http_url is prepended; Host is Ironic's.
    _method, path, headers = upstreams['ironic'].seen[0]
    assert path == '/root/images/ipa'
    assert headers['host'] == \
        f'127.0.0.1:{upstreams["ironic"].server_address[1]}'
    # Counted once the response's end is written: wait for it.
    observe.wait_for(lambda: bridge.metrics.bridge_bytes.labels(
        'http')._value.get() == len(BODY) + 10, timeout=5,
        what='bytes counted')


def test_a_body_cut_upstream_is_cut_for_the_client(bridge):
    """The kernel-side copy stops where Ironic's body stops: the client's
    copy is short against its Content-Length, never a whole-looking
    file."""
    with pytest.raises(http.client.IncompleteRead) as caught:
        _request(bridge, 'http', 'GET', '/images/short')
    assert len(caught.value.partial) == len(BODY) // 3
    observe.wait_for(lambda: _refused(bridge, 'http', 'cut_off') == 1,
                     timeout=5, what='cut counted')


def test_api_forwards_lookup_and_refuses_the_rest(bridge, upstreams):
    status, _body, _ = _request(bridge, 'api', 'GET',
                                '/v1/lookup?addresses=aa/json')
    assert status == 200
    for method, path in (('GET', '/v1/nodes'), ('DELETE', '/v1/lookup'),
                         ('POST', '/v1/nodes/x/vendor_passthru')):
        status, _body, _ = _request(bridge, 'api', method, path)
        assert status == 403, (method, path)
    assert _refused(bridge, 'api', 'path') == 2
    assert _refused(bridge, 'api', 'method') == 1
    assert [s[1] for s in upstreams['ironic'].seen] == \
        ['/v1/lookup?addresses=aa/json']


def test_absolute_form_and_connect_are_refused(bridge, upstreams):
    answer = _raw(bridge, 'http', b'GET http://203.0.113.9/ HTTP/1.1\r\n'
                  b'Host: 203.0.113.9\r\n\r\n')
    assert answer.startswith(b'HTTP/1.1 403')
    answer = _raw(bridge, 'api', b'CONNECT 203.0.113.9:443 HTTP/1.1\r\n'
                  b'Host: 203.0.113.9:443\r\n\r\n')
    assert answer.startswith(b'HTTP/1.1 403')
    assert _refused(bridge, 'http', 'not_origin_form') == 1
    assert _refused(bridge, 'api', 'not_origin_form') == 1
    assert upstreams['ironic'].seen == []


def test_oversized_head_is_refused(bridge):
    answer = _raw(bridge, 'http', b'GET / HTTP/1.1\r\nHost: x\r\nX-Big: '
                  + b'a' * 20000 + b'\r\n\r\n')
    assert answer.startswith(b'HTTP/1.1 431')


def test_heartbeat_points_the_conductor_at_the_agent(bridge, upstreams):
    forged = json.dumps({'callback_url': 'http://203.0.113.66:'
                         f'{bridge.config.ipa_port}',
                         'agent_token': 'tok'}).encode()
    status, _, _ = _request(bridge, 'api', 'POST', '/v1/heartbeat/node-1',
                            body=forged, source=RAMDISK,
                            headers={'Content-Type': 'application/json'})
    assert status == 202
    _, path, sent = upstreams['ironic'].seen[0]
    assert path == '/v1/heartbeat/node-1'
    assert json.loads(sent) == {'callback_url': f'http://cb.svc:8081/'
                                f'{RAMDISK}', 'agent_token': 'tok'}
    # The conductor's call through the callback proxy reaches the ramdisk.
    status, body, _ = _request(bridge, 'callback', 'GET',
                               f'/{RAMDISK}/v1/commands/json')
    assert status == 200 and json.loads(body) == {'path':
                                                  '/v1/commands/json'}


def test_bad_heartbeat_is_refused_not_forwarded(bridge, upstreams):
    status, body, _ = _request(
        bridge, 'api', 'POST', '/v1/heartbeat/node-1',
        body=json.dumps({'callback_url': 'http://x:22'}).encode())
    assert status == 400 and b'ipa_port' in body
    assert upstreams['ironic'].seen == []


def test_callback_only_toward_reserved_ramdisks(bridge, upstreams,
                                                reserved):
    status, body, _ = _request(bridge, 'callback', 'GET',
                               f'/{RAMDISK}/v1/commands/')
    assert status == 502 and b'no heartbeat' in body
    status, _, _ = _request(bridge, 'callback', 'GET',
                            '/127.0.0.1/v1/commands/')
    assert status == 403
    assert _refused(bridge, 'callback', 'not_reserved') == 1
    # A heartbeat from an address without a reservation is rewritten but
    # teaches nothing.
    reserved.clear()
    _request(bridge, 'api', 'POST', '/v1/heartbeat/n', source=RAMDISK,
             body=json.dumps({'callback_url': 'http://x:'
                              f'{bridge.config.ipa_port}'}).encode())
    assert bridge.ramdisks == {}
    status, _, _ = _request(bridge, 'callback', 'GET',
                            f'/{RAMDISK}/v1/commands/')
    assert status == 403
    assert upstreams['ramdisk'].seen == []


def test_callback_toward_a_ramdisk_on_a_lease(upstreams, reserved):
    """A ramdisk inspecting on an address of the dynamic or shared range
    (no reservation) is reachable while the lease runs, on ipa_port only;
    once the lease ends, or for an address never leased, the way is
    shut."""
    leased_address = '127.0.0.4'
    port = upstreams['ramdisk'].server_address[1]
    on_lease = http.server.ThreadingHTTPServer((leased_address, port),
                                               _Handler)
    on_lease.daemon_threads = True
    on_lease.seen = []
    threading.Thread(target=on_lease.serve_forever, daemon=True).start()
    leases = {ipaddress.IPv4Address(leased_address).packed}
    service = service_mod.BridgeService(
        _config(upstreams), lambda: reserved, metrics=metrics_mod.Metrics(),
        leased=leases.__contains__)
    service.start()
    try:
        _request(service, 'api', 'POST', '/v1/heartbeat/n',
                 source=leased_address,
                 body=json.dumps({'callback_url': f'http://x:{port}'}
                                 ).encode())
        status, body, _ = _request(service, 'callback', 'GET',
                                   f'/{leased_address}/v1/commands/json')
        assert (status, json.loads(body)) == (
            200, {'path': '/v1/commands/json'})
        # Never another port of the leased host, nor an address of the
        # range nobody holds.
        status, _, _ = _request(service, 'callback', 'GET',
                                f'/{leased_address}:22/v1/')
        assert status == 403
        status, _, _ = _request(service, 'callback', 'GET',
                                '/127.0.0.5/v1/commands/json')
        assert status == 403
        # The lease ends: refused at once, though the ramdisk was known.
        leases.clear()
        status, _, _ = _request(service, 'callback', 'GET',
                                f'/{leased_address}/v1/commands/json')
        assert status == 403
        assert _refused(service, 'callback', 'not_reserved') == 2
        assert _refused(service, 'callback', 'path') == 1
        assert len(on_lease.seen) == 1
    finally:
        service.stop()
        on_lease.shutdown()
        on_lease.server_close()


def test_silent_client_is_cut_off_and_frees_its_slot(bridge):
    socks = [socket.create_connection(('127.0.0.1', bridge.ports['http']))
             for _ in range(3)]
    try:
        # The client's share is taken: the next one is told so.
        answer = _raw(bridge, 'http', b'')
        assert answer.startswith(b'HTTP/1.1 503')
        assert _refused(bridge, 'http', 'client_limit') == 1
        socks[0].settimeout(5)
        started = time.monotonic()
        assert socks[0].recv(100) == b''   # closed after header_timeout
        assert time.monotonic() - started < 3
    finally:
        for sock in socks:
            sock.close()
    observe.wait_for(lambda: _refused(bridge, 'http', 'cut_off') == 3,
                     timeout=5, what='three connections cut off')
    status, _, _ = _request(bridge, 'http', 'GET', '/x/json')
    assert status == 200


def test_ironic_down_is_502_and_one_warning(upstreams, reserved):
    dead = socket.socket()
    dead.bind(('127.0.0.1', 0))
    port = dead.getsockname()[1]
    dead.close()     # nothing listens there now
    cfg = _config(upstreams)
    down = upstream.from_url('http', f'http://127.0.0.1:{port}')
    service = service_mod.BridgeService(
        config.BridgeConfig(**{**cfg.__dict__, 'http_upstream': down}),
        lambda: reserved, metrics=metrics_mod.Metrics())
    service.start()
    try:
        for _ in range(3):
            status, _, _ = _request(service, 'http', 'GET', '/boot.ipxe')
            assert status == 502
        assert service.observer.failing == {down.name}
        assert service.metrics.bridge_upstream_errors.labels(
            'http', 'unreachable')._value.get() == 3
    finally:
        service.stop()


def test_slow_ironic_is_504(bridge):
    started = time.monotonic()
    status, _, _ = _request(bridge, 'http', 'GET', '/x/slow')
    assert status == 504
    assert time.monotonic() - started < 3
    assert _refused(bridge, 'http', 'upstream_timeout') == 1


def _connections(service, listener, scheme):
    return service.metrics.bridge_upstream_connections.labels(
        listener, scheme)._value.get()


def test_plain_upstream_connections_are_counted_as_http(bridge):
    status, _body, _ = _request(bridge, 'api', 'GET', '/v1/lookup?a=/json')
    assert status == 200
    assert _connections(bridge, 'api', 'http') == 1
    assert _connections(bridge, 'api', 'https') == 0


def _tls_context(tmp_path, address='127.0.0.1'):
    """A server context with a certificate for ``address`` from a CA of
    the test's own; :returns: ``(context, CA file)``."""
    import ssl
    issued = tls.issue(tmp_path, [address])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert_file, issued.key_file)
    return context, issued.ca_file


def test_ironic_api_over_tls_checked_against_the_ca_file(tmp_path, upstreams,
                                                         reserved):
    context, ca_file = _tls_context(tmp_path)
    tls_server = _server('127.0.0.1')
    tls_server.socket = context.wrap_socket(tls_server.socket,
                                            server_side=True)
    port = tls_server.server_address[1]
    cfg = _config(upstreams)
    try:
        for ca, expected in ((str(ca_file), 200), (None, 502)):
            api = upstream.from_url('api', f'https://127.0.0.1:{port}', ca)
            service = service_mod.BridgeService(
                config.BridgeConfig(**{**cfg.__dict__, 'api_upstream': api}),
                lambda: reserved, metrics=metrics_mod.Metrics())
            service.start()
            try:
                status, body, _ = _request(service, 'api', 'GET',
                                           '/v1/lookup?a=/json')
                assert status == expected, body
                # A TLS connection is counted once its certificate was
                # checked: not when the CA refused it.
                assert _connections(service, 'api', 'https') == (
                    1 if expected == 200 else 0)
                assert _connections(service, 'api', 'http') == 0
            finally:
                service.stop()
        # Only the request the CA vouched for reached the server.
        assert [path for _m, path, _h in tls_server.seen] == [
            '/v1/lookup?a=/json']
    finally:
        tls_server.shutdown()
        tls_server.server_close()


def test_ironics_urls_are_translated_where_they_cross(upstreams, reserved):
    """iPXE scripts from the HTTP root and the conductor's commands carry
    Ironic's cluster URLs; the provisioning side gets the agent's."""
    ironic = upstreams['ironic'].url
    cfg = _config(upstreams)
    service = service_mod.BridgeService(
        config.BridgeConfig(**{**cfg.__dict__, 'translation': urls.Translation(
            ((ironic, 'http://198.51.100.1:8080'),))}),
        lambda: reserved, metrics=metrics_mod.Metrics())
    service.start()
    try:
        status, body, response = _request(service, 'http', 'GET',
                                          '/n/script')
        assert status == 200
        assert body == (b'#!ipxe\nkernel http://198.51.100.1:8080/k '
                        b'ipa-api-url=http://198.51.100.1:8080/api\n')
        assert response.getheader('Content-Length') == str(len(body))
        # Big files pass untouched (and unread).
        status, body, _ = _request(service, 'http', 'GET', '/images/ipa')
        assert body == BODY
        _request(service, 'api', 'POST', '/v1/heartbeat/n', source=RAMDISK,
                 body=json.dumps({'callback_url': 'http://x:'
                                  f'{service.config.ipa_port}'}).encode())
        command = json.dumps({'name': 'standby.prepare_image', 'params': {
            'image_info': {'urls': [f'{ironic}/agent_images/n']}}})
        status, _, _ = _request(service, 'callback', 'POST',
                                f'/{RAMDISK}/v1/commands/', body=command)
        assert status == 202
        _post, path, sent = upstreams['ramdisk'].seen[-1]
        assert path == '/v1/commands/'
        assert json.loads(sent)['params']['image_info']['urls'] == [
            'http://198.51.100.1:8080/agent_images/n']
    finally:
        service.stop()


def test_tls_ramdisk_is_checked_with_the_certificate_of_its_heartbeat(
        tmp_path, upstreams, reserved, bridge):
    """IPA with auto TLS: the conductor gets a plain URL on the agent, the
    agent talks TLS to the ramdisk and accepts only the certificate the
    ramdisk's own heartbeat carried."""
    context, ca_file = _tls_context(tmp_path, RAMDISK)
    ramdisk = upstreams['ramdisk']
    ramdisk.socket = context.wrap_socket(ramdisk.socket, server_side=True)
    port = bridge.config.ipa_port
    heartbeat = {'callback_url': f'https://{RAMDISK}:{port}',
                 'agent_verify_ca': ca_file.read_text()}
    status, _, _ = _request(bridge, 'api', 'POST', '/v1/heartbeat/n',
                            source=RAMDISK,
                            body=json.dumps(heartbeat).encode())
    assert status == 202
    sent = json.loads(upstreams['ironic'].seen[-1][2])
    assert sent == {'callback_url': f'http://cb.svc:8081/{RAMDISK}'}
    status, body, _ = _request(bridge, 'callback', 'GET',
                               f'/{RAMDISK}/v1/commands/json')
    assert (status, json.loads(body)) == (200, {'path': '/v1/commands/json'})
    # Another certificate in a later heartbeat: the ramdisk's real one no
    # longer matches, and the conductor's call is refused.
    (tmp_path / 'other').mkdir()
    _context, other_ca = _tls_context(tmp_path / 'other', RAMDISK)
    heartbeat['agent_verify_ca'] = other_ca.read_text()
    _request(bridge, 'api', 'POST', '/v1/heartbeat/n', source=RAMDISK,
             body=json.dumps(heartbeat).encode())
    status, _, _ = _request(bridge, 'callback', 'GET',
                            f'/{RAMDISK}/v1/commands/json')
    assert status == 502


def test_callback_listener_over_tls(tmp_path, upstreams, reserved):
    """With callback_cert_file the conductor is told an https URL and
    reaches the ramdisk only over TLS it can check against the agent's
    CA; bodies toward it are encrypted, never spliced around TLS."""
    import ssl
    server_context, ca_file = _tls_context(tmp_path, '127.0.0.2')
    cfg = _config(upstreams)
    service = service_mod.BridgeService(
        config.BridgeConfig(**{**cfg.__dict__,
                               'callback_tls': server_context,
                               'callback_advertise_url':
                                   'https://127.0.0.2:8081'}),
        lambda: reserved, metrics=metrics_mod.Metrics())
    service.start()
    port = service.ports['callback']

    def call(path, context):
        connection = http.client.HTTPSConnection('127.0.0.2', port,
                                                 timeout=10, context=context)
        try:
            connection.request('GET', path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    try:
        _request(service, 'api', 'POST', '/v1/heartbeat/n', source=RAMDISK,
                 body=json.dumps({'callback_url': 'http://x:'
                                  f'{cfg.ipa_port}'}).encode())
        sent = json.loads(upstreams['ironic'].seen[-1][2])
        assert sent['callback_url'] == f'https://127.0.0.2:8081/{RAMDISK}'
        trusting = ssl.create_default_context(cafile=str(ca_file))
        status, body = call(f'/{RAMDISK}/v1/commands/json', trusting)
        assert (status, json.loads(body)) == (
            200, {'path': '/v1/commands/json'})
        status, body = call(f'/{RAMDISK}/v1/big', trusting)
        assert (status, body) == (200, BODY)
        # Another CA's client refuses the agent; a plain client gets no
        # answer; neither reaches the ramdisk.
        seen = len(upstreams['ramdisk'].seen)
        (tmp_path / 'other').mkdir()
        _context, other_ca = _tls_context(tmp_path / 'other', '127.0.0.2')
        with pytest.raises(ssl.SSLCertVerificationError):
            call(f'/{RAMDISK}/v1/commands/json',
                 ssl.create_default_context(cafile=str(other_ca)))
        with pytest.raises((http.client.HTTPException, OSError)):
            _request(service, 'callback', 'GET',
                     f'/{RAMDISK}/v1/commands/json')
        assert len(upstreams['ramdisk'].seen) == seen
    finally:
        service.stop()


def test_callback_listener_takes_up_a_renewed_certificate(tmp_path, upstreams,
                                                          reserved):
    """The pair in a Secret-like volume is flipped to a new one: the next
    handshakes get it without a restart, a connection opened before keeps
    working, and a broken replacement leaves the new pair served."""
    import hashlib
    import socket
    import ssl

    pairs = [tls.issue(tmp_path / label, ['127.0.0.2'], label=label)
             for label in ('a', 'b')]
    volume = tmp_path / 'secret'
    cert_file, key_file = tls.secret_volume(
        volume, pairs[0].cert_file.read_bytes(),
        pairs[0].key_file.read_bytes())
    context = config.callback_tls(dataclasses.make_dataclass(
        'Group', ['callback_cert_file', 'callback_key_file'])(
            str(cert_file), str(key_file)))
    metrics = metrics_mod.Metrics()
    service = service_mod.BridgeService(
        config.BridgeConfig(**{**_config(upstreams).__dict__,
                               'callback_tls': context,
                               'callback_cert_file': str(cert_file),
                               'callback_key_file': str(key_file),
                               'callback_cert_check_interval': 0.1}),
        lambda: reserved, metrics=metrics)
    service.start()
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE

    def connect():
        return client.wrap_socket(socket.create_connection(
            ('127.0.0.2', service.ports['callback']), timeout=10))

    def served(connection):
        return hashlib.sha256(
            connection.getpeercert(binary_form=True)).hexdigest()

    def fingerprint(issued):
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(
            issued.cert_file.read_text())).hexdigest()

    def reloads(result):
        return metrics.bridge_callback_cert_reloads.labels(
            result)._value.get()

    def publish(cert_from, key_from, result):
        """Flip the volume; :returns: what a handshake gets once the
        check counted ``result``."""
        tls.secret_volume(volume, cert_from.cert_file.read_bytes(),
                          key_from.key_file.read_bytes())
        observe.wait_for(lambda: reloads(result) == 1, 5,
                         what=f'the new pair {result}')
        with connect() as after:
            return served(after)

    try:
        # The ramdisk's heartbeat teaches the agent where it listens.
        _request(service, 'api', 'POST', '/v1/heartbeat/n', source=RAMDISK,
                 body=json.dumps({'callback_url': 'http://x:'
                                  f'{service.config.ipa_port}'}).encode())
        before = connect()
        assert served(before) == fingerprint(pairs[0])
        assert publish(pairs[1], pairs[1], 'loaded') == \
            fingerprint(pairs[1])
        # Opened on the old pair, still served.
        with before:
            before.sendall(f'GET /{RAMDISK}/v1/commands/json HTTP/1.1\r\n'
                           'Host: x\r\nConnection: close\r\n\r\n'
                           .encode())
            assert before.recv(64).startswith(b'HTTP/1.1 200')
        assert publish(pairs[0], pairs[1], 'failed') == \
            fingerprint(pairs[1])
    finally:
        service.stop()


# -- local copies of the HTTP root ----------------------------------------

class _Root(http.server.SimpleHTTPRequestHandler):
    """Python's own static server (what the lab's Ironic HTTP root is):
    Last-Modified and If-Modified-Since, no ETag. ``/cut`` announces its
    length and a strong ETag, sends a third and hangs up."""

    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def send_head(self):
        self.server.seen.append((self.command, self.path,
                                 {k.lower(): v for k, v in
                                  self.headers.items()}))
        if 'If-Modified-Since' in self.headers:
            # A slow answer to the bridge's question, so that downloads
            # started together surely arrive while it is under way.
            time.sleep(self.server.slow_revalidation)
        if self.path.endswith('/cut'):
            self.send_response(200)
            self.send_header('Content-Length', str(len(BODY)))
            self.send_header('ETag', '"cut-1"')
            self.end_headers()
            self.wfile.write(BODY[:len(BODY) // 3])
            self.wfile.flush()
            self.close_connection = True
            return None
        return super().send_head()


@pytest.fixture
def root(tmp_path):
    directory = tmp_path / 'root'
    directory.mkdir()
    (directory / 'ipa').write_bytes(BODY)
    # Older than the second it is served in: a strong Last-Modified.
    os.utime(directory / 'ipa', (time.time() - 60, time.time() - 60))
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_Root, directory=directory))
    server.daemon_threads = True
    server.seen = []
    server.slow_revalidation = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield directory, server
    server.shutdown()
    server.server_close()


@pytest.fixture(params=[0, 2], ids=['sent-by-loop', 'sent-by-threads'])
def cached(request, tmp_path, upstreams, reserved, root):
    _directory, server = root
    cfg = dataclasses.replace(
        _config(upstreams), cache_dir=str(tmp_path / 'copies'),
        cache_max_bytes=8 * len(BODY), cache_send_threads=request.param,
        http_upstream=upstream.from_url(
            'http', f'http://127.0.0.1:{server.server_address[1]}'))
    service = service_mod.BridgeService(cfg, lambda: reserved,
                                        metrics=metrics_mod.Metrics())
    service.start()
    yield service
    service.stop()


def _cache_count(bridge, name, *labels):
    metric = getattr(bridge.metrics, f'bridge_cache_{name}')
    return (metric.labels(*labels) if labels else metric)._value.get()


def _copies(bridge):
    return sorted(p.name.split('-')[0]
                  for p in bridge.cache.directory.iterdir())


def _fill(bridge):
    """Download /ipa once and wait until its copy is published."""
    assert _request(bridge, 'http', 'GET', '/ipa')[1] == BODY
    observe.wait_for(lambda: _copies(bridge) == ['copy'], timeout=5,
                     what='copy published')


def test_a_copy_answers_after_ironic_says_not_modified(cached, root):
    _directory, server = root
    status, body, _ = _request(cached, 'http', 'GET', '/ipa',
                               headers={'Accept-Encoding': 'gzip',
                                        'X-Anything': 'from the client'})
    assert (status, body) == (200, BODY)
    observe.wait_for(lambda: _copies(cached) == ['copy'], timeout=5,
                     what='copy published')
    # Ironic was asked with the bridge's own headers only.
    _method, _path, headers = server.seen[0]
    assert 'x-anything' not in headers and 'accept-encoding' not in headers
    status, body, response = _request(cached, 'http', 'GET', '/ipa')
    assert (status, body) == (200, BODY)
    assert response.getheader('Accept-Ranges') == 'bytes'
    # The second time, conditionally, and Ironic said 304.
    assert 'if-modified-since' in server.seen[1][2]
    assert _cache_count(cached, 'requests', 'hit') == 1
    assert _cache_count(cached, 'fills', 'published') == 1
    status, body, response = _request(cached, 'http', 'GET', '/ipa',
                                      headers={'Range': 'bytes=10-19'})
    assert (status, body) == (206, BODY[10:20])
    assert response.getheader('Content-Range') == \
        f'bytes 10-19/{len(BODY)}'
    status, body, response = _request(cached, 'http', 'HEAD', '/ipa')
    assert (status, body) == (200, b'')
    assert response.getheader('Content-Length') == str(len(BODY))
    status, body, response = _request(cached, 'http', 'GET', '/ipa',
                                      headers={'Range': 'bytes=99999999-'})
    assert status == 416
    assert response.getheader('Content-Range') == f'bytes */{len(BODY)}'
    assert _cache_count(cached, 'requests', 'hit') == 4
    # Sent by the threads asked for, or by the loop's own.
    threads = cached.config.cache_send_threads
    assert (cached.sender.threads if cached.sender else 0) == threads


def test_a_changed_file_is_served_new_at_once(cached, root):
    directory, _server = root
    _fill(cached)
    new = bytes(reversed(BODY))
    (directory / 'ipa').write_bytes(new)
    # Dated later than the answer: not a strong validator, so not kept.
    later = time.time() + 30
    os.utime(directory / 'ipa', (later, later))
    assert _request(cached, 'http', 'GET', '/ipa')[:2] == (200, new)
    assert _cache_count(cached, 'requests', 'changed') == 1
    assert _copies(cached) == []
    assert _request(cached, 'http', 'GET', '/ipa')[:2] == (200, new)
    assert _cache_count(cached, 'requests', 'miss') == 2


def _conditional(server):
    return sum('if-modified-since' in headers
               for _method, _path, headers in server.seen)


def test_downloads_at_once_share_one_question_to_ironic(cached, root):
    _directory, server = root
    _fill(cached)
    server.slow_revalidation = 0.5
    # The first client asks and goes away before the answer: the others
    # are still answered from the copy.
    with socket.create_connection(('127.0.0.1', cached.ports['http']),
                                  timeout=10) as gone:
        gone.sendall(b'GET /ipa HTTP/1.1\r\nHost: x\r\n\r\n')
        observe.wait_for(lambda: _conditional(server) == 1, timeout=5,
                         what='the question asked')
    # As many as the admission limits let in (8, 3 an address).
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(
            lambda n: _request(cached, 'http', 'GET', '/ipa',
                               source=f'127.0.0.{10 + n}')[:2],
            range(6)))
    assert answers == [(200, BODY)] * 6
    # Seven downloads: the question under way, and one more for those
    # who arrived after it was written, never one each.
    assert _conditional(server) == 2
    assert _cache_count(cached, 'revalidations_shared') == 6
    assert _cache_count(cached, 'revalidations', 'not_modified') == \
        _conditional(server)


def test_ironic_down_never_serves_the_copy(cached, root):
    _directory, server = root
    _fill(cached)
    server.shutdown()
    server.server_close()
    status, _, _ = _request(cached, 'http', 'GET', '/ipa')
    assert status == 502
    assert _cache_count(cached, 'requests', 'hit') == 0


def test_a_cut_fill_leaves_nothing(cached):
    with pytest.raises(http.client.IncompleteRead):
        _request(cached, 'http', 'GET', '/cut')
    observe.wait_for(lambda: _cache_count(cached, 'fills',
                                          'discarded') == 1,
                     timeout=5, what='fill discarded')
    assert _copies(cached) == [] and cached.cache.used == 0


def test_a_client_with_its_own_condition_goes_through(cached, root):
    _directory, server = root
    status, _, _ = _request(cached, 'http', 'GET', '/ipa',
                            headers={'If-None-Match': '"x"'})
    assert status == 200
    assert server.seen[0][2]['if-none-match'] == '"x"'
    assert _copies(cached) == [] and len(cached.cache) == 0


def test_an_unusable_cache_dir_is_one_config_line(tmp_path, upstreams,
                                                  reserved):
    (tmp_path / 'file').write_text('')
    cfg = dataclasses.replace(_config(upstreams),
                              cache_dir=str(tmp_path / 'file' / 'copies'),
                              cache_max_bytes=1000)
    service = service_mod.BridgeService(cfg, lambda: reserved)
    with pytest.raises(settings.ConfigError, match='cache_dir'):
        service.start()
