"""The packet path of DhcpServer: RFC 2131 corner cases of the dynamic
range, bounded logs, honest counts."""

import logging
import socket

import pytest

from tests.unit.dhcp_agent import helpers
from vmetal_ironic import reservation as res
from vmetal_ironic.dhcp_agent import cache as cache_mod
from vmetal_ironic.dhcp_agent import dynamic
from vmetal_ironic.dhcp_agent import messages as m
from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent import server as server_mod

SERVER = '192.0.2.1'
FIRST = '192.0.2.100'
UNKNOWN = '52:54:00:00:00:99'
OTHER = '52:54:00:00:00:98'


def _ip(text):
    return int.from_bytes(socket.inet_aton(text), 'big')


def _server(pool=True, sock=None):
    settings = m.Settings(server_address=socket.inet_aton(SERVER))
    cache = cache_mod.ReservationCache()
    server = server_mod.DhcpServer(
        sock, settings, cache, metrics_mod.Metrics(),
        dynamic=dynamic.DynamicPool(_ip(FIRST), _ip(FIRST) + 9, 24)
        if pool else None)
    cache.on_load = server.prepare
    cache.load([res.Reservation(mac=helpers.MAC, address='192.0.2.10',
                                prefixlen=24)], 1)
    return server


def _type(result):
    if result is None:
        return None
    return helpers.options_of(result[0])[1]['message-type']


def test_init_reboot_from_a_mac_without_record_gets_silence():
    # RFC 2131 4.3.2: "If the DHCP server has no record of this client,
    # then it MUST remain silent". Also no pool address is taken.
    server = _server()
    result = server.handle(helpers.packet(
        'request', mac=UNKNOWN, options=[('requested_addr', '198.18.5.5')]))
    assert result is None
    result = server.handle(helpers.packet(
        'request', mac=UNKNOWN, options=[('requested_addr', FIRST)]))
    assert result is None
    assert len(server.dynamic) == 0
    assert server.metrics.replies.labels('NAK')._value.get() == 0


def test_request_for_another_server_takes_no_address_and_frees_an_offer():
    server = _server()
    other = [('server_id', '192.0.2.99'), ('requested_addr', FIRST)]
    assert server.handle(helpers.packet('request', mac=UNKNOWN,
                                        options=other)) is None
    assert len(server.dynamic) == 0
    assert _type(server.handle(helpers.packet(mac=UNKNOWN))) == 2
    assert len(server.dynamic) == 1
    # The client took another server's offer: ours is free again.
    assert server.handle(helpers.packet('request', mac=UNKNOWN,
                                        options=other)) is None
    assert len(server.dynamic) == 0


def test_renewal_of_a_free_range_address_is_adopted():
    # The agent restarted (leases are not kept): a client renewing an
    # address of the range that nobody holds keeps it.
    server = _server()
    result = server.handle(helpers.packet('request', mac=UNKNOWN,
                                          ciaddr='192.0.2.105'))
    assert _type(result) == 5
    assert helpers.options_of(result[0])[0].yiaddr == '192.0.2.105'
    # Outside the range: silence, not NAK.
    assert server.handle(helpers.packet('request', mac=OTHER,
                                        ciaddr='198.18.0.1')) is None


def test_reservation_claiming_a_dynamic_address_revokes_the_lease():
    server = _server()
    dora = [('requested_addr', FIRST), ('server_id', SERVER)]
    assert _type(server.handle(helpers.packet(mac=UNKNOWN))) == 2
    assert _type(server.handle(helpers.packet('request', mac=UNKNOWN,
                                              options=dora))) == 5
    server.cache.load([
        res.Reservation(mac=helpers.MAC, address='192.0.2.10', prefixlen=24),
        res.Reservation(mac=OTHER, address=FIRST, prefixlen=24)], 2)
    offer = server.handle(helpers.packet(mac=OTHER))
    assert helpers.options_of(offer[0])[0].yiaddr == FIRST
    # The dynamic client renewing, or rebooting, is NAKed: no address on
    # two clients.
    renew = server.handle(helpers.packet('request', mac=UNKNOWN,
                                         ciaddr=FIRST))
    assert _type(renew) == 6
    reboot = server.handle(helpers.packet(
        'request', mac=UNKNOWN, options=[('requested_addr', FIRST)]))
    assert _type(reboot) == 6
    assert server.metrics.dynamic_revoked._value.get() == 2
    # It starts over and gets another address.
    offer = server.handle(helpers.packet(mac=UNKNOWN))
    assert helpers.options_of(offer[0])[0].yiaddr == '192.0.2.101'


def test_summary_counts_only_replies_the_agent_sent():
    server = _server(pool=False)
    for kind in ('offer', 'ack', 'nak'):
        for _ in range(100):
            assert server.handle(helpers.packet(kind)) is None
    assert server.replies == {}
    assert 'replies sent: 0 offer, 0 ack, 0 nak' in server.summary()
    server.handle(helpers.packet())
    assert 'replies sent: 1 offer' in server.summary()


def test_release_flood_from_a_known_mac_is_logged_a_bounded_number_of_times(
        caplog):
    server = _server(pool=False)
    caplog.set_level(logging.INFO, logger=server_mod.__name__)
    release = helpers.packet('release', ciaddr='192.0.2.10',
                             options=[('server_id', SERVER)])
    for _ in range(2000):
        server.handle(release)
    lines = [r for r in caplog.records if r.name == server_mod.__name__]
    # 20 a second; the test may straddle a second or two.
    assert len(lines) <= 60
    assert server.metrics.log_suppressed._value.get() >= 2000 - 60
    assert server.stats['RELEASE'] == 2000


@pytest.fixture
def loopback():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(('127.0.0.1', 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield receiver, sender
    receiver.close()
    sender.close()


def test_failing_packets_log_a_bounded_number_of_tracebacks(loopback,
                                                            caplog):
    receiver, sender = loopback
    server = _server(pool=False, sock=receiver)

    def broken(*_args):
        raise RuntimeError('encoder bug')

    server.builder.build = broken
    caplog.set_level(logging.INFO, logger=server_mod.__name__)
    packet = helpers.packet()
    handled = 0
    for _batch in range(10):
        for _ in range(20):
            sender.sendto(packet, receiver.getsockname())
        while handled % 20 or handled < (_batch + 1) * 20:
            count = server.serve_once(1.0)
            assert count, 'packets lost on loopback'
            handled += count
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert 1 <= len(tracebacks) <= server_mod._TRACEBACK_RATE
    assert server.metrics.internal_errors._value.get() == 200


def test_oversize_reply_is_counted():
    settings = m.Settings(server_address=socket.inet_aton(SERVER),
                          ipxe_script_url='http://192.0.2.1/' + 'u' * 238)
    cache = cache_mod.ReservationCache()
    server = server_mod.DhcpServer(None, settings, cache,
                                   metrics_mod.Metrics())
    cache.load([res.Reservation(mac=helpers.MAC, address='192.0.2.10',
                                prefixlen=24)], 1)
    relay = (82, b'\x01\x40' + b'r' * 64)
    server.handle(helpers.packet(giaddr='198.51.100.1',
                                 options=[(77, b'iPXE'), relay]))
    assert server.metrics.oversize._value.get() == 1
    server.handle(helpers.packet(giaddr='198.51.100.1', options=[
        (77, b'iPXE'), relay, (57, (1472).to_bytes(2, 'big'))]))
    assert server.metrics.oversize._value.get() == 1
