import socket

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.unit.dhcp_agent import helpers
from vmetal_ironic.dhcp_agent import codec
from vmetal_ironic.dhcp_agent import decisions as d
from vmetal_ironic.dhcp_agent import messages as m
import contextlib

SERVER = socket.inet_aton('192.0.2.1')
SETTINGS = m.Settings(server_address=SERVER,
                      boot_files=((0, 'undionly.kpxe'), (7, 'snponly.efi')),
                      ipxe_script_url='http://192.0.2.1/boot.ipxe',
                      lease_time=7200)
BINDING = m.Binding(mac=helpers.MAC, address=socket.inet_aton('192.0.2.10'),
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
    assert request.message_type == m.REQUEST
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
    assert decision.action is m.Action.OFFER
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
    assert decision.action is m.Action.ACK
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
    assert decision.action is m.Action.NAK
    reply, options = helpers.options_of(
        codec.ReplyBuilder(SETTINGS).build(request, decision, True))
    assert options['message-type'] == 6
    assert reply.yiaddr == '0.0.0.0' and reply.flags == 0x8000
    assert reply.chaddr[:6] == bytes.fromhex('525400aabb01')


def test_inform_ack_has_no_lease():
    _, decision, data = _reply('inform', ciaddr='192.0.2.10')
    reply, options = helpers.options_of(data)
    assert decision.action is m.Action.INFORM_ACK
    assert reply.ciaddr == '192.0.2.10' and reply.yiaddr == '0.0.0.0'
    assert 'lease_time' not in options


def test_prepare_drops_old_templates():
    builder = codec.ReplyBuilder(SETTINGS)
    assert builder.prepare([BINDING]) == (1, {})
    assert builder.prepare([BINDING]) == (0, {})
    other = m.Binding(mac='52:54:00:aa:bb:02', address=b'\xc0\0\2\x0b',
                      prefixlen=24)
    assert builder.prepare([other]) == (1, {})
    assert builder.prepare([other, BINDING]) == (1, {})


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
    if decision.action in (m.Action.OFFER, m.Action.ACK, m.Action.NAK,
                           m.Action.INFORM_ACK):
        codec.ReplyBuilder(SETTINGS).build(request, decision)


def test_describe_never_raises():
    assert isinstance(codec.describe(b'\x01\x02'), str)
    assert 'BOOTP' in codec.describe(GOOD) or 'DHCP' in codec.describe(GOOD)


def _walk(data):
    """``[(code, value)]`` of a reply's options, read independently of the
    codec (every instance, in order)."""
    index, found = 240, []
    while data[index] != 255:
        if data[index] == 0:
            index += 1
            continue
        length = data[index + 1]
        found.append((data[index], data[index + 2:index + 2 + length]))
        index += 2 + length
    return found


def test_split_relay_information_is_echoed_whole_and_last():
    # RFC 3046 2.2 / RFC 3396: option 82 split over two instances.
    _, _, data = _reply(giaddr='198.51.100.1', options=[
        (82, b'\x01\x02ab'), (12, b'x'), (82, b'\x02\x02cd')])
    options = _walk(data)
    assert [v for c, v in options if c == 82] == [b'\x01\x02ab',
                                                   b'\x02\x02cd']
    assert [c for c, _ in options][-2:] == [82, 82]


def _binding(**kwargs):
    fields = {'mac': '52:54:00:aa:bb:01', 'address': BINDING.address,
              'prefixlen': 24, 'gateway': '192.0.2.254',
              'dns_servers': ('192.0.2.53',), 'hostname': 'h' * 60}
    fields.update(kwargs)
    return m.Binding(**fields)


def _build(binding, options, settings=SETTINGS, **kwargs):
    request = codec.parse(helpers.packet(options=options, **kwargs))
    decision = d.decide(request, binding, settings)
    return codec.ReplyBuilder(settings).build(request, decision)


LONG_URL = 'http://192.0.2.1/' + 'u' * 238   # 255 bytes
IPXE_SETTINGS = m.Settings(server_address=SERVER, ipxe_script_url=LONG_URL)
CLIENT_ID = (61, b'\x01' + b'c' * 18)
RELAY = (82, b'\x01\x20' + b'r' * 32 + b'\x02\x20' + b's' * 32)


def test_reply_fits_576_bytes_without_option_57():
    # A 255-byte iPXE URL, a 19-byte client id and a relay's option 82 gave
    # a 694-byte datagram.
    data = _build(_binding(), [(77, b'iPXE'), CLIENT_ID, (82, b'\x01\x02ab')],
                  settings=IPXE_SETTINGS, giaddr='198.51.100.1')
    assert len(data) + codec.IP_UDP_HEADERS <= 576
    codes = [c for c, _ in _walk(data)]
    # What the boot needs stays: lease, mask, the script URL, the relay's
    # option 82 (last).
    assert {53, 54, 51, 1, 67} <= set(codes) and codes[-1] == 82
    assert dict(_walk(data))[67] == LONG_URL.encode()
    # What goes first: the echoed client id, then the host name.
    assert 61 not in codes and 12 not in codes


def test_reply_that_cannot_fit_keeps_what_the_boot_needs():
    # A 255-byte URL plus 68 bytes of relay information cannot fit in 576
    # bytes whatever is dropped (clients that need it, iPXE and UEFI, send
    # option 57); the reply keeps the essentials and the server counts it.
    data = _build(_binding(), [(77, b'iPXE'), CLIENT_ID, RELAY],
                  settings=IPXE_SETTINGS, giaddr='198.51.100.1')
    codes = [c for c, _ in _walk(data)]
    assert codes == [53, 54, 51, 1, 67, 82]


def test_option_57_lets_a_reply_grow():
    options = [(77, b'iPXE'), CLIENT_ID, RELAY, (57, (1500).to_bytes(2,
                                                               'big'))]
    data = _build(_binding(), options, settings=IPXE_SETTINGS,
                  giaddr='198.51.100.1')
    assert len(data) + codec.IP_UDP_HEADERS > 576
    codes = [c for c, _ in _walk(data)]
    assert 61 in codes and 12 in codes


def test_huge_client_id_is_dropped_before_anything_else():
    data = _build(_binding(), [(61, b'\x01' + b'c' * 254)])
    assert len(data) + codec.IP_UDP_HEADERS <= 576
    assert 61 not in dict(_walk(data)) and 12 in dict(_walk(data))


def test_short_boot_file_leaves_option_67_first_when_over_the_limit():
    request = codec.parse(helpers.packet(options=[(93, b'\x00\x07'),
                                                  RELAY]))
    data = codec.fit(_build(_binding(), [(93, b'\x00\x07'), RELAY]), 300)
    assert 67 not in dict(_walk(data))
    assert data[108:119] == b'snponly.efi' or data[108:121] \
        == b'undionly.kpxe'
    assert request.relay_info and 82 in dict(_walk(data))


def test_ntp_servers_go_in_option_42():
    data = _build(_binding(ntp_servers=('192.0.2.123', '192.0.2.124')), [])
    assert dict(_walk(data))[42] == bytes([192, 0, 2, 123, 192, 0, 2, 124])


def test_tftp_server_by_name_is_option_66_only():
    data = _build(_binding(tftp_server='tftp.example'), [(93, b'\x00\x07')])
    assert dict(_walk(data))[66] == b'tftp.example'
    assert data[20:24] == bytes(4)


def test_dynamic_templates_are_shared_and_bounded():
    builder = codec.ReplyBuilder(SETTINGS)
    for index in range(3000):
        mac = f'02:00:00:00:{index >> 8:02x}:{index & 255:02x}'
        binding = _binding(mac=mac, address=bytes([198, 18, index >> 8,
                                                   index & 255]),
                           hostname=None, dynamic=True)
        request = codec.parse(helpers.packet(mac=mac))
        data = builder.build(request, d.decide(request, binding, SETTINGS))
        reply, _ = helpers.options_of(data)
        assert reply.yiaddr == f'198.18.{index >> 8}.{index & 255}'
        assert reply.chaddr[:6] == bytes.fromhex(mac.replace(':', ''))
    assert len(builder._shared) == 1
    assert len(builder._templates) == 0


def test_inform_never_builds_with_scapy_once_prepared(monkeypatch):
    builder = codec.ReplyBuilder(SETTINGS)
    builder.prepare([BINDING])
    builds = []
    real = codec._scapy_bytes
    monkeypatch.setattr(codec, '_scapy_bytes',
                        lambda *a, **k: builds.append(1) or real(*a, **k))
    request = codec.parse(helpers.packet('inform', ciaddr='192.0.2.10'))
    decision = d.decide(request, BINDING, SETTINGS)
    first = builder.build(request, decision)
    for _ in range(100):
        assert builder.build(request, decision) == first
    assert builds == []
    assert 51 not in dict(_walk(first))


def test_prepare_builds_once_per_option_set_and_matches_a_scapy_build(
        monkeypatch):
    shared = [_binding(mac=f'52:54:00:aa:bb:{n:02x}', hostname=None,
                       address=socket.inet_aton(f'192.0.2.{20 + n}'))
              for n in range(5)]
    named = [_binding(mac=f'52:54:00:aa:cc:{n:02x}', hostname=f'h{n}',
                      address=socket.inet_aton(f'192.0.2.{40 + n}'))
             for n in range(2)]
    builder = codec.ReplyBuilder(SETTINGS)
    builds = []
    real = codec._scapy_bytes
    monkeypatch.setattr(codec, '_scapy_bytes',
                        lambda *a, **k: builds.append(1) or real(*a, **k))
    assert builder.prepare(shared + named) == (7, {})
    assert len(builds) == 3     # one for the five alike, one per host name
    monkeypatch.setattr(codec, '_scapy_bytes', real)
    for binding in shared + named:
        assert builder._templates[(binding, False)] == builder._template(
            binding)


def test_prepare_rejects_a_binding_it_cannot_encode_and_keeps_the_rest():
    bad = _binding(mac='52:54:00:aa:bb:02', prefixlen=40)
    built, rejected = codec.ReplyBuilder(SETTINGS).prepare([BINDING, bad])
    assert built == 1
    assert list(rejected) == ['52:54:00:aa:bb:02']


def test_inform_template_cut_from_the_offer_matches_a_scapy_build():
    for binding in (BINDING, _binding(ntp_servers=('192.0.2.123',)),
                    _binding(hostname=None, gateway=None, dns_servers=())):
        builder = codec.ReplyBuilder(SETTINGS)
        builder.prepare([binding])
        cut = builder._inform_template(binding, (binding, True))
        assert cut == builder._template(binding, inform=True)


def _raw_option(code, value):
    return bytes([code, len(value)]) + value


ESSENTIAL = {53, 54, 51, 1, 60, 82}


@hsettings(max_examples=300, deadline=None)
@given(client_id=st.binary(min_size=0, max_size=254),
       relay=st.lists(st.binary(min_size=1, max_size=120), max_size=3),
       hostname=st.one_of(st.none(), st.text('abc', min_size=1,
                                              max_size=255)),
       url_size=st.integers(min_value=10, max_value=255),
       max_size=st.sampled_from([0, 100, 576, 800, 1500, 65535]),
       kind=st.sampled_from(['discover', 'inform']),
       ipxe=st.booleans())
def test_fuzz_reply_size_and_shape(client_id, relay, hostname, url_size,
                                   max_size, kind, ipxe):
    url = 'http://192.0.2.1/' + 'u' * (url_size - 17)
    settings = m.Settings(server_address=SERVER, ipxe_script_url=url,
                          boot_files=((7, 'snponly.efi'),))
    binding = _binding(hostname=hostname, ntp_servers=('192.0.2.123',))
    options = b'\x35\x01' + bytes([1 if kind == 'discover' else 8])
    options += _raw_option(93, b'\x00\x07')
    if ipxe:
        options += _raw_option(77, b'iPXE')
    if client_id:
        options += _raw_option(61, client_id)
    for part in relay:
        options += _raw_option(82, part)
    if max_size:
        options += _raw_option(57, max_size.to_bytes(2, 'big'))
    header = bytearray(helpers.packet()[:240])
    header[24:28] = socket.inet_aton('198.51.100.1')    # relayed
    if kind == 'inform':
        header[12:16] = binding.address
    request = codec.parse(bytes(header) + options + b'\xff')
    decision = d.decide(request, binding, settings)
    data = codec.ReplyBuilder(settings).build(request, decision)
    found = _walk(data)
    codes = [c for c, _ in found]
    # Well formed: 53 first, no option twice but 82, 82 last and
    # byte-identical to what the relay sent.
    assert codes[0] == 53
    assert len([c for c in codes if c != 82]) == len(
        {c for c in codes if c != 82})
    echoed = [v for c, v in found if c == 82]
    assert echoed == relay
    if relay:
        assert codes[-len(relay):] == [82] * len(relay)
    assert {54, 1} <= set(codes)
    assert (51 in codes) == (kind == 'discover')
    # Boot information survives: in option 67 or the file field.
    assert 67 in codes or data[108] != 0
    limit = codec.reply_limit(request)
    end = 240 + sum(2 + len(v) for _, v in found) + 1
    if end > limit:
        # Only what cannot go is left.
        assert set(codes) <= ESSENTIAL | {67, 66}


_ADDRESS_BYTES = st.one_of(
    st.sampled_from([SERVER, BINDING.address, socket.inet_aton('192.0.2.2'),
                     m.ZERO_ADDRESS]),
    st.binary(min_size=4, max_size=4))


@hsettings(max_examples=600, deadline=None)
@given(kind=st.sampled_from([4, 7]),          # DECLINE, RELEASE
       server_id=st.one_of(st.none(), _ADDRESS_BYTES,
                           st.binary(max_size=8)),
       ciaddr=_ADDRESS_BYTES,
       requested=st.one_of(st.none(), _ADDRESS_BYTES, st.binary(max_size=8)),
       extra=st.binary(max_size=40))
def test_fuzz_release_and_decline(kind, server_id, ciaddr, requested, extra):
    """Review finding 6, fuzzed: whatever a RELEASE or DECLINE carries
    (option 54 and 50 of any length, any ciaddr, trailing bytes), it is
    acted on only when it names this server and the client's address in
    the field RFC 2131 gives it; everything else is ignored or refused as
    malformed, never answered."""
    options = bytes([53, 1, kind])
    if server_id is not None:
        options += bytes([54, len(server_id)]) + server_id
    if requested is not None:
        options += bytes([50, len(requested)]) + requested
    data = bytearray(GOOD[:240])
    data[12:16] = ciaddr
    data = bytes(data) + options + extra + b'\xff'
    try:
        request = codec.parse(data)
    except codec.Malformed:
        return
    decision = d.decide(request, BINDING, SETTINGS)
    if request.message_type not in (m.RELEASE, m.DECLINE):
        return      # the trailing bytes carried another option 53
    named = (request.ciaddr if request.message_type == m.RELEASE
             else request.requested_address)
    honoured = (request.server_id == SERVER and named == BINDING.address)
    expected = m.Action.NO_REPLY if honoured else m.Action.IGNORE
    assert decision.action is expected, (request, decision)
