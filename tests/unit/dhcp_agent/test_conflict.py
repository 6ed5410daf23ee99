import socket
import threading

from vmetal_ironic.dhcp_agent import conflict

MAC = bytes.fromhex('525400001901')


def _reply(sender):
    # An ARP reply from ``sender`` (is-at), as its owner sends it.
    return (MAC + bytes.fromhex('0200000000aa') + b'\x08\x06'
            + conflict._ARP_HEAD + b'\x00\x02' + bytes.fromhex('0200000000aa')
            + socket.inet_aton(sender) + MAC + bytes(4))


def test_the_probe_is_an_rfc_5227_request():
    frame = conflict._request(MAC, '192.0.2.200')
    assert frame[:6] == b'\xff' * 6 and frame[12:14] == b'\x08\x06'
    assert frame[20:22] == b'\x00\x01'                 # request
    assert frame[28:32] == bytes(4)                    # sender 0.0.0.0
    assert frame[38:42] == socket.inet_aton('192.0.2.200')
    # Its own probe (sender 0.0.0.0) is no owner's answer.
    assert conflict.sender_of(frame) is None


def test_sender_of_reads_arp_frames_only():
    assert conflict.sender_of(_reply('192.0.2.200')) == '192.0.2.200'
    assert conflict.sender_of(b'\x00' * 60) is None
    assert conflict.sender_of(_reply('192.0.2.200')[:30]) is None


class _Clock:
    now = 100.0

    def __call__(self):
        return self.now


def test_an_answer_marks_the_address_in_use_and_is_remembered():
    clock = _Clock()
    probe = conflict.ArpProbe('unused0', timeout=2.0, remember=60,
                              clock=clock)
    # No socket: the probe is not sent; the answer is delivered by hand,
    # as the reader thread would.
    timer = threading.Timer(0.05, probe.heard, [_reply('192.0.2.200')])
    timer.start()
    assert probe.in_use('192.0.2.200') is True
    timer.join()
    assert probe.in_use('192.0.2.200') is True      # remembered, no wait
    clock.now += 61
    probe.timeout = 0.01
    assert probe.in_use('192.0.2.200') is False     # forgotten, no answer


def test_silence_means_free_and_is_remembered():
    clock = _Clock()
    probe = conflict.ArpProbe('unused0', timeout=0.01, remember=60,
                              clock=clock)
    assert probe.in_use('192.0.2.201') is False
    assert probe._known['192.0.2.201'] == (False, clock.now + 60)
