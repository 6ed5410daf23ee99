import ssl

import pytest

from vmetal_ironic.dhcp_agent import settings
from vmetal_ironic.dhcp_agent.bridge import config
from vmetal_ironic.lab import tls


@pytest.fixture
def conf(conf):
    # The agent's groups from tests/unit/dhcp_agent/conftest.py, with the
    # bridge turned on toward a cluster-side Ironic.
    for name, value in (('enabled', True),
                        ('ironic_http_url', 'http://ironic.svc:6180'),
                        ('ironic_api_url', 'https://ironic.svc:6385'),
                        ('callback_address', '10.244.1.7')):
        conf.set_override(name, value, group='vmetal_bridge')
    return conf


def test_disabled_is_none(conf):
    conf.set_override('enabled', False, group='vmetal_bridge')
    assert config.from_conf(conf, '198.51.100.1') is None
    assert config.ipxe_script_url(conf) is None


def test_defaults_advertise_the_agents_addresses(conf):
    result = config.from_conf(conf, '198.51.100.1')
    assert result.provisioning_address == '198.51.100.1'
    assert result.http_advertise_url == 'http://198.51.100.1:8080'
    assert result.api_advertise_url == 'http://198.51.100.1:6385'
    assert result.callback_advertise_url == 'http://10.244.1.7:8081'
    assert result.api_upstream.scheme == 'https'
    assert result.limits.max_header_bytes == 16384


def test_copies_are_off_unless_a_directory_is_named(conf):
    result = config.from_conf(conf, '198.51.100.1')
    assert result.cache_dir is None
    assert result.cache_max_bytes == 2 * 2**30
    conf.set_override('cache_dir', '/var/cache/vmetal-bridge',
                      group='vmetal_bridge')
    conf.set_override('cache_max_bytes', 1000, group='vmetal_bridge')
    result = config.from_conf(conf, '198.51.100.1')
    assert (result.cache_dir, result.cache_max_bytes) == (
        '/var/cache/vmetal-bridge', 1000)


def test_copies_are_sent_by_threads_unless_told(conf):
    assert config.from_conf(conf, '198.51.100.1').cache_send_threads == 32
    conf.set_override('cache_send_threads', 0, group='vmetal_bridge')
    assert config.from_conf(conf, '198.51.100.1').cache_send_threads == 0


def test_ipxe_script_url_follows_the_advertised_http_url(conf):
    conf.set_override('http_advertise_url', 'http://198.51.100.9:80/',
                      group='vmetal_bridge')
    assert config.ipxe_script_url(conf) == \
        'http://198.51.100.9:80/boot.ipxe'


@pytest.mark.parametrize('name,value,message', [
    ('ironic_api_url', None, 'ironic_api_url is not set'),
    ('callback_address', None, 'callback_address is not set'),
    ('callback_address', '0.0.0.0', 'every network'),
    ('provisioning_address', '::', 'every network'),
    ('callback_address', '198.51.100.1', 'provisioning address'),
    ('api_port', 8080, 'both 8080'),
    ('ca_file', '/nonexistent/ca.pem', 'ca_file')])
def test_bad_values_are_one_line(conf, name, value, message):
    conf.set_override(name, value, group='vmetal_bridge')
    with pytest.raises(settings.ConfigError, match=message):
        config.from_conf(conf, '198.51.100.1')


def test_port_shared_with_http_boot_is_refused(conf):
    conf.set_override('http_port', 8080, group='vmetal_tftp')
    with pytest.raises(settings.ConfigError, match='vmetal_tftp'):
        config.from_conf(conf, '198.51.100.1')


def test_callback_tls_advertises_https(conf, tmp_path):
    issued = tls.issue(tmp_path, ['10.244.1.7'])
    conf.set_override('callback_cert_file', str(issued.cert_file),
                      group='vmetal_bridge')
    conf.set_override('callback_key_file', str(issued.key_file),
                      group='vmetal_bridge')
    result = config.from_conf(conf, '198.51.100.1')
    assert result.callback_advertise_url == 'https://10.244.1.7:8081'
    assert result.callback_tls.minimum_version >= ssl.TLSVersion.TLSv1_2
    # The files are kept for the reload check (cert_reload).
    assert (result.callback_cert_file, result.callback_key_file,
            result.callback_cert_check_interval) == (
        str(issued.cert_file), str(issued.key_file), 30.0)
    # An advertised URL must say what the listener serves.
    conf.set_override('callback_advertise_url', 'http://cb.svc:8081',
                      group='vmetal_bridge')
    with pytest.raises(settings.ConfigError, match='is not https'):
        config.from_conf(conf, '198.51.100.1')


@pytest.mark.parametrize('cert,key,message', [
    (None, 'key.pem', 'without callback_cert_file'),
    ('missing.pem', None, "callback_cert_file '.*missing.pem'"),
    ('ca.pem', None, 'callback_cert_file')])
def test_bad_callback_tls_is_one_line(conf, tmp_path, cert, key, message):
    issued = tls.issue(tmp_path, ['10.244.1.7'], label='x')
    files = {'key.pem': issued.key_file, 'ca.pem': issued.ca_file,
             'missing.pem': tmp_path / 'missing.pem'}
    conf.set_override('callback_cert_file', cert and str(files[cert]),
                      group='vmetal_bridge')
    conf.set_override('callback_key_file', key and str(files[key]),
                      group='vmetal_bridge')
    with pytest.raises(settings.ConfigError, match=message):
        config.from_conf(conf, '198.51.100.1')


def test_https_advertised_without_tls_is_refused(conf):
    conf.set_override('callback_advertise_url', 'https://cb.svc:8081',
                      group='vmetal_bridge')
    with pytest.raises(settings.ConfigError, match='is not http'):
        config.from_conf(conf, '198.51.100.1')
