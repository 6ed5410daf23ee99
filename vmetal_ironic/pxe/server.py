"""The DHCP socket and its work loop.

One UDP socket on the server port, bound to the provisioning interface
(``SO_BINDTODEVICE``) so the agent never answers on another network, and
allowed to broadcast. The loop reads at most ``batch_size`` packets per
wake-up, so stop and reload requests are seen even under a flood, and
every packet is handled with memory-only work: parse, cache lookup,
decision, template patch, send.
"""

import collections
import errno
import logging
import select
import socket
import time

from oslo_log import log

from vmetal_ironic.pxe import codec
from vmetal_ironic.pxe import decisions

LOG = log.getLogger(__name__)

_RECV_SIZE = 4096


def open_socket(interface, port, receive_buffer=4 * 1024 * 1024):
    """Open the server socket.

    :raises OSError: no such interface, port taken, not permitted.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                        interface.encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind(('', port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class DhcpServer:
    """Answer DHCP on one interface.

    :param sock: the socket from :func:`open_socket` (``None`` to use
        :meth:`handle` alone).
    :param settings: :class:`~vmetal_ironic.pxe.decisions.Settings`.
    :param cache: :class:`~vmetal_ironic.pxe.cache.ReservationCache`.
    :param metrics: :class:`~vmetal_ironic.pxe.metrics.Metrics`.
    :param dynamic: optional
        :class:`~vmetal_ironic.pxe.dynamic.DynamicPool`.
    """

    def __init__(self, sock, settings, cache, metrics, dynamic=None,
                 client_port=68, server_port=67, batch_size=256):
        self.sock = sock
        self.cache = cache
        self.metrics = metrics
        self.dynamic = dynamic
        self.client_port = client_port
        self.server_port = server_port
        self.batch_size = batch_size
        self.stats = collections.Counter()
        self.settings = settings
        self.builder = codec.ReplyBuilder(settings)
        cache.on_load = self._prepare
        # Resolve labelled counters once; labels() takes a lock and a dict
        # lookup per call.
        self._requests = {}
        self._replies = {}
        self._ignored = {}

    def _prepare(self, bindings):
        bindings = list(bindings)
        built = self.builder.prepare(bindings)
        self.metrics.cache_size.set(len(bindings))
        if built:
            LOG.debug('Built %d reply templates', built)

    def update_settings(self, settings, dynamic=None):
        """Swap in new settings (SIGHUP): new templates, same socket."""
        builder = codec.ReplyBuilder(settings)
        builder.prepare(self.cache.bindings())
        self.settings, self.builder = settings, builder
        self.dynamic = dynamic

    def _count(self, table, counter, label):
        child = table.get(label)
        if child is None:
            child = table[label] = counter.labels(label)
        child.inc()

    def _lookup(self, request, now):
        binding = self.cache.get(request.mac)
        if binding is None and self.dynamic is not None:
            binding = self.dynamic.lookup(
                request.mac, now,
                allocate=request.message_type in (decisions.DISCOVER,
                                                  decisions.REQUEST),
                reserved=self.cache.addresses)
        return binding

    def _after(self, request, decision, now):
        """Record what the dynamic range must remember."""
        binding = decision.binding
        if self.dynamic is None or binding is None or not binding.dynamic:
            return
        if decision.action is decisions.Action.ACK:
            self.dynamic.commit(request.mac, now)
        elif request.message_type == decisions.RELEASE:
            self.dynamic.release(request.mac)
        elif request.message_type == decisions.DECLINE:
            self.dynamic.decline(request.mac, now)

    def handle(self, data, peer=None):
        """Handle one datagram.

        :returns: ``(reply_bytes, (address, port))`` or ``None``.
        """
        now = time.monotonic()
        try:
            request = codec.parse(data)
        except codec.Malformed as exc:
            self.stats['malformed'] += 1
            self.metrics.malformed.inc()
            if LOG.isEnabledFor(logging.DEBUG):
                LOG.debug('Dropped malformed packet from %s: %s (%s)', peer,
                          exc, codec.describe(data))
            return None
        kind = decisions.message_name(request.message_type)
        self.stats[kind] += 1
        self._count(self._requests, self.metrics.requests, kind)
        decision = decisions.decide(request, self._lookup(request, now),
                                    self.settings)
        self._after(request, decision, now)
        action = decision.action
        if action is decisions.Action.IGNORE:
            self.stats['ignored'] += 1
            self._count(self._ignored, self.metrics.ignored,
                        decision.reason)
            if decision.reason == 'unknown MAC':
                self.stats['unknown'] += 1
                self.metrics.unknown.inc()
            if LOG.isEnabledFor(logging.DEBUG):
                LOG.debug('%s from %s xid %s: ignored (%s)', kind,
                          request.mac, request.xid.hex(), decision.reason)
            return None
        if action is decisions.Action.NO_REPLY:
            LOG.info('%s from %s for %s', kind, request.mac,
                     decision.binding.address_text)
            return None
        address, port, broadcast = decisions.destination(
            request, action, self.client_port, self.server_port)
        reply = self.builder.build(request, decision, broadcast)
        reply_kind = decisions.message_name(
            decisions.reply_message_type(action))
        self.stats[reply_kind] += 1
        self._count(self._replies, self.metrics.replies, reply_kind)
        if LOG.isEnabledFor(logging.DEBUG):
            boot = decision.boot
            LOG.debug('%s from %s xid %s%s: %s %s to %s:%d (%s)%s', kind,
                      request.mac, request.xid.hex(),
                      (' via ' + socket.inet_ntoa(request.giaddr)
                       if request.giaddr != decisions.ZERO_ADDRESS else ''),
                      reply_kind,
                      decision.binding.address_text
                      if decision.binding else '', address, port,
                      decision.reason,
                      f' boot {boot.kind} {boot.filename}' if boot else '')
        return reply, (address, port)

    def _send(self, reply, target):
        for _attempt in range(3):
            try:
                self.sock.sendto(reply, target)
                return
            except BlockingIOError:
                select.select([], [self.sock], [], 0.05)
            except OSError as exc:
                self.stats['send_error'] += 1
                self.metrics.send_errors.inc()
                if exc.errno != errno.ENETUNREACH:
                    LOG.warning('Cannot send a reply to %s:%d: %s',
                                target[0], target[1], exc)
                return
        self.stats['send_error'] += 1
        self.metrics.send_errors.inc()

    def serve_once(self, timeout=0.5):
        """Wait up to ``timeout`` for packets, then handle at most
        ``batch_size`` of them.

        :returns: how many datagrams were read.
        """
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return 0
        count = 0
        while count < self.batch_size:
            try:
                data, peer = self.sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            count += 1
            try:
                result = self.handle(data, peer)
            except Exception:  # one packet never stops all
                self.stats['internal_error'] += 1
                LOG.exception('Failed to handle a packet from %s', peer)
                continue
            if result is not None:
                self._send(*result)
        return count

    def run(self, stop_event, timeout=0.5):
        """Serve until ``stop_event`` is set."""
        while not stop_event.is_set():
            self.serve_once(timeout)

    def summary(self):
        """One line of totals for the periodic info log."""
        stats = self.stats
        stale = (' (store unreachable, serving cached data)'
                 if self.cache.stale else '')
        return (f"requests: {stats['DISCOVER']} discover, "
                f"{stats['REQUEST']} request, {stats['RELEASE']} release, "
                f"{stats['DECLINE']} decline, {stats['INFORM']} inform; "
                f"replies: {stats['OFFER']} offer, {stats['ACK']} ack, "
                f"{stats['NAK']} nak; {stats['ignored']} ignored "
                f"({stats['unknown']} unknown MAC); {stats['malformed']} "
                f"malformed; {len(self.cache)} reservations{stale}")
