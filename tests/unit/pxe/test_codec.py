import socket

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.unit.pxe import helpers
from vmetal_ironic.pxe import codec
from vmetal_ironic.pxe import decisions as d
import contextlib

SERVER = socket.inet_aton('192.0.2.1')
SETTINGS = d.Settings(server_address=SERVER,
                      boot_files=((0, 'undionly.kpxe'), (7, 'snponly.efi')),
                      ipxe_script_url='http://192.0.2.1/boot.ipxe',
                      lease_time=7200)
BINDING = d.Binding(mac=helpers.MAC, address=socket.inet_aton('192.0.2.10'),
                    prefixlen=24, gateway='192.0.2.254',
                    dns_servers=('192.0.2.53', '192.0.2.54'), hostname='n1')


def test_parse_reads_what_scapy_wrote():
    data = helpers.packet('request', xid=0xdeadbeef, flags=0x8000,
                          giaddr='198.51.100.1', options=[
                              ('requested_addr', '192.0.2.10'),
                              ('server_id', '192.0.2.1'),
                              (93, b'\x00\x07'),
                              ('vendor_class_id', b'PXEClient:Arch:00007'),
                              (77, b'iPXE'), (175, b'\x01\x01\x01'),
                              ('client_id', b'\x01abcdef')])
    request = codec.parse(data)
    assert request.message_type == d.REQUEST
    assert request.xid == bytes.fromhex('deadbeef')
    assert request.flags == 0x8000
    assert request.giaddr == socket.inet_aton('198.51.100.1')
    assert request.mac == helpers.MAC
    assert request.requested_address == socket.inet_aton('192.0.2.10')
    assert request.server_id == SERVER
    assert request.arch == 7
    assert request.is_ipxe and request.is_pxe_client
    assert request.client_id == b'\x3d\x07\x01abcdef'


def test_arch_from_vendor_class_when_option_93_is_missing():
    data = helpers.packet(options=[('vendor_class_id',
                                    b'PXEClient:Arch:00007:UNDI:003016')])
    assert codec.parse(data).arch == 7


def _reply(kind='discover', options=(), **kwargs):
    request = codec.parse(helpers.packet(kind, options=options, **kwargs))
    decision = d.decide(request, BINDING, SETTINGS)
    builder = codec.ReplyBuilder(SETTINGS)
    builder.prepare([BINDING])
    return request, decision, builder.build(request, decision)


def test_offer_has_the_reservation():
    _, decision, data = _reply(xid=77)
    assert decision.action is d.Action.OFFER
    reply, options = helpers.options_of(data)
    assert len(data) >= codec.MIN_REPLY_LENGTH
    assert reply.op == 2 and reply.xid == 77
    assert reply.yiaddr == '192.0.2.10'
    assert reply.chaddr[:6] == bytes.fromhex('525400aabb01')
    assert options['message-type'] == 2
    assert options['server_id'] == '192.0.2.1'
    assert options['lease_time'] == 7200
    assert options['renewal_time'] == 3600
    assert options['subnet_mask'] == '255.255.255.0'
    assert options['router'] == '192.0.2.254'
    assert options['name_server'] == ('192.0.2.53', '192.0.2.54')
    assert options['hostname'] == b'n1'
    assert 'boot-file-name' not in options


def test_ack_for_pxe_client_carries_boot_file_and_next_server():
    _, decision, data = _reply('request', options=[
        ('requested_addr', '192.0.2.10'), ('server_id', '192.0.2.1'),
        (93, b'\x00\x07')], flags=0x8000)
    assert decision.action is d.Action.ACK
    reply, options = helpers.options_of(data)
    assert options['message-type'] == 5
    assert reply.flags == 0x8000
    assert reply.siaddr == '192.0.2.1'
    assert reply.file.rstrip(b'\0') == b'snponly.efi'
    assert options['boot-file-name'] == b'snponly.efi'
    assert options['tftp_server_name'] == b'192.0.2.1'


def test_ipxe_reply_has_script_and_no_pxedhcp():
    _, _, data = _reply(options=[(77, b'iPXE')])
    _, options = helpers.options_of(data)
    assert options['boot-file-name'] == b'http://192.0.2.1/boot.ipxe'
    assert data.find(b'\xaf\x03\xb0\x01\x01') > 240


