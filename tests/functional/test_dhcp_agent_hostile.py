"""vmetal-dhcp-agent's DHCP side on a hostile L2 (issue 19).

The agent runs in a namespace of its own with a one-address inspection
range on the local store; a victim holds that address (busybox udhcpc);
a hostile namespace forges packets with the victim's MAC in ``chaddr``
(scapy, raw frames on its interface).
"""

import contextlib
import json
import os
import sys
import time

import pytest

from tests.functional import pxe_lab
from vmetal_ironic.dhcp_agent import lease_cache
from vmetal_ironic.lab import observe

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

SERVER = '198.51.100.1'
RANGE = '198.51.100.200'

# Each forged packet: (message type, server identifier or None, ciaddr,
# option 50 or None). Only the two last name the lease as RFC 2131 asks,
# and they name another server.
_FORGE = r'''
import json, sys
from scapy.all import Ether, IP, UDP, BOOTP, DHCP, get_if_hwaddr, sendp
interface, mac, forged = (json.loads(a) for a in sys.argv[1:])
# The frame's own source is the hostile host's (a bridge drops a zero
# one); only chaddr names the victim.
source = get_if_hwaddr(interface)
frames = []
for kind, server_id, ciaddr, requested in forged:
    options = [('message-type', kind)]
    if server_id:
        options.append(('server_id', server_id))
    if requested:
        options.append(('requested_addr', requested))
    frames.append(
        Ether(src=source, dst='ff:ff:ff:ff:ff:ff') / IP(src='0.0.0.0',
                                            dst='255.255.255.255')
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, xid=0x4242, ciaddr=ciaddr,
                chaddr=bytes.fromhex(mac.replace(':', '')) + bytes(10))
        / DHCP(options=options + ['end']))
sendp(frames, iface=interface, verbose=0)
print(json.dumps({'sent': len(frames)}))
'''


@contextlib.contextmanager
def _agent_lab(tmp_path, metrics_port, dhcp_settings):
    """A lab L2 with the agent (TFTP off) on ``SERVER``, its
    ``[vmetal_dhcp_agent]`` given ``dhcp_settings`` lines."""
    lab = pxe_lab.Lab(tmp_path / 'vpx')
    try:
        lab.server_ns, lab.server_if = lab.node('s', f'{SERVER}/24')
        lab.agent = lab.start_agent(
            lab.server_ns, lab.server_if, metrics_port=metrics_port,
            extra='\n'.join([*dhcp_settings, '[vmetal_tftp]',
                              'enabled = false', '']))
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab(tmp_path):
    with _agent_lab(tmp_path, 9571,
                    [f'inspection_range = {RANGE}-{RANGE}']) as lab:
        yield lab


def _forge(lab, ns, interface, mac, forged):
    out = lab.ns_run(ns, sys.executable, '-c', _FORGE, json.dumps(interface),
                     json.dumps(mac), json.dumps(forged)).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_forged_release_and_decline_free_nobody(lab):
    """Review finding 6: a RELEASE or DECLINE with the victim's MAC and no
    server identifier, or ours with an address that is not the victim's,
    or another server's: all ignored and counted; the victim keeps its
    lease, and a new host gets no address (the range has one)."""
    victim_mac = '52:54:00:5e:19:01'
    ns, interface = lab.node('v', mac=victim_mac)
    env = pxe_lab.udhcpc(lab, ns, interface, 'victim')
    assert env is not None and env['ip'] == RANGE, lab.agent.log()[-3000:]
    hostile_ns, hostile_if = lab.node('x', '198.51.100.2/24')
    # The new bridge port forwards once the agent answers a ping.
    observe.wait_for(lambda: lab.ns_run(
        hostile_ns, 'busybox', 'ping', '-c', '1', '-W', '1', SERVER,
        check=False).returncode == 0, 20, what='the hostile host on the L2')
    forged = [
        ('release', None, RANGE, None),
        ('release', SERVER, '198.51.100.99', None),
        ('release', '198.51.100.250', RANGE, None),
        ('decline', None, '0.0.0.0', RANGE),
        ('decline', SERVER, '0.0.0.0', '198.51.100.99'),
        ('decline', SERVER, RANGE, None),
        ('decline', '198.51.100.250', '0.0.0.0', RANGE),
    ]
    _forge(lab, hostile_ns, hostile_if, victim_mac, forged)
    reasons = {
        'release without server identifier': 1,
        "release of an address not the client's": 1,
        'release for another server': 1,
        'decline without server identifier': 1,
        "decline of an address not the client's": 2,
        'decline for another server': 1,
    }
    for reason, count in reasons.items():
        lab.agent.wait_metric(
            f'vmetal_dhcp_ignored_total{{reason="{reason}"}}', count)
    metrics = lab.agent.metrics()
    released = metrics.get(
        'vmetal_dhcp_inspection_leases_total{event="released"}', 0)
    declined = metrics.get(
        'vmetal_dhcp_inspection_leases_total{event="declined"}', 0)
    print(f'{len(forged)} forged RELEASE/DECLINE: ignored '
          f'{sum(reasons.values())} ({reasons}); released {released:.0f}, '
          f'declined {declined:.0f}')
    assert released == 0 and declined == 0
    leases = lab.store.inspection_leases().snapshot()[1]
    assert [(lease.mac, lease.address) for lease in leases] == [
        (victim_mac, RANGE)]
    # A new host finds the range still full.
    ns2, interface2 = lab.node('n', mac='52:54:00:5e:19:02')
    assert pxe_lab.udhcpc(lab, ns2, interface2, 'newcomer', tries=2) is None
    # The victim's own RELEASE, as RFC 2131 asks, is honoured.
    _forge(lab, hostile_ns, hostile_if, victim_mac,
           [('release', SERVER, RANGE, None)])
    lab.agent.wait_metric(
        'vmetal_dhcp_inspection_leases_total{event="released"}', 1)


