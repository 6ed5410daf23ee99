import socket

import pytest

from vmetal_ironic.dhcp_agent import decisions as d
from vmetal_ironic.dhcp_agent import messages as m

SERVER = socket.inet_aton('192.0.2.1')
OTHER = socket.inet_aton('192.0.2.2')
ADDRESS = socket.inet_aton('192.0.2.10')
WRONG = socket.inet_aton('192.0.2.99')
MAC = '52:54:00:aa:bb:01'

SETTINGS = m.Settings(server_address=SERVER,
                      boot_files=((0, 'undionly.kpxe'), (7, 'snponly.efi'),
                                  (11, 'snponly-arm64.efi')),
                      ipxe_script_url='http://192.0.2.1/boot.ipxe',
                      http_boot_url='http://192.0.2.1/boot.efi')
BINDING = m.Binding(mac=MAC, address=ADDRESS, prefixlen=24)


def request(kind, **kwargs):
    fields = {'message_type': kind, 'xid': b'\1\2\3\4', 'flags': 0,
                  'ciaddr': m.ZERO_ADDRESS, 'giaddr': m.ZERO_ADDRESS, 'mac': MAC}
    fields.update(kwargs)
    return m.Request(**fields)


def test_discover_from_known_mac_is_offered():
    decision = d.decide(request(m.DISCOVER), BINDING, SETTINGS)
    assert decision.action is m.Action.OFFER
    assert decision.binding is BINDING
    assert decision.boot is None


def test_unknown_mac_is_ignored_for_every_message():
    for kind in (m.DISCOVER, m.REQUEST, m.RELEASE, m.DECLINE, m.INFORM):
        decision = d.decide(request(kind, requested_address=ADDRESS,
                                    server_id=SERVER), None, SETTINGS)
        assert decision.action is m.Action.IGNORE
        assert decision.reason == 'unknown MAC'


def test_selecting_ack_and_nak():
    ok = request(m.REQUEST, server_id=SERVER, requested_address=ADDRESS)
    assert d.decide(ok, BINDING, SETTINGS).action is m.Action.ACK
    bad = request(m.REQUEST, server_id=SERVER, requested_address=WRONG)
    decision = d.decide(bad, BINDING, SETTINGS)
    assert decision.action is m.Action.NAK
    assert decision.reason == ('selecting: asked for 192.0.2.99, reserved '
                               '192.0.2.10')


def test_request_for_another_server_is_ignored_not_naked():
    for address in (ADDRESS, WRONG):
        decision = d.decide(request(m.REQUEST, server_id=OTHER,
                                    requested_address=address),
                            BINDING, SETTINGS)
        assert decision.action is m.Action.IGNORE
        assert decision.reason == 'request for another server'


def test_init_reboot():
    assert d.decide(request(m.REQUEST, requested_address=ADDRESS), BINDING,
                    SETTINGS).action is m.Action.ACK
    decision = d.decide(request(m.REQUEST, requested_address=WRONG),
                        BINDING, SETTINGS)
    assert decision.action is m.Action.NAK
    assert decision.reason.startswith('init-reboot')


@pytest.mark.parametrize('flags,state', [(0, 'renewing'),
                                         (m.BROADCAST_FLAG, 'rebinding')])
def test_renewing_and_rebinding(flags, state):
    decision = d.decide(request(m.REQUEST, ciaddr=ADDRESS, flags=flags),
                        BINDING, SETTINGS)
    assert (decision.action, decision.reason) == (m.Action.ACK, state)
    decision = d.decide(request(m.REQUEST, ciaddr=WRONG, flags=flags),
                        BINDING, SETTINGS)
    assert decision.action is m.Action.NAK
    assert decision.reason.startswith(state)


def test_request_without_any_address_is_ignored():
    decision = d.decide(request(m.REQUEST), BINDING, SETTINGS)
    assert decision.action is m.Action.IGNORE


def _own(kind, address=ADDRESS):
    # RFC 2131 table 5: a RELEASE names its address in ciaddr, a DECLINE in
    # option 50.
    if kind == m.RELEASE:
        return {'ciaddr': address}
    return {'requested_address': address}


@pytest.mark.parametrize('kind, name', [(m.RELEASE, 'release'),
                                        (m.DECLINE, 'decline')])
def test_release_and_decline_naming_us_and_the_lease_get_no_reply(kind,
                                                                  name):
    decision = d.decide(request(kind, server_id=SERVER, **_own(kind)),
                        BINDING, SETTINGS)
    assert (decision.action, decision.reason) == (m.Action.NO_REPLY, name)
    assert decision.binding is BINDING


@pytest.mark.parametrize('kind, name', [(m.RELEASE, 'release'),
                                        (m.DECLINE, 'decline')])
def test_forged_release_and_decline_are_ignored(kind, name):
    """Review finding 6: no server identifier, another server's, or an
    address that is not the client's lease: ignored, with a reason of
    its own (a label of the ignored-requests counter)."""
    cases = {
        f'{name} without server identifier': request(kind, **_own(kind)),
        f'{name} for another server': request(kind, server_id=OTHER,
                                              **_own(kind)),
        f"{name} of an address not the client's": request(
            kind, server_id=SERVER, **_own(kind, WRONG)),
    }
    # A RELEASE's option 50 or a DECLINE's ciaddr do not count.
    other_field = ({'requested_address': ADDRESS} if kind == m.RELEASE
                   else {'ciaddr': ADDRESS})
    cases[f"{name} of an address not the client's "] = request(
        kind, server_id=SERVER, **other_field)
    for reason, forged in cases.items():
        decision = d.decide(forged, BINDING, SETTINGS)
        assert (decision.action, decision.reason) == (
            m.Action.IGNORE, reason.strip())


