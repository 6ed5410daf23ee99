"""The DHCP socket and its work loop.

One UDP socket on the server port, bound to the provisioning interface
(``SO_BINDTODEVICE``) so the agent never answers on another network, and
allowed to broadcast. The loop reads at most ``batch_size`` packets per
wake-up, so stop and reload requests are seen even under a flood, and
every packet is handled with memory-only work: parse, cache lookup,
decision, template patch, send.
"""

import collections
import contextlib
import errno
import logging
import os
import select
import socket
import time

from oslo_log import log

from vmetal_ironic.dhcp_agent import codec
from vmetal_ironic.dhcp_agent import decisions
from vmetal_ironic.dhcp_agent import log_limit
from vmetal_ironic.dhcp_agent import messages
from vmetal_ironic.dhcp_agent import socket_buffers

LOG = log.getLogger(__name__)

_RECV_SIZE = 4096
#: Debug lines for dropped or ignored packets allowed per second; a flood of
#: unknown MACs or garbage must not turn into a flood of log writes that
#: slows the answers to known hosts. Suppressed lines are only counted.
_QUIET_LOG_RATE = 20
#: Info lines about RELEASE/DECLINE allowed per second: their MAC is
#: anyone's to spoof.
_EVENT_LOG_RATE = 20
#: Tracebacks of failed packets allowed per minute.
_TRACEBACK_RATE = 5
#: DISCOVERs waiting for a shared inspection lease, answered as soon as the
#: store thread has one, at most; and how long one may wait (the client
#: sends another after a few seconds anyway).
_PENDING_MAX = 4096
_PENDING_SECONDS = 4.0


