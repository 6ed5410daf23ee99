import random
import struct
import time

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests import tftp_peer
from vmetal_ironic.dhcp_agent import tftp_packet as packet
from vmetal_ironic.dhcp_agent import tftp_session


def test_parse_request_with_options():
    request = packet.parse_request(tftp_peer.rrq(
        'boot/snponly.efi', b'OCTET', TSize=0, blksize=1468, windowsize=4))
    assert request.opcode == packet.RRQ
    assert request.filename == 'boot/snponly.efi'
    assert request.mode == 'octet'
    assert request.options == {'tsize': '0', 'blksize': '1468',
                               'windowsize': '4'}


def test_first_of_a_repeated_option_wins():
    data = tftp_peer.rrq('a') + b'blksize\x001024\x00BLKSIZE\x00512\x00'
    assert packet.parse_request(data).options == {'blksize': '1024'}


@pytest.mark.parametrize('data', [
    b'', b'\0', b'\0\x01', b'\0\x04\0', b'\0\x01a\0octet',
    b'\0\x01\0octet\0', b'\0\x01a\0\0', b'\0\x01a\0mail\0',
    b'\0\x01\xff\xfeboot.efi\0octet\0',
    b'\0\x01boot.efi\0octet\0bl\xffksize\x00512\x00',
    b'\0\x01boot.efi\0octet\0blksize\0',
    b'\0\x01' + b'a' * 300 + b'\0octet\0',
    b'\0\x03\0\x01data',
])
def test_malformed_requests_are_refused(data):
    with pytest.raises(packet.BadPacket) as caught:
        packet.parse_request(data)
    assert caught.value.code == packet.ILLEGAL_OPERATION


def _negotiate(size=100_000, **options):
    return packet.negotiate(packet.parse_request(
        tftp_peer.rrq('f', **options)), size, timeout=5)


def test_negotiation_grants_clamps_and_answers_tsize():
    granted = _negotiate(tsize=0, blksize=65535, windowsize=65535,
                         timeout=2, foo='bar')
    assert granted.blksize == packet.MAX_BLKSIZE
    assert granted.timeout == 2
    assert granted.windowsize == 65535
    assert granted.oack == (b'\0\x06blksize\x0065464\x00tsize\x00100000\x00'
                            b'timeout\x002\x00windowsize\x0065535\x00')
    plain = _negotiate()
    assert (plain.blksize, plain.windowsize, plain.oack) == (512, 1, None)
    limited = packet.negotiate(packet.parse_request(
        tftp_peer.rrq('f', windowsize=16)), 10, 5, max_windowsize=4)
    assert limited.windowsize == 4


@pytest.mark.parametrize('options', [
    {'blksize': 'abc'}, {'blksize': '7'}, {'blksize': '-512'},
    {'blksize': '1' * 11}, {'tsize': 'x'}, {'timeout': '0'},
    {'timeout': '256'}, {'windowsize': '0'}, {'windowsize': '65536'},
    {'blksize': ' 512'},
])
def test_bad_option_values_are_refused_with_code_8(options):
    with pytest.raises(packet.BadPacket) as caught:
        _negotiate(**options)
    assert caught.value.code == packet.BAD_OPTION


def test_builders():
    assert packet.error(1, 'file not found') == b'\0\x05\0\x01file not found\0'
    assert packet.data_header(65537) == b'\0\x03\0\x01'
    assert packet.parse_ack(b'\0\x04\x01\x02') == 0x102
    assert packet.parse_ack(b'\0\x04\x01\x02pad') == 0x102
    assert packet.parse_ack(b'\0\x04\0') is None
    assert packet.parse_ack(b'\0\x03\0\x01') is None


_SEEDS = [
    tftp_peer.rrq('snponly.efi', tsize=0, blksize=1468, windowsize=4),
    tftp_peer.rrq('ipxe.efi', b'netascii', timeout=3),
    tftp_peer.rrq('a/b/c', blksize=65535),
    b'\0\x02up.bin\0octet\0',
    b'\0\x04\0\x01', b'\0\x05\0\x01oops\0',
]
_INTERESTING = [0, 1, 0x20, 0x7e, 0x7f, 0x80, 0xff, ord('0'), ord('9')]


def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.3 and data:
            data[rng.randrange(len(data))] = rng.choice(_INTERESTING)
        elif choice < 0.5 and data:
            del data[rng.randrange(len(data)):][:rng.randint(1, 8)]
        elif choice < 0.7:
            data[rng.randint(0, len(data)):rng.randint(0, len(data))] = (
                rng.choice([b'\0', b'blksize\0', b'99999999999\0', b'\xff',
                            b'windowsize\x000\0', b'tsize\0-1\0']))
        elif choice < 0.85:
            data = bytearray(struct.pack('!H', rng.randrange(9))) + data[2:]
        else:
            data = bytearray(rng.randbytes(rng.randint(0, 40)))
    return bytes(data)