def test_relay_information_and_client_id_are_echoed():
    _, _, data = _reply(giaddr='198.51.100.1', options=[
        ('client_id', b'\x01xyz'), ('relay_agent_information', b'\x01\x02ab')])
    reply, options = helpers.options_of(data)
    assert reply.giaddr == '198.51.100.1'
    assert options['client_id'] == b'\x01xyz'
    assert b'\x52\x04\x01\x02ab\xff' in data


def test_nak_has_no_address():
    request, decision, _data = _reply('request', options=[
        ('requested_addr', '192.0.2.99'), ('server_id', '192.0.2.1')])
    assert decision.action is d.Action.NAK
    reply, options = helpers.options_of(
        codec.ReplyBuilder(SETTINGS).build(request, decision, True))
    assert options['message-type'] == 6
    assert reply.yiaddr == '0.0.0.0' and reply.flags == 0x8000
    assert reply.chaddr[:6] == bytes.fromhex('525400aabb01')


def test_inform_ack_has_no_lease():
    _, decision, data = _reply('inform', ciaddr='192.0.2.10')
    reply, options = helpers.options_of(data)
    assert decision.action is d.Action.INFORM_ACK
    assert reply.ciaddr == '192.0.2.10' and reply.yiaddr == '0.0.0.0'
    assert 'lease_time' not in options


def test_prepare_drops_old_templates():
    builder = codec.ReplyBuilder(SETTINGS)
    assert builder.prepare([BINDING]) == 1
    assert builder.prepare([BINDING]) == 0
    other = d.Binding(mac='52:54:00:aa:bb:02', address=b'\xc0\0\2\x0b',
                      prefixlen=24)
    assert builder.prepare([other]) == 1
    assert builder.prepare([other, BINDING]) == 1


GOOD = helpers.packet(options=[(93, b'\x00\x07')])


@pytest.mark.parametrize('data,reason', [
    (b'', 'truncated'),
    (GOOD[:243], 'truncated'),
    (GOOD + bytes(1300), 'oversize'),
    (b'\x02' + GOOD[1:], 'not BOOTREQUEST'),
    (GOOD[:1] + b'\x06' + GOOD[2:], 'not Ethernet'),
    (GOOD[:2] + b'\x10' + GOOD[3:], 'not Ethernet'),
    (GOOD[:236] + b'\0\0\0\0' + GOOD[240:], 'magic cookie'),
    (GOOD[:-1], 'no end option'),
    (GOOD[:240] + b'\x35\x09\x01\xff', 'runs past the end'),
    (GOOD[:240] + b'\x0c\x02hi\xff', 'message type'),
    (GOOD[:240] + b'\x35\x02\x01\x01\xff', 'message type'),
    (GOOD[:240] + b'\x35\x01\x03\x32\x03\x01\x02\x03\xff', 'option 50'),
    (GOOD[:240] + b'\x35\x01\x01\x5d\x03\x00\x00\x07\xff', 'option 93'),
    (GOOD[:240] + b'\x35\x01\x01\x0c', 'has no length'),
])
def test_malformed(data, reason):
    with pytest.raises(codec.Malformed, match=reason):
        codec.parse(data)


@hsettings(max_examples=400, deadline=None)
@given(st.binary(max_size=1600))
def test_fuzz_random_bytes_never_crash(data):
    with contextlib.suppress(codec.Malformed):
        codec.parse(data)


@hsettings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=1))
def test_fuzz_options_after_valid_header(options, with_type):
    data = GOOD[:240] + (b'\x35\x01\x01' if with_type else b'') + options
    try:
        request = codec.parse(data)
    except codec.Malformed:
        return
    # Whatever parses must be answerable without error.
    decision = d.decide(request, BINDING, SETTINGS)
    if decision.action in (d.Action.OFFER, d.Action.ACK, d.Action.NAK,
                           d.Action.INFORM_ACK):
        codec.ReplyBuilder(SETTINGS).build(request, decision)


def test_describe_never_raises():
    assert isinstance(codec.describe(b'\x01\x02'), str)
    assert 'BOOTP' in codec.describe(GOOD) or 'DHCP' in codec.describe(GOOD)