#: The name of the reply each answering action sends, by the action's
#: value (see :func:`messages.reply_message_type`).
_REPLY_NAMES = {action.value: messages.message_name(
    messages.reply_message_type(action)) for action in (
        messages.Action.OFFER, messages.Action.ACK, messages.Action.NAK,
        messages.Action.INFORM_ACK)}


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
        socket_buffers.grow(sock, socket.SO_RCVBUF, receive_buffer,
                            f'the DHCP socket on {interface}')
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
    :param settings: :class:`~vmetal_ironic.dhcp_agent.messages.Settings`.
    :param cache: :class:`~vmetal_ironic.dhcp_agent.cache.ReservationCache`.
    :param metrics: :class:`~vmetal_ironic.dhcp_agent.metrics.Metrics`.
    :param dynamic: optional
        :class:`~vmetal_ironic.dhcp_agent.dynamic.DynamicPool`.
    :param shared: optional
        :class:`~vmetal_ironic.dhcp_agent.shared_range.SharedRange`.
    """

    def __init__(self, sock, settings, cache, metrics, dynamic=None,
                 client_port=68, server_port=67, batch_size=256,
                 shared=None):
        self.sock = sock
        self.cache = cache
        self.metrics = metrics
        self.dynamic = dynamic
        self.shared = shared
        # MAC -> (request, received) of DISCOVERs waiting for a lease.
        self._pending = {}
        self._wake_r = self._wake_w = None
        if shared is not None:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            shared.on_ready = self.wake
        self.client_port = client_port
        self.server_port = server_port
        self.batch_size = batch_size
        #: Requests received and what became of them, for the summary.
        self.stats = collections.Counter()
        #: Replies built to be sent, by message type (inbound OFFER, ACK
        #: or NAK packets are requests of no server type, never counted
        #: here); send errors are counted apart.
        self.replies = collections.Counter()
        self.settings = settings
        self.builder = codec.ReplyBuilder(settings)
        # Resolve labelled counters once; labels() takes a lock and a dict
        # lookup per call.
        self._requests = {}
        self._replies = {}
        self._ignored = {}
        self._destinations = {}
        suppressed = metrics.log_suppressed.inc
        self._quiet = log_limit.LogLimiter(_QUIET_LOG_RATE, on_suppress=suppressed)
        self._events = log_limit.LogLimiter(_EVENT_LOG_RATE, on_suppress=suppressed)
        self._tracebacks = log_limit.LogLimiter(_TRACEBACK_RATE, 60.0,
                                                on_suppress=suppressed)

    def _may_log_quiet(self, now):
        """Rate limit for debug lines about ignored and malformed packets."""
        if not LOG.isEnabledFor(logging.DEBUG):
            return False
        return self._quiet.allow(now)

    def prepare(self, bindings):
        """Build the reply templates of a new cache content (the cache's
        ``on_load``).

        :returns: ``{mac: reason}`` of the bindings that cannot be served.
        """
        built, rejected = self.builder.prepare(bindings)
        if built:
            LOG.debug('Built %d reply templates', built)
        return rejected

    def update_settings(self, settings, dynamic=None):
        """Swap in new settings (SIGHUP): new templates, same socket."""
        builder = codec.ReplyBuilder(settings)
        builder.prepare(self.cache.bindings())
        self.settings, self.builder = settings, builder
        self.dynamic = dynamic

    def replace_socket(self, sock):
        """Serve from ``sock`` from now on (the interface came back)."""
        old, self.sock = self.sock, sock
        if old is not None:
            old.close()

    def _count(self, table, counter, label):
        child = table.get(label)
        if child is None:
            child = table[label] = counter.labels(label)
        child.inc()

    def _lookup(self, request, now):
        """The client's binding, and a decision when the dynamic range
        makes one itself.

        Only a DISCOVER takes a new address from the range. A REQUEST from
        a client the range has no record of is answered only when it names
        a free address of the range it holds (RENEWING/REBINDING, or
        SELECTING us after its offer ran out); an INIT-REBOOT from it gets
        silence (RFC 2131 4.3.2), so clients of other servers and of other
        agents are never NAKed.

        :returns: ``(binding_or_None, decision_or_None)``.
        """
        binding = self.cache.get(request.mac)
        if binding is None and self.shared is not None:
            return self._shared_lookup(request, now)
        pool = self.dynamic
        if binding is not None or pool is None:
            return binding, None
        kind = request.message_type
        mac = request.mac
        reserved = self.cache.addresses
        if kind == messages.REQUEST and request.server_id not in (
                None, self.settings.server_address):
            pool.drop_offer(mac)
            return None, None
        binding = pool.lookup(mac, now, allocate=kind == messages.DISCOVER,
                              reserved=reserved)
        if binding is not None or kind != messages.REQUEST:
            return binding, None
        if pool.revoked(mac):
            self.metrics.dynamic_revoked.inc()
            return None, messages.Decision(
                messages.Action.NAK, 'lease revoked: address now reserved')
        if request.server_id is not None:
            wanted = request.requested_address or request.ciaddr
        elif request.requested_address is not None:
            return None, None       # INIT-REBOOT, no record: silence
        else:
            wanted = request.ciaddr
        if wanted == messages.ZERO_ADDRESS:
            return None, None
        return pool.adopt(mac, wanted, now, reserved), None

    def _shared_lookup(self, request, now):
        """The client's lease of the shared range; an unknown MAC's
        DISCOVER is handed to the store thread and answered once it has a
        lease (:meth:`answer_ready`), never waited for here.

        :returns: ``(binding_or_None, decision_or_None)``.
        """
        mac = request.mac
        binding = self.shared.binding(mac)
        if binding is not None or request.message_type != messages.DISCOVER:
            # No lease and not a DISCOVER: silence, the client may hold a
            # lease of another server.
            return binding, None
        pending = self._pending
        if mac not in pending and len(pending) >= _PENDING_MAX:
            pending.pop(next(iter(pending)))
        pending[mac] = (request, now)
        self.shared.want(mac)
        return None, messages.Decision(messages.Action.IGNORE,
                                       'claiming inspection lease')

    def wake(self):
        """Ask the packet loop to look at :attr:`shared`'s ready MACs (any
        thread)."""
        fd = self._wake_w
        if fd is None:
            return      # closed: stopping
        # Full: a wake-up is pending already.
        with contextlib.suppress(OSError):
            os.write(fd, b'!')

    def answer_ready(self):
        """Answer the waiting DISCOVERs of MACs that got a lease.

        :returns: how many replies were sent.
        """
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        now = time.monotonic()
        sent = 0
        ready = self.shared.ready
        while ready:
            mac = ready.popleft()
            waiting = self._pending.pop(mac, None)
            if waiting is None or now - waiting[1] > _PENDING_SECONDS:
                continue
            try:
                result = self._respond(waiting[0], now)
            except Exception:  # one packet never stops all
                self.metrics.internal_errors.inc()
                if self._tracebacks.allow(now):
                    LOG.exception('Failed to answer the DISCOVER of %s', mac)
                continue
            if result is not None:
                self._send(*result)
                sent += 1
        return sent

    def close(self):
        """Close the socket and the wake-up pipe."""
        if self.sock is not None:
            self.sock.close()
        if self.shared is not None:
            self.shared.on_ready = None
        # Forgotten before closed, so a late wake-up never writes to a
        # descriptor number reused by then.
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), None, None
        for fd in fds:
            if fd is not None:
                os.close(fd)

    def _after(self, request, decision, now):
        """Record what the dynamic or shared range must remember."""
        binding = decision.binding
        if binding is None or not binding.dynamic:
            return
        if self.shared is not None:
            if decision.action is messages.Action.ACK:
                self.shared.acknowledged(request.mac)
            elif request.message_type == messages.RELEASE:
                self.shared.release(request.mac)
            elif request.message_type == messages.DECLINE:
                self.shared.decline(request.mac)
            return
        if self.dynamic is None:
            return
        if decision.action is messages.Action.ACK:
            self.dynamic.commit(request.mac, now)
        elif request.message_type == messages.RELEASE:
            self.dynamic.release(request.mac)
        elif request.message_type == messages.DECLINE:
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
            if self._may_log_quiet(now):
                LOG.debug('Dropped malformed packet from %s: %s (%s)', peer,
                          exc, codec.describe(data))
            return None
        kind = messages.message_name(request.message_type)
        self.stats[kind] += 1
        self._count(self._requests, self.metrics.requests, kind)
        return self._respond(request, now, kind)

    def _respond(self, request, now, kind=None):
        """The reply to a parsed request, or ``None``."""
        if kind is None:
            kind = messages.message_name(request.message_type)
        binding, decision = self._lookup(request, now)
        if decision is None:
            decision = decisions.decide(request, binding, self.settings)
        held_for = None
        if (self.shared is not None and decision.binding is not None
                and decision.binding.dynamic and decision.action in (
                    messages.Action.OFFER, messages.Action.ACK)):
            # Never promise more than the store holds (finding 3).
            held_for = self.shared.seconds_held(request.mac)
            if not held_for:
                if request.message_type == messages.REQUEST:
                    self.shared.acknowledged(request.mac)
                decision = messages.Decision(
                    messages.Action.IGNORE,
                    'inspection lease not held in the store')
        if decision.binding is not None and decision.binding.dynamic:
            self._after(request, decision, now)
        action = decision.action
        if action is messages.Action.IGNORE:
            self.stats['ignored'] += 1
            self._count(self._ignored, self.metrics.ignored,
                        decision.reason)
            if decision.reason == 'unknown MAC':
                self.stats['unknown'] += 1
                self.metrics.unknown.inc()
            if self._may_log_quiet(now):
                LOG.debug('%s from %s xid %s: ignored (%s)', kind,
                          request.mac, request.xid.hex(), decision.reason)
            return None
        if action is messages.Action.NO_REPLY:
            if self._events.allow(now):
                LOG.info('%s from %s for %s', kind, request.mac,
                         decision.binding.address_text)
            return None
        address, port, broadcast = decisions.destination(
            request, action, self.client_port, self.server_port)
        reply = self.builder.build(request, decision, broadcast, held_for)
        if len(reply) > codec.reply_limit(request):
            self.metrics.oversize.inc()
        reply_kind = _REPLY_NAMES[action._value_]
        self.replies[reply_kind] += 1
        self._count(self._replies, self.metrics.replies, reply_kind)
        self._count(self._destinations, self.metrics.destinations,
                    'relay' if request.giaddr != messages.ZERO_ADDRESS
                    else 'broadcast' if address == messages.BROADCAST_ADDRESS
                    else 'client')
        if LOG.isEnabledFor(logging.DEBUG):
            boot = decision.boot
            LOG.debug('%s from %s xid %s%s: %s %s to %s:%d (%s)%s', kind,
                      request.mac, request.xid.hex(),
                      (' via ' + socket.inet_ntoa(request.giaddr)
                       if request.giaddr != messages.ZERO_ADDRESS else ''),
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
                if exc.errno != errno.ENETUNREACH and self._events.allow(
                        time.monotonic()):
                    LOG.warning('Cannot send a reply to %s:%d: %s',
                                target[0], target[1], exc)
                return
        self.stats['send_error'] += 1
        self.metrics.send_errors.inc()

    def serve_once(self, timeout=0.5):
        """Wait up to ``timeout`` for packets, then handle at most
        ``batch_size`` of them.

        :returns: how many datagrams were read.
        :raises OSError: the socket failed (e.g. its interface is gone).
        """
        waiting = [self.sock]
        if self._wake_r is not None:
            waiting.append(self._wake_r)
        ready, _, _ = select.select(waiting, [], [], timeout)
        if not ready:
            return 0
        if self._wake_r is not None and self._wake_r in ready:
            self.answer_ready()
            if self.sock not in ready:
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
                self.metrics.internal_errors.inc()
                if self._tracebacks.allow(time.monotonic()):
                    LOG.exception('Failed to handle a packet from %s', peer)
                continue
            if result is not None:
                self._send(*result)
        return count

    def summary(self):
        """One line of totals for the periodic info log."""
        stats = self.stats
        sent = self.replies
        stale = (' (store unreachable, serving cached data)'
                 if self.cache.stale else '')
        skipped = (f', {len(self.cache.skipped)} skipped as invalid'
                   if self.cache.skipped else '')
        return (f"requests: {stats['DISCOVER']} discover, "
                f"{stats['REQUEST']} request, {stats['RELEASE']} release, "
                f"{stats['DECLINE']} decline, {stats['INFORM']} inform; "
                f"replies sent: {sent['OFFER']} offer, {sent['ACK']} ack, "
                f"{sent['NAK']} nak; {stats['ignored']} ignored "
                f"({stats['unknown']} unknown MAC); {stats['malformed']} "
                f"malformed; {len(self.cache)} reservations{skipped}{stale}")