# DISCOVERs from made-up MACs that will never send a REQUEST.
_PIN = r'''
import json, sys
from scapy.all import Ether, IP, UDP, BOOTP, DHCP, get_if_hwaddr, sendp
interface, macs = (json.loads(a) for a in sys.argv[1:])
source = get_if_hwaddr(interface)
sendp([Ether(src=source, dst='ff:ff:ff:ff:ff:ff')
       / IP(src='0.0.0.0', dst='255.255.255.255') / UDP(sport=68, dport=67)
       / BOOTP(op=1, xid=n, chaddr=bytes.fromhex(mac.replace(':', ''))
               + bytes(10))
       / DHCP(options=[('message-type', 'discover'), 'end'])
       for n, mac in enumerate(macs)], iface=interface, verbose=0)
print(json.dumps({'sent': len(macs)}))
'''


@pytest.fixture
def held_lab(tmp_path):
    with _agent_lab(tmp_path, 9572, [
            f'inspection_range = {RANGE}-198.51.100.201',
            'inspection_offer_hold = 5', 'inspection_clock_skew = 1',
            'dynamic_lease_time = 600',
            # A loaded machine may take longer than the default 0.1 s to
            # have the squatter's answer read: the conflict test would then
            # see the address offered.
            'inspection_conflict_timeout = 1.0']) as lab:
        yield lab


def test_discovers_never_followed_up_pin_the_range_briefly(held_lab):
    """Review findings 15 and 3: two DISCOVERs from made-up MACs fill a
    two-address range for the offer hold (5 s here) plus the skew, not
    for a whole lease (600 s); a real host then gets an address, first
    for what the store holds (the hold), then, renewed, for a lease."""
    lab = held_lab
    hostile_ns, hostile_if = lab.node('x', '198.51.100.2/24')
    observe.wait_for(lambda: lab.ns_run(
        hostile_ns, 'busybox', 'ping', '-c', '1', '-W', '1', SERVER,
        check=False).returncode == 0, 20, what='the hostile host on the L2')
    started = time.monotonic()
    lab.ns_run(hostile_ns, sys.executable, '-c', _PIN,
               json.dumps(hostile_if),
               json.dumps(['02:19:00:00:00:01', '02:19:00:00:00:02']))
    lab.agent.wait_metric(
        'vmetal_dhcp_inspection_leases_total{event="claimed"}', 2)
    ns, interface = lab.node('r', mac='52:54:00:5e:19:03')
    env = None
    tries = 0
    while env is None and time.monotonic() - started < 30:
        tries += 1
        env = pxe_lab.udhcpc(lab, ns, interface, f'real{tries}', tries=2)
    waited = time.monotonic() - started
    assert env is not None, 'the range stayed pinned for 30 s'
    first_lease = int(env['lease'])
    # The REQUEST's renewal in the store is made after its ACK: the next
    # exchange is answered for the renewed lease once it is counted.
    lab.agent.wait_metric(
        'vmetal_dhcp_inspection_leases_total{event="renewed"}', 1)
    again = pxe_lab.udhcpc(lab, ns, interface, 'again')
    expired = lab.agent.metric(
        'vmetal_dhcp_inspection_leases_total{event="expired"}')
    print(f'2 DISCOVERs never followed up pinned a 2-address range for '
          f'{waited:.1f} s (expired {expired:.0f}); the real host got '
          f'{env["ip"]} for {first_lease} s, then {again["lease"]} s')
    assert expired >= 1
    assert first_lease <= 5
    assert 590 <= int(again['lease']) <= 600


