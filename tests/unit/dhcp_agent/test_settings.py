import socket

import pytest

from vmetal_ironic.dhcp_agent import settings


def test_settings_from_conf(conf):
    conf.set_override('ipxe_script_url', 'http://192.0.2.1/boot.ipxe',
                      group='vmetal_dhcp_agent')
    built = settings.settings_from_conf(conf, '192.0.2.1')
    assert built.server_address == socket.inet_aton('192.0.2.1')
    assert built.boot_file_for(7) == 'snponly.efi'
    assert built.boot_file_for(0) == 'undionly.kpxe'
    assert built.no_pxedhcp


@pytest.mark.parametrize('option,value,message', [
    ('boot_files', {'efi': 'x'}, "boot_files key 'efi' is not an "
                                 "architecture number"),
    ('ipxe_script_url', 'boot.ipxe', "ipxe_script_url 'boot.ipxe' is not "
                                     "a URL"),
    ('http_boot_url', 'http://' + 'x' * 300, 'longer than the 255 bytes'),
])
def test_bad_settings_name_the_value(conf, option, value, message):
    conf.set_override(option, value, group='vmetal_dhcp_agent')
    with pytest.raises(settings.ConfigError, match=message):
        settings.settings_from_conf(conf, '192.0.2.1')


def test_dynamic_from_conf(conf):
    assert settings.dynamic_from_conf(conf) is None
    conf.set_override('dynamic_range', '192.0.2.200-192.0.2.100',
                      group='vmetal_dhcp_agent')
    with pytest.raises(settings.ConfigError, match='ends before it starts'):
        settings.dynamic_from_conf(conf)
    conf.set_override('dynamic_range', '192.0.2.100-192.0.2.200',
                      group='vmetal_dhcp_agent')
    assert settings.dynamic_from_conf(conf).last - \
        settings.dynamic_from_conf(conf).first == 100


def test_a_configuration_error_is_the_deployments_to_fix():
    from vmetal_ironic import exception
    assert issubclass(settings.ConfigError, exception.DeploymentError)
    assert not issubclass(settings.ConfigError, exception.PermanentError)


def test_inspection_from_conf(conf):
    assert settings.inspection_from_conf(conf) is None
    conf.set_override('inspection_range', '192.0.2.100-192.0.2.109',
                      group='vmetal_dhcp_agent')
    first, last = settings.inspection_from_conf(conf)
    assert last - first == 9
    conf.set_override('inspection_range', '192.0.2.100-192.0.2.300',
                      group='vmetal_dhcp_agent')
    with pytest.raises(settings.ConfigError,
                       match=r"\[vmetal_dhcp_agent\]inspection_range "
                             r"'192.0.2.100-192.0.2.300'"):
        settings.inspection_from_conf(conf)
    conf.set_override('inspection_range', '192.0.2.100-192.0.2.109',
                      group='vmetal_dhcp_agent')
    conf.set_override('dynamic_range', '192.0.2.200-192.0.2.209',
                      group='vmetal_dhcp_agent')
    with pytest.raises(settings.ConfigError, match='both set'):
        settings.inspection_from_conf(conf)