def test_fuzz_request_parser_raises_only_its_own_error():
    """120,000 mutated and random datagrams through parse and negotiate:
    each either yields a request and a transfer within the RFC limits or
    raises BadPacket; nothing else. Bounded at 60 s whatever the machine."""
    rng = random.Random(11)
    cases = refused = 0
    give_up = time.monotonic() + 60
    while cases < 120_000 and time.monotonic() < give_up:
        data = _mutate(rng, rng.choice(_SEEDS))
        cases += 1
        try:
            request = packet.parse_request(data)
            transfer = packet.negotiate(request, rng.randrange(1 << 40), 5)
        except packet.BadPacket as exc:
            assert exc.code in (packet.ILLEGAL_OPERATION, packet.BAD_OPTION)
            refused += 1
            continue
        assert request.filename.isprintable() and request.filename.isascii()
        assert packet.MIN_BLKSIZE <= transfer.blksize <= packet.MAX_BLKSIZE
        assert 1 <= transfer.windowsize <= packet.MAX_WINDOWSIZE
        assert 1 <= transfer.timeout <= packet.MAX_TIMEOUT
    assert cases >= 100_000, f'only {cases} cases in 60 s'
    # Both outcomes were exercised, so the mutations reach the checks.
    assert 0 < refused < cases


_VALUES = st.one_of(st.integers(min_value=0, max_value=70000).map(str),
                    st.text(alphabet='0123456789x -+', min_size=1,
                            max_size=12))


@hsettings(max_examples=800, deadline=None)
@given(options=st.dictionaries(
    st.sampled_from(['blksize', 'tsize', 'timeout', 'windowsize', 'BlkSize',
                     'TIMEOUT', 'multicast', 'utimeout']),
    _VALUES, max_size=6),
    max_blksize=st.integers(min_value=8, max_value=65464),
    max_windowsize=st.integers(min_value=1, max_value=64),
    max_timeout=st.integers(min_value=1, max_value=255))
def test_fuzz_option_combinations_stay_within_the_server_limits(
        options, max_blksize, max_windowsize, max_timeout):
    """Issue 19, fuzzed: any mix of options and limits either is refused
    with code 8 or grants nothing above the limits, echoes in the OACK
    exactly what it granted, and never grants a timeout above
    max_timeout (it is left out instead)."""
    request = packet.parse_request(tftp_peer.rrq('f', **options))
    try:
        transfer = packet.negotiate(request, 1234, 5, max_blksize=max_blksize,
                                    max_windowsize=max_windowsize,
                                    max_timeout=max_timeout)
    except packet.BadPacket as exc:
        assert exc.code == packet.BAD_OPTION
        return
    # Without the option, RFC 1350's 512 bytes (not negotiable down).
    assert (transfer.blksize == packet.DEFAULT_BLKSIZE
            or packet.MIN_BLKSIZE <= transfer.blksize <= max_blksize)
    assert 1 <= transfer.windowsize <= max_windowsize
    assert transfer.timeout == 5 or transfer.timeout <= max_timeout
    granted = {}
    if transfer.oack is not None:
        fields = transfer.oack[2:].split(b'\0')[:-1]
        granted = {fields[i].decode(): int(fields[i + 1])
                   for i in range(0, len(fields), 2)}
    assert set(granted) <= {'blksize', 'tsize', 'timeout', 'windowsize'}
    assert granted.get('blksize', packet.DEFAULT_BLKSIZE) == transfer.blksize
    assert granted.get('windowsize', 1) == transfer.windowsize
    assert granted.get('timeout', transfer.timeout) == transfer.timeout
    if 'timeout' in transfer.declined:
        assert 'timeout' not in granted and transfer.timeout == 5
    # Whatever was granted, a peer that answers the OACK (or nothing) and
    # then falls silent draws at most the unproven budget of DATA.
    sent = []
    size = 3 * 1024 * 1024
    session = tftp_session.Session(
        ('192.0.2.9', 4000), sent.append,
        tftp_session._Cached(bytes(size)), size, transfer, retries=3,
        now=0.0)
    session.start(0.0)
    session.on_datagram(tftp_peer.ack(0), 0.0)
    now = 0.0
    while not session.done:
        now += transfer.timeout
        session.on_deadline(now)
    data = sum(len(d) for d in sent if d[:2] == b'\0\x03')
    assert data <= max(tftp_session.UNPROVEN_BYTES, transfer.blksize + 4)
