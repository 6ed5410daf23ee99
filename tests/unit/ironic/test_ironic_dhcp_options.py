"""Reading Ironic's DHCP option lists (vmetal_ironic.ironic.dhcp_options).

The lists are the shapes ironic/common/pxe_utils.py produces; see
shared reference ironic.md.
"""

import pytest

from vmetal_ironic.ironic import dhcp_options

TFTP = '192.0.2.10'
SCRIPT = 'http://192.0.2.10:8080/boot.ipxe'


def opt(name, value, version=4):
    return {'opt_name': name, 'opt_value': value, 'ip_version': version}


def tftp_options(server=TFTP):
    return [opt('66', server), opt('150', server), opt('255', server)]


def test_ipxe_uefi_with_tag_support():
    parsed = dhcp_options.parse([
        opt('tag:!ipxe,67', 'snponly.efi'),
        opt('tag:ipxe,67', SCRIPT),
        *tftp_options(),
        opt('tag:!ipxe6,59', 'tftp://[2001:db8::1]/snponly.efi', 6),
        opt('tag:ipxe6,59', 'http://[2001:db8::1]/boot.ipxe', 6),
    ])
    assert parsed.skipped == ()
    assert parsed.boot.bootfile == 'snponly.efi'
    assert parsed.boot.ipxe_script_url == SCRIPT
    assert parsed.boot.tftp_server == TFTP
    assert parsed.boot.http_boot_url is None


def test_ipxe_bios():
    parsed = dhcp_options.parse([
        opt('tag:!ipxe,67', 'undionly.kpxe'), opt('tag:ipxe,67', SCRIPT),
        *tftp_options()])
    assert parsed.boot.bootfile == 'undionly.kpxe'
    assert parsed.boot.ipxe_script_url == SCRIPT


def test_ipxe_without_tag_support_uses_not_175():
    parsed = dhcp_options.parse([
        opt('!175,67', 'snponly.efi'), opt('67', SCRIPT), *tftp_options()])
    assert parsed.skipped == ()
    assert parsed.boot.bootfile == 'snponly.efi'
    assert parsed.boot.ipxe_script_url == SCRIPT


def test_plain_pxe_uefi():
    parsed = dhcp_options.parse([opt('67', 'bootx64.efi'), *tftp_options()])
    assert parsed.skipped == ()
    assert parsed.boot.bootfile == 'bootx64.efi'
    assert parsed.boot.ipxe_script_url is None
    assert parsed.boot.tftp_server == TFTP


def test_http_ipxe_gives_http_boot_url():
    loader = 'http://192.0.2.10:8080/snponly.efi'
    parsed = dhcp_options.parse([
        opt('tag:!ipxe,67', loader), opt('tag:ipxe,67', SCRIPT),
        opt('60', 'HTTPClient')])
    assert parsed.skipped == ()
    assert parsed.boot.http_boot_url == loader
    assert parsed.boot.bootfile is None
    assert parsed.boot.ipxe_script_url == SCRIPT
    assert parsed.boot.tftp_server is None


def test_uefi_http_boot_without_ipxe():
    loader = 'http://192.0.2.10:8080/bootx64.efi'
    parsed = dhcp_options.parse([opt('67', loader), opt('60', 'HTTPClient')])
    assert parsed.boot.http_boot_url == loader
    assert parsed.boot.bootfile is None


def test_http_client_with_a_file_name_is_reported():
    parsed = dhcp_options.parse([opt('67', 'bootx64.efi'),
                                 opt('60', 'HTTPClient')])
    assert parsed.boot.bootfile == 'bootx64.efi'
    assert parsed.boot.http_boot_url is None
    assert [str(s.reason) for s in parsed.skipped] == [
        'HTTP boot was asked for but the bootfile is not a URL']


def test_tftp_address_preferred_over_name():
    parsed = dhcp_options.parse([opt('66', '198.51.100.1'),
                                 opt('150', TFTP)])
    assert parsed.boot.tftp_server == TFTP


def test_named_options_accepted():
    parsed = dhcp_options.parse([
        opt('bootfile-name', 'bootx64.efi'),
        opt('server-ip-address', TFTP), opt('tftp-server', TFTP)])
    assert parsed.skipped == ()
    assert parsed.boot.bootfile == 'bootx64.efi'
    assert parsed.boot.tftp_server == TFTP


