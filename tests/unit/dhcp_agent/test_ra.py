import struct

from scapy.layers import inet6

from vmetal_ironic.dhcp_agent import ra


def test_advertisement_has_no_prefix_and_no_lifetime():
    data = ra.build_advertisement('52:54:00:aa:bb:01')
    packet = inet6.ICMPv6ND_RA(data)
    assert packet.type == 134 and packet.code == 0
    # The kernel fills the checksum of raw ICMPv6 sockets.
    assert packet.cksum == 0
    assert packet.routerlifetime == 0 and packet.M == 0 and packet.O == 0
    assert packet.haslayer(inet6.ICMPv6NDOptSrcLLAddr)
    assert packet[inet6.ICMPv6NDOptSrcLLAddr].lladdr == '52:54:00:aa:bb:01'
    assert not packet.haslayer(inet6.ICMPv6NDOptPrefixInfo)


def test_filter_passes_only_router_solicitations():
    words = struct.unpack('=8I', ra._solicitation_filter())

    def blocked(kind):
        return bool(words[kind >> 5] & (1 << (kind & 31)))

    assert not blocked(133)
    assert all(blocked(kind) for kind in (128, 129, 134, 135, 136))


def test_answers_wait_a_random_delay_and_keep_3_s_between_ras():
    # RFC 4861 6.2.6: answer after a random 0..0.5 s, never sooner than 3 s
    # after the previous multicast RA; never later than already due.
    assert ra.answer_time(100.0, 90.0, 110.0, 0.3) == 100.3
    assert ra.answer_time(100.0, 99.0, 110.0, 0.3) == 102.0
    assert ra.answer_time(100.0, 99.0, 101.0, 0.3) == 101.0
    assert ra.answer_time(100.0, None, 110.0, 0.0) == 100.0


def test_interval_is_never_below_min_delay_between_ras():
    advertiser = ra.RouterAdvertiser('lo', interval=1.0)
    assert advertiser.interval == ra.MIN_DELAY_BETWEEN_RAS
