"""Is an address already in use on the L2? An ARP probe (RFC 5227).

The shared inspection range offers addresses nobody reserved; a host
configured by hand, or a device the range overlaps, may already use one.
Before a new inspection lease is offered, a store thread asks
:meth:`ArpProbe.in_use`: one ARP request with sender address 0.0.0.0 (so
no neighbour cache learns anything from it), and any ARP frame from that
address within ``timeout`` means it is taken. Answers are remembered for
``remember`` seconds, so a busy range does not probe the same address
per client. The packet loop never waits on it: only store threads call
it, and one reader thread serves every probe in flight.
"""

import socket
import struct
import threading
import time

from oslo_log import log

LOG = log.getLogger(__name__)

_ETH_P_ARP = 0x0806
_BROADCAST = b'\xff' * 6
# htype Ethernet, ptype IPv4, hlen 6, plen 4.
_ARP_HEAD = struct.pack('!HHBB', 1, 0x0800, 6, 4)


def _request(source_mac, address):
    target = socket.inet_aton(address)
    return (_BROADCAST + source_mac + struct.pack('!H', _ETH_P_ARP)
            + _ARP_HEAD + struct.pack('!H', 1) + source_mac
            + bytes(4) + bytes(6) + target)


def sender_of(frame):
    """:returns: the sender IPv4 address (text) of an ARP frame, or
    ``None`` for anything else."""
    if len(frame) < 42 or frame[12:14] != b'\x08\x06':
        return None
    if frame[14:20] != _ARP_HEAD:
        return None
    sender = frame[28:32]
    if sender == bytes(4):
        return None     # another prober, not an owner
    return socket.inet_ntoa(sender)


class ArpProbe:
    """ARP probes on one interface.

    :param interface: the provisioning interface.
    :param timeout: seconds to wait for an answer.
    :param remember: seconds an answer (in use or free) is reused.
    :param clock: monotonic clock.
    """

    def __init__(self, interface, timeout=0.1, remember=60.0,
                 clock=time.monotonic):
        self.interface = interface
        self.timeout = timeout
        self.remember = remember
        self.clock = clock
        self._lock = threading.Lock()
        self._known = {}        # address -> (in use, until)
        self._waiting = {}      # address -> threading.Event
        self._sock = None
        self._mac = None
        self._reader = None

    def open(self):
        """Open the raw socket and start the reader.

        :raises OSError: no such interface, or not permitted.
        """
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                             socket.htons(_ETH_P_ARP))
        try:
            sock.bind((self.interface, _ETH_P_ARP))
            self._mac = sock.getsockname()[4][:6]
            sock.settimeout(0.5)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name='arp-probe')
        self._reader.start()

    def close(self):
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None

    def _read(self):
        while self._sock is not None:
            try:
                frame = self._sock.recv(128)
            except (TimeoutError, InterruptedError):
                continue
            except OSError:
                return      # closed
            self.heard(frame)

    def heard(self, frame):
        """One ARP frame from the L2: an answer to a probe in flight?"""
        address = sender_of(frame)
        if address is None:
            return
        with self._lock:
            event = self._waiting.get(address)
            if event is not None:
                self._known[address] = (True, self.clock() + self.remember)
                event.set()

    def in_use(self, address):
        """:returns: whether something on the L2 answers ARP for
        ``address`` (text). Blocks the caller up to ``timeout``."""
        now = self.clock()
        with self._lock:
            known = self._known.get(address)
            if known is not None and known[1] > now:
                return known[0]
            if len(self._known) > 4096:
                self._known = {a: k for a, k in self._known.items()
                               if k[1] > now}
            event = self._waiting.get(address)
            if event is None:
                event = self._waiting[address] = threading.Event()
                send = True
            else:
                send = False        # another thread probes it already
        if send and self._sock is not None:
            try:
                self._sock.send(_request(self._mac, address))
            except OSError as exc:
                LOG.warning('ARP probe of %s on %s failed: %s', address,
                            self.interface, exc)
        answered = event.wait(self.timeout)
        with self._lock:
            if send:
                self._waiting.pop(address, None)
                if not answered:
                    self._known[address] = (False, self.clock()
                                            + self.remember)
        return answered
