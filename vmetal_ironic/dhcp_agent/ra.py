"""IPv6 router advertisements that end iPXE's IPv6 wait.

iPXE waits ~13 s for IPv6 autoconfiguration on a link where no router
answers. An advertisement without a prefix, with router lifetime 0 and
no M/O flags tells it there is nothing to configure: no address, no
default route, no DHCPv6, so nothing on the link changes. It is sent on
start, periodically, and in answer to router solicitations, from a raw
ICMPv6 socket bound to the provisioning interface. The packet is built
once with scapy; the kernel fills in the ICMPv6 checksum.

Timing follows RFC 4861 section 6.2.6: advertisements (all multicast) are
at least ``MIN_DELAY_BETWEEN_RAS`` (3 s) apart, and an answer to a
solicitation waits a random 0..``MAX_RA_DELAY_TIME`` (0.5 s) so several
routers do not answer at once; any number of solicitations in that time
get one advertisement.
"""

import random
import select
import socket
import struct
import threading
import time

from oslo_log import log
from scapy.layers import inet6

LOG = log.getLogger(__name__)

ALL_NODES = 'ff02::1'
ALL_ROUTERS = 'ff02::2'
ROUTER_SOLICITATION = 133
ICMP6_FILTER = 1
#: RFC 4861 section 10: least seconds between two multicast RAs.
MIN_DELAY_BETWEEN_RAS = 3.0
#: RFC 4861 section 10: most seconds an answer to a solicitation waits.
MAX_RA_DELAY_TIME = 0.5


def answer_time(now, last_sent, scheduled, delay):
    """When to send the advertisement answering a solicitation seen at
    ``now`` (RFC 4861 6.2.6).

    :param last_sent: when the last advertisement went out (or ``None``).
    :param scheduled: when the next one is due already.
    :param delay: the random delay, 0..``MAX_RA_DELAY_TIME``.
    :returns: the new due time: never later than ``scheduled``, never
        sooner than 3 s after ``last_sent``.
    """
    due = now + delay
    if last_sent is not None:
        due = max(due, last_sent + MIN_DELAY_BETWEEN_RAS)
    return min(scheduled, due)


def interface_mac(interface):
    """:returns: the MAC of ``interface`` from sysfs.

    :raises OSError: no such interface.
    """
    with open(f'/sys/class/net/{interface}/address') as handle:
        return handle.read().strip()


def build_advertisement(mac):
    """Bytes of an RA with no prefix, lifetime 0 and the source link-layer
    address option."""
    packet = (inet6.ICMPv6ND_RA(chlim=64, M=0, O=0, routerlifetime=0,
                                reachabletime=0, retranstimer=0, cksum=0)
              / inet6.ICMPv6NDOptSrcLLAddr(lladdr=mac))
    return bytes(packet)


def _solicitation_filter():
    # Linux ICMP6_FILTER: a set bit blocks the type.
    words = [0xffffffff] * 8
    words[ROUTER_SOLICITATION >> 5] &= ~(1 << (ROUTER_SOLICITATION & 31))
    return struct.pack('=8I', *words)


class RouterAdvertiser:
    """Send RAs on one interface from a daemon thread.

    :param interface: interface name.
    :param interval: seconds between unsolicited advertisements.
    :param on_send: optional callable run after each advertisement sent.
    """

    def __init__(self, interface, interval=10.0, on_send=None):
        self.interface = interface
        self.interval = max(interval, MIN_DELAY_BETWEEN_RAS)
        self.on_send = on_send
        self.ifindex = socket.if_nametoindex(interface)
        self.packet = build_advertisement(interface_mac(interface))
        self._stop = threading.Event()
        self._thread = None
        self._sock = None
        self._random = random.SystemRandom()

    def _open(self):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW,
                             socket.IPPROTO_ICMPV6)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            self.interface.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF,
                            self.ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS,
                            255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS,
                            255)
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER,
                            _solicitation_filter())
            mreq = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) + \
                struct.pack('@I', self.ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        except OSError:
            sock.close()
            raise
        return sock

    def send(self):
        """Send one advertisement; errors are logged, not raised.

        :returns: ``True`` when sent.
        """
        try:
            self._sock.sendto(self.packet, (ALL_NODES, 0, 0, self.ifindex))
        except OSError as exc:
            # Before the link-local address leaves DAD the kernel refuses.
            LOG.debug('Router advertisement on %s not sent: %s',
                      self.interface, exc)
            return False
        if self.on_send is not None:
            self.on_send()
        return True

    def _run(self):
        # Quick repeats at start (as fast as 6.2.6 allows) cover the
        # link-local address becoming usable and clients that came up just
        # before the agent.
        initial = [MIN_DELAY_BETWEEN_RAS, MIN_DELAY_BETWEEN_RAS]
        next_send = time.monotonic()
        last_sent = None
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                self.send()
                last_sent = now
                next_send = now + (initial.pop() if initial
                                   else self.interval)
            timeout = max(0.0, min(next_send - now, 0.5))
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                continue
            try:
                self._sock.recvfrom(1500)
            except OSError:
                continue
            next_send = answer_time(
                time.monotonic(), last_sent, next_send,
                self._random.uniform(0, MAX_RA_DELAY_TIME))

    def start(self):
        """Open the socket and start the thread.

        :raises OSError: the raw socket cannot be opened.
        """
        self._sock = self._open()
        self._thread = threading.Thread(target=self._run, name='ipv6-ra',
                                        daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
