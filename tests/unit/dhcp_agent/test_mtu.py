from vmetal_ironic.dhcp_agent import mtu


def test_loopback_mtu_by_address_and_by_name():
    assert mtu.interface_mtu('127.0.0.1') == mtu.named_mtu('lo') > 1500


def test_unknown_address_or_interface():
    assert mtu.interface_mtu('0.0.0.0') is None
    assert mtu.named_mtu('no-such-if0') is None


def test_max_blksize_is_the_mtu_less_headers_within_the_ceiling():
    loopback = mtu.named_mtu('lo')
    assert mtu.max_blksize('127.0.0.1', 70000) == loopback - 32
    assert mtu.max_blksize('127.0.0.1', 1468) == 1468
    # Unknown interface: the ceiling.
    assert mtu.max_blksize('0.0.0.0', 65464) == 65464
    assert mtu.max_blksize('0.0.0.0', 65464, 'lo') == min(65464,
                                                          loopback - 32)
