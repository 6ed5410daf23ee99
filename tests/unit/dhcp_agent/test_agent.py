import os
import socket

import pytest
from oslo_config import cfg

from tests.unit.dhcp_agent import helpers
from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import reservation as res
from vmetal_ironic.cmd import dhcp_agent
from vmetal_ironic.dhcp_agent import agent
from vmetal_ironic.dhcp_agent import cache as cache_mod
from vmetal_ironic.dhcp_agent import messages as m
from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent import server as server_mod
from vmetal_ironic.store import local


def test_agent_refuses_missing_or_unknown_interface(conf):
    with pytest.raises(agent.ConfigError, match='interface is not set'):
        agent.Agent(conf, None)
    with pytest.raises(agent.ConfigError,
                       match="interface 'vpxnosuch0' does not exist"):
        agent.Agent(conf, None, interface='vpxnosuch0')


def test_console_script_bad_config_is_one_line(tmp_path, capsys):
    path = tmp_path / 'a.conf'
    path.write_text(f'[vmetal_local_store]\ndatabase = {tmp_path}/db\n'
                    '[vmetal_dhcp_agent]\ninterface = lo\nlease_time = soon\n')
    assert dhcp_agent.main(['--config-file', str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith('vmetal-dhcp-agent: error: ')
    assert 'lease_time' in err and len(err.strip().splitlines()) == 1


def _server(dynamic=None):
    settings = m.Settings(server_address=socket.inet_aton('192.0.2.1'))
    cache = cache_mod.ReservationCache()
    server = server_mod.DhcpServer(None, settings, cache,
                                   metrics_mod.Metrics(), dynamic=dynamic)
    cache.on_load = server.prepare
    cache.load([res.Reservation(mac=helpers.MAC, address='192.0.2.10',
                                prefixlen=24)], 1)
    return server


def test_handle_counts_everything():
    server = _server()
    _reply, target = server.handle(helpers.packet())
    assert target == ('255.255.255.255', 68)
    assert server.handle(b'garbage') is None
    assert server.handle(helpers.packet(mac='52:54:00:00:00:99')) is None
    _reply, target = server.handle(helpers.packet(
        'request', giaddr='198.51.100.1',
        options=[('requested_addr', '192.0.2.10'),
                 ('server_id', '192.0.2.1')]))
    assert target == ('198.51.100.1', 67)
    assert server.handle(helpers.packet('release', ciaddr='192.0.2.10',
                                        options=[('server_id',
                                                  '192.0.2.1')])) is None
    stats = server.stats
    assert (stats['DISCOVER'], stats['REQUEST'], stats['RELEASE']) == (2, 1, 1)
    assert (server.replies['OFFER'], server.replies['ACK'],
            stats['malformed'], stats['unknown']) == (1, 1, 1, 1)
    text = server.metrics.render()
    assert 'vmetal_dhcp_malformed_total 1.0' in text
    assert 'vmetal_dhcp_unknown_mac_total 1.0' in text
    assert 'vmetal_dhcp_reply_destinations_total{to="broadcast"} 1.0' in text
    assert 'vmetal_dhcp_reply_destinations_total{to="relay"} 1.0' in text
    assert '1 unknown MAC' in server.summary()


def test_dynamic_range_serves_unknown_macs():
    from vmetal_ironic.dhcp_agent import dynamic
    pool = dynamic.DynamicPool(int.from_bytes(socket.inet_aton('192.0.2.100'),
                                              'big'),
                               int.from_bytes(socket.inet_aton('192.0.2.101'),
                                              'big'), 24)
    server = _server(pool)
    mac = '52:54:00:00:00:99'
    reply, _ = server.handle(helpers.packet(mac=mac))
    _, options = helpers.options_of(reply)
    assert options['message-type'] == 2
    reply, _ = server.handle(helpers.packet(
        'request', mac=mac, options=[('requested_addr', '192.0.2.100'),
                                     ('server_id', '192.0.2.1')]))
    assert helpers.options_of(reply)[1]['message-type'] == 5
    assert len(pool) == 1
    server.handle(helpers.packet('release', mac=mac, ciaddr='192.0.2.100',
                                 options=[('server_id', '192.0.2.1')]))
    assert len(pool) == 0


def test_agent_checks_tftp_root_before_opening_anything(conf, tmp_path):
    conf.set_override('root', str(tmp_path / 'missing'), group='vmetal_tftp')
    with pytest.raises(agent.ConfigError,
                       match=r"\[vmetal_tftp\]root '.*missing' is not a "
                             'readable directory'):
        agent.Agent(conf, None, interface='lo')
    conf.set_override('root', str(tmp_path), group='vmetal_tftp')
    built = agent.Agent(conf, None, interface='lo')
    assert built.server_address == '127.0.0.1'
    assert built.server is None and built.tftp is None


SIGHUP_AT_START = '''
import os, signal, sys
from vmetal_ironic import store as store_mod
from vmetal_ironic.cmd import dhcp_agent
from vmetal_ironic.store import local

class SignallingStore(local.LocalStore):
    """The real local store, sending the agent a SIGHUP while start()
    reads it, and a SIGTERM once the reload asked for a new read."""
    calls = 0
    def reservations_revision(self):
        SignallingStore.calls += 1
        if SignallingStore.calls == 1:
            os.kill(os.getpid(), signal.SIGHUP)
        elif SignallingStore.calls == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().reservations_revision()

store_mod.get_store = lambda conf: SignallingStore(conf)
sys.exit(dhcp_agent.main(['--config-file', sys.argv[1]]))
'''


def _free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(os.geteuid() != 0, reason='SO_BINDTODEVICE needs root')
def test_sighup_during_start_up_is_a_reload_not_a_kill(tmp_path):
    import subprocess
    import sys
    path = tmp_path / 'a.conf'
    path.write_text(f'[vmetal_local_store]\ndatabase = {tmp_path}/db\n'
                    '[vmetal_dhcp_agent]\ninterface = lo\n'
                    f'port = {_free_udp_port()}\nmetrics_port = 0\n'
                    'send_ra = false\nsummary_interval = 1\n'
                    '[vmetal_tftp]\nenabled = false\n')
    script = tmp_path / 'run.py'
    script.write_text(SIGHUP_AT_START)
    result = subprocess.run([sys.executable, str(script), str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def _reload_conf(tmp_path, gateway, dns, lease_time):
    path = tmp_path / 'agent.conf'
    path.write_text('[vmetal_dhcp_agent]\n'
                    'dynamic_range = 192.0.2.100-192.0.2.110\n'
                    f'dynamic_gateway = {gateway}\n'
                    f'dynamic_dns_servers = {dns}\n'
                    f'dynamic_lease_time = {lease_time}\n'
                    'server_address = 192.0.2.1\n'
                    '[vmetal_tftp]\nenabled = false\n')
    return path


def test_sighup_reloads_dynamic_gateway_dns_and_lease_time(tmp_path):
    path = _reload_conf(tmp_path, '192.0.2.254', '192.0.2.53', 600)
    conf = cfg.ConfigOpts()
    vmetal_conf.dhcp_agent.register_opts(conf)
    vmetal_conf.tftp.register_opts(conf)
    vmetal_conf.bridge.register_opts(conf)
    conf(['--config-file', str(path)])
    built = agent.Agent(conf, None, interface='lo')
    built.server = server_mod.DhcpServer(None, built.settings, built.cache,
                                         built.metrics,
                                         dynamic=built.dynamic)
    mac = '52:54:00:00:00:99'
    _, before = helpers.options_of(built.server.handle(
        helpers.packet(mac=mac))[0])
    assert (before['router'], before['lease_time']) == ('192.0.2.254', 600)
    _reload_conf(tmp_path, '192.0.2.1', '192.0.2.99', 1200)
    built.reload()
    reply, after = helpers.options_of(built.server.handle(
        helpers.packet(mac=mac))[0])
    assert after['router'] == '192.0.2.1'
    assert after['name_server'] == '192.0.2.99'
    assert after['lease_time'] == 1200
    # Same client, same address: the leases were carried over.
    assert reply.yiaddr == '192.0.2.100'
    assert built.metrics.config_reloads.labels('ok')._value.get() == 1
    # The bridge's callback proxy may reach the address once the client
    # took it (REQUEST, ACK), not while it is only offered.
    leased = bytes([192, 0, 2, 100])
    assert not built._leased(leased)
    built.server.handle(helpers.packet(
        'request', mac=mac,
        options=[('requested_addr', '192.0.2.100'),
                 ('server_id', '192.0.2.1')]))
    assert built._leased(leased)
    assert not built._leased(bytes([192, 0, 2, 101]))


def test_sighup_reloads_the_shared_range_lease_options(tmp_path):
    path = tmp_path / 'agent.conf'

    def write(gateway):
        path.write_text('[vmetal]\nstore = local\n'
                        '[vmetal_dhcp_agent]\n'
                        'inspection_range = 192.0.2.100-192.0.2.110\n'
                        f'dynamic_gateway = {gateway}\n'
                        'server_address = 192.0.2.1\n'
                        '[vmetal_tftp]\nenabled = false\n')

    write('192.0.2.254')
    conf = cfg.ConfigOpts()
    vmetal_conf.vmetal.register_opts(conf)
    vmetal_conf.dhcp_agent.register_opts(conf)
    vmetal_conf.tftp.register_opts(conf)
    vmetal_conf.bridge.register_opts(conf)
    conf(['--config-file', str(path)])
    store = local.LocalStore(path=str(tmp_path / 'v.sqlite'))
    built = agent.Agent(conf, store, interface='lo')
    built.shared = built._shared_range()
    built.server = server_mod.DhcpServer(None, built.settings, built.cache,
                                         built.metrics, shared=built.shared)
    mac = '52:54:00:00:00:99'
    assert built.server.handle(helpers.packet(mac=mac)) is None
    built.shared.run_safely('claim', mac, None)
    _, before = helpers.options_of(built.server.handle(
        helpers.packet(mac=mac))[0])
    assert before['router'] == '192.0.2.254'
    write('192.0.2.1')
    built.reload()
    reply, after = helpers.options_of(built.server.handle(
        helpers.packet(mac=mac))[0])
    assert after['router'] == '192.0.2.1'
    # The lease stays, and the bridge's callback proxy may reach it.
    assert reply.yiaddr == built.shared.cache.lease(mac).address
    assert built._leased(bytes(int(part) for part in
                               reply.yiaddr.split('.')))
    assert not built._leased(bytes([192, 0, 2, 111]))
    assert built.metrics.config_reloads.labels('ok')._value.get() == 1
    built.server.close()
    store.close()


def test_interface_watch_tells_gone_back_and_same():
    from vmetal_ironic.dhcp_agent import link
    watch = link.InterfaceWatch('lo')
    assert watch.check() is link.Change.SAME
    watch.bound_index = -1          # as if bound to an older 'lo'
    assert watch.check() is link.Change.BACK
    watch.rebound()
    assert watch.check() is link.Change.SAME
    gone = link.InterfaceWatch('vpxnosuch0', index=7)
    assert gone.check() is link.Change.GONE
    assert gone.check() is link.Change.SAME
