"""The agent sends UEFI HTTP boot clients to its own HTTP server."""

from vmetal_ironic.dhcp_agent import settings


def test_http_boot_url_points_at_the_agent_when_it_serves_http(conf):
    assert settings.settings_from_conf(conf, '192.0.2.1').http_boot_url is None
    conf.set_override('http_port', 8069, group='vmetal_tftp')
    result = settings.settings_from_conf(conf, '192.0.2.1')
    assert result.http_boot_url == 'http://192.0.2.1:8069/snponly.efi'
    # An explicit URL (another web server) still wins.
    conf.set_override('http_boot_url', 'http://198.51.100.9/boot.efi',
                      group='vmetal_dhcp_agent')
    result = settings.settings_from_conf(conf, '192.0.2.1')
    assert result.http_boot_url == 'http://198.51.100.9/boot.efi'