def test_inform_gets_an_ack_without_lease():
    decision = d.decide(request(m.INFORM, ciaddr=ADDRESS), BINDING, SETTINGS)
    assert decision.action is m.Action.INFORM_ACK


def test_server_messages_are_ignored():
    for kind in (m.OFFER, m.ACK, m.NAK, 42):
        assert d.decide(request(kind), BINDING,
                        SETTINGS).action is m.Action.IGNORE


@pytest.mark.parametrize('arch,filename', [(0, 'undionly.kpxe'),
                                           (7, 'snponly.efi'),
                                           (11, 'snponly-arm64.efi'),
                                           (99, 'undionly.kpxe')])
def test_boot_file_by_architecture(arch, filename):
    boot = d.choose_boot(request(m.DISCOVER, arch=arch), BINDING, SETTINGS)
    assert boot == m.BootReply('pxe', filename, next_server='192.0.2.1')


def test_pxe_vendor_class_without_arch_gets_the_default():
    boot = d.choose_boot(request(m.DISCOVER, vendor_class=b'PXEClient'),
                         BINDING, SETTINGS)
    assert boot.filename == 'undionly.kpxe'


@pytest.mark.parametrize('fields', [{'user_class': b'iPXE'},
                                    {'ipxe_options': True},
                                    {'user_class': b'iPXE', 'arch': 7}])
def test_ipxe_gets_the_script_url_and_no_pxedhcp(fields):
    boot = d.choose_boot(request(m.DISCOVER, **fields), BINDING, SETTINGS)
    assert boot == m.BootReply('ipxe', 'http://192.0.2.1/boot.ipxe',
                               next_server='192.0.2.1', no_pxedhcp=True)


def test_ipxe_script_url_of_ironic_is_translated_to_the_bridge():
    from vmetal_ironic.dhcp_agent.bridge import urls
    settings = m.Settings(server_address=SERVER, url_translation=(
        urls.Translation((('http://203.0.113.1:8080',
                           'http://192.0.2.1:8080'),))))
    binding = m.Binding(mac=MAC, address=ADDRESS, prefixlen=24,
                        ipxe_script_url='http://203.0.113.1:8080/boot.ipxe')
    boot = d.choose_boot(request(m.DISCOVER, user_class=b'iPXE'), binding,
                         settings)
    assert boot.filename == 'http://192.0.2.1:8080/boot.ipxe'


def test_ipxe_without_script_url_gets_no_boot_file():
    settings = m.Settings(server_address=SERVER)
    assert d.choose_boot(request(m.DISCOVER, user_class=b'iPXE'), BINDING,
                         settings) is None


def test_http_boot_client_gets_url_and_vendor_class_echo():
    boot = d.choose_boot(request(m.DISCOVER, arch=16,
                                 vendor_class=b'HTTPClient:Arch:00016'),
                         BINDING, SETTINGS)
    assert boot == m.BootReply('http', 'http://192.0.2.1/boot.efi',
                               vendor_class=b'HTTPClient')


def test_os_client_gets_no_boot_information():
    assert d.choose_boot(request(m.DISCOVER), BINDING, SETTINGS) is None


def test_reservation_boot_options_win():
    binding = m.Binding(mac=MAC, address=ADDRESS, prefixlen=24,
                        bootfile='custom.efi', tftp_server='192.0.2.7',
                        ipxe_script_url='http://192.0.2.7/node.ipxe',
                        http_boot_url='http://192.0.2.7/node.efi')
    assert d.choose_boot(request(m.DISCOVER, arch=7), binding,
                         SETTINGS) == m.BootReply(
        'pxe', 'custom.efi', next_server='192.0.2.7')
    assert d.choose_boot(request(m.DISCOVER, user_class=b'iPXE'), binding,
                         SETTINGS).filename == 'http://192.0.2.7/node.ipxe'
    assert d.choose_boot(request(m.DISCOVER, vendor_class=b'HTTPClient'),
                         binding,
                         SETTINGS).filename == 'http://192.0.2.7/node.efi'


def test_destination_rules():
    relay = socket.inet_aton('198.51.100.254')
    assert d.destination(request(m.DISCOVER, giaddr=relay),
                         m.Action.OFFER) == ('198.51.100.254', 67, False)
    assert d.destination(request(m.REQUEST, giaddr=relay),
                         m.Action.NAK) == ('198.51.100.254', 67, True)
    assert d.destination(request(m.REQUEST, ciaddr=WRONG),
                         m.Action.NAK) == ('255.255.255.255', 68, True)
    assert d.destination(request(m.REQUEST, ciaddr=ADDRESS),
                         m.Action.ACK) == ('192.0.2.10', 68, False)
    assert d.destination(request(m.INFORM, ciaddr=ADDRESS),
                         m.Action.INFORM_ACK) == ('192.0.2.10', 68, False)
    assert d.destination(request(m.DISCOVER),
                         m.Action.OFFER) == ('255.255.255.255', 68, False)


def test_binding_from_reservation():
    from vmetal_ironic import reservation as res
    binding = m.Binding.from_reservation(res.Reservation(
        mac=MAC, address='192.0.2.10', prefixlen=24, gateway='192.0.2.1',
        dns_servers=('192.0.2.53',), hostname='h',
        boot=res.BootOptions(bootfile='x.efi')))
    assert binding.address == ADDRESS
    assert binding.bootfile == 'x.efi'
    assert binding.dns_servers == ('192.0.2.53',)