def test_a_second_mac_for_a_reserved_address_is_not_served(lab):
    """Review finding 7, the agent's side: the store hands two MACs the
    same address (a wrong store, or a stale reservation); the MAC served
    first keeps it, the other gets nothing and is counted."""
    first, second = '52:54:00:5e:19:11', '52:54:00:5e:19:12'
    lab.reserve(first, '198.51.100.40')
    lab.agent.wait_loaded()
    ns1, if1 = lab.node('f', mac=first)
    env = pxe_lab.udhcpc(lab, ns1, if1, 'first')
    assert env is not None and env['ip'] == '198.51.100.40'
    lab.reserve(second, '198.51.100.40')
    lab.agent.wait_loaded()
    lab.agent.wait_metric('vmetal_dhcp_reservations_address_taken', 1)
    ns2, if2 = lab.node('e', mac=second)
    # Held back, it is a host without a reservation: this lab's agent has
    # an inspection range, which gives it another address.
    other = pxe_lab.udhcpc(lab, ns2, if2, 'second', tries=2)
    assert other is None or other['ip'] != '198.51.100.40'
    env = pxe_lab.udhcpc(lab, ns1, if1, 'first-again')
    assert env is not None and env['ip'] == '198.51.100.40'
    print(f'two MACs reserved 198.51.100.40: {first} served, {second} held '
          f'back (address_taken 1) and got '
          f'{other["ip"] if other else "nothing"}')
    # The first reservation withdrawn, the second is served.
    lab.store.withdraw_reservation(first)
    lab.agent.wait_loaded()
    observe.wait_for(lambda: lab.agent.metric(
        'vmetal_dhcp_reservations_address_taken') == 0, 10,
        what='the held-back reservation served')
    env = pxe_lab.udhcpc(lab, ns2, if2, 'second-now')
    assert env is not None and env['ip'] == '198.51.100.40'


def _mac_trying_first(address):
    """A MAC whose claims try ``address`` first (the walk is a hash of
    the MAC), so the test does not depend on luck."""
    first = lease_cache.address_int(RANGE)
    for n in range(256):
        mac = f'52:54:00:5e:1a:{n:02x}'
        if lease_cache.candidates(mac, first, first + 1, set())[0] == address:
            return mac
    raise AssertionError(f'no MAC tries {address} first')


def test_an_inspection_address_in_use_on_the_l2_is_not_offered(held_lab):
    """Issue 19 item 6: a host nobody reserved it for uses 198.51.100.200
    (configured by hand); the agent's ARP probe finds it, holds it as
    declined, and offers the client the other address."""
    lab = held_lab
    squatter_ns, _ = lab.node('q', f'{RANGE}/24')
    observe.wait_for(lambda: lab.ns_run(
        squatter_ns, 'busybox', 'ping', '-c', '1', '-W', '1', SERVER,
        check=False).returncode == 0, 20, what='the squatter on the L2')
    mac = _mac_trying_first(RANGE)
    ns, interface = lab.node('c', mac=mac)
    env = pxe_lab.udhcpc(lab, ns, interface, 'client')
    assert env is not None, lab.agent.log()[-3000:]
    conflicts = lab.agent.metric(
        'vmetal_dhcp_inspection_leases_total{event="conflict"}')
    print(f'{RANGE} answered ARP: conflicts {conflicts:.0f}; the client '
          f'({mac}, which tries {RANGE} first) got {env["ip"]}')
    assert env['ip'] == '198.51.100.201'
    assert conflicts == 1
    held = {(lease.address, lease.declined)
            for lease in lab.store.inspection_leases().snapshot()[1]}
    assert (RANGE, True) in held
