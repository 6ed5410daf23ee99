import socket

import pytest
from oslo_config import cfg

from tests.unit.pxe import helpers
from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import reservation as res
from vmetal_ironic.cmd import dhcp_agent
from vmetal_ironic.pxe import agent
from vmetal_ironic.pxe import cache as cache_mod
from vmetal_ironic.pxe import decisions as d
from vmetal_ironic.pxe import metrics as metrics_mod
from vmetal_ironic.pxe import server as server_mod


@pytest.fixture
def conf():
    conf = cfg.ConfigOpts()
    vmetal_conf.dhcp_agent.register_opts(conf)
    vmetal_conf.tftp.register_opts(conf)
    conf([], default_config_files=[])
    return conf


def test_settings_from_conf(conf):
    conf.set_override('ipxe_script_url', 'http://192.0.2.1/boot.ipxe',
                      group='vmetal_dhcp_agent')
    settings = agent.settings_from_conf(conf, '192.0.2.1')
    assert settings.server_address == socket.inet_aton('192.0.2.1')
    assert settings.boot_file_for(7) == 'snponly.efi'
    assert settings.boot_file_for(0) == 'undionly.kpxe'
    assert settings.no_pxedhcp


@pytest.mark.parametrize('option,value,message', [
    ('boot_files', {'efi': 'x'}, "boot_files key 'efi' is not an "
                                 "architecture number"),
    ('ipxe_script_url', 'boot.ipxe', "ipxe_script_url 'boot.ipxe' is not "
                                     "a URL"),
    ('http_boot_url', 'http://' + 'x' * 300, 'longer than the 255 bytes'),
])
def test_bad_settings_name_the_value(conf, option, value, message):
    conf.set_override(option, value, group='vmetal_dhcp_agent')
    with pytest.raises(agent.ConfigError, match=message):
        agent.settings_from_conf(conf, '192.0.2.1')


def test_dynamic_from_conf(conf):
    assert agent.dynamic_from_conf(conf) is None
    conf.set_override('dynamic_range', '192.0.2.200-192.0.2.100',
                      group='vmetal_dhcp_agent')
    with pytest.raises(agent.ConfigError, match='ends before it starts'):
        agent.dynamic_from_conf(conf)
    conf.set_override('dynamic_range', '192.0.2.100-192.0.2.200',
                      group='vmetal_dhcp_agent')
    assert agent.dynamic_from_conf(conf).last - \
        agent.dynamic_from_conf(conf).first == 100


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
    settings = d.Settings(server_address=socket.inet_aton('192.0.2.1'))
    cache = cache_mod.ReservationCache()
    server = server_mod.DhcpServer(None, settings, cache,
                                   metrics_mod.Metrics(), dynamic=dynamic)
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
    assert (stats['OFFER'], stats['ACK'], stats['malformed'],
            stats['unknown']) == (1, 1, 1, 1)
    text = server.metrics.render()
    assert 'vmetal_dhcp_malformed_total 1.0' in text
    assert 'vmetal_dhcp_unknown_mac_total 1.0' in text
    assert 'vmetal_dhcp_reservations 1.0' in text
    assert '1 unknown MAC' in server.summary()


def test_dynamic_range_serves_unknown_macs():
    from vmetal_ironic.pxe import dynamic
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
    server.handle(helpers.packet('release', mac=mac, ciaddr='192.0.2.100'))
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