def test_only_ipv6_options_give_nothing():
    parsed = dhcp_options.parse([opt('59', 'tftp://[2001:db8::1]/x', 6)])
    assert parsed.skipped == ()
    assert parsed.boot.to_dict() == {}


@pytest.mark.parametrize('options', [None, []])
def test_empty(options):
    parsed = dhcp_options.parse(options)
    assert parsed.boot.to_dict() == {}
    assert parsed.skipped == ()


@pytest.mark.parametrize('option, reason', [
    ('not a dict', 'is not a mapping'),
    ({'opt_value': 'x'}, 'has no opt_name'),
    ({'opt_name': '67'}, 'has no opt_value'),
    (opt('67', '   '), 'has no opt_value'),
    (opt('67', 12), 'has no opt_value'),
    (opt('67', 'x', 'seven'), 'has an ip_version that is neither 4 nor 6'),
    (opt('tag:foo,67', 'x'), 'has a tag this provider does not know'),
    (opt('tag:ipxe,66', TFTP), 'only bootfile options may carry a client tag'),
    (opt('150', 'tftp.example.test'),
     'TFTP server address is not an IPv4 address'),
    (opt('255', '192.0.2.300'), 'TFTP server address is not an IPv4 address'),
    (opt('66', 'tftp.example.test'),
     'TFTP server name is not an IPv4 address'),
    (opt('60', 'PXEClient'), 'vendor class is not HTTPClient'),
    (opt('42', '192.0.2.1'), 'is an option this provider does not handle'),
    (opt('tag:!ipxe,67', 'bad name.efi'), 'bootfile contains white space'),
    (opt('tag:!ipxe,67', 'x' * 129),
     'bootfile is longer than 128 characters'),
])
def test_malformed_option_is_skipped_with_reason(option, reason):
    parsed = dhcp_options.parse([option, opt('tag:ipxe,67', SCRIPT)])
    assert [s.reason for s in parsed.skipped] == [reason]
    assert parsed.skipped[0].option == option
    assert repr(option) in str(parsed.skipped[0])
    # The good option next to it is still used.
    assert parsed.boot.ipxe_script_url == SCRIPT


def test_contradicting_value_keeps_the_first():
    parsed = dhcp_options.parse([opt('tag:!ipxe,67', 'snponly.efi'),
                                 opt('tag:!ipxe,67', 'ipxe.efi')])
    assert parsed.boot.bootfile == 'snponly.efi'
    assert parsed.skipped[0].reason == (
        "contradicts the earlier value 'snponly.efi'")


def test_repeated_equal_value_is_fine():
    parsed = dhcp_options.parse(tftp_options() + tftp_options())
    assert parsed.skipped == ()


def test_ipxe_script_must_be_a_url():
    parsed = dhcp_options.parse([opt('tag:!ipxe,67', 'snponly.efi'),
                                 opt('tag:ipxe,67', 'boot.ipxe')])
    assert parsed.boot.ipxe_script_url is None
    assert parsed.boot.bootfile == 'snponly.efi'
    assert parsed.skipped[0].option == 'boot.ipxe'
    assert 'not an http(s) or tftp URL' in parsed.skipped[0].reason


def test_missing_ip_version_means_ipv4():
    parsed = dhcp_options.parse([{'opt_name': '67', 'opt_value': 'x.efi'}])
    assert parsed.boot.bootfile == 'x.efi'


@pytest.mark.parametrize('text, expected', [
    ('192.0.2.1', True), ('0.0.0.0', True), ('255.255.255.255', True),
    ('192.0.2.256', False), ('192.0.2', False), ('01.2.3.4', False),
    ('tftp.example.test', False), ('2001:db8::1', False),
])
def test_is_ipv4(text, expected):
    assert dhcp_options.is_ipv4(text) is expected


@pytest.mark.parametrize('text, expected', [
    (SCRIPT, True), ('https://example.test/boot.ipxe', True),
    ('tftp://192.0.2.1/boot.ipxe', True), ('http://192.0.2.1', True),
    ('ftp://192.0.2.1/x', False), ('boot.ipxe', False),
    ('http:///x', False), ('http://a b/x', False),
])
def test_is_url(text, expected):
    assert dhcp_options.is_url(text) is expected
