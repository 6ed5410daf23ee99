"""DHCP bytes in, DHCP bytes out, fast enough for a boot storm.

Building a reply with scapy costs ~0.8 ms and dissecting one ~0.2 ms (see
the lab figures): a responder doing that per packet tops out near 500
DORA/s. So scapy's BOOTP/DHCP layers build every reply *template* once --
one per reservation, one per distinct set of boot options, one NAK -- and
the packet path only copies a template and patches the per-exchange fields
(xid, flags, ciaddr, giaddr, message type, siaddr/file for boot clients).

Requests are read by :func:`parse`, a strict scanner of the fixed header
and the option list. It is strict where scapy is lenient by design (scapy
dissects a packet with an option running past the end, or with no end
option, without complaint); those packets are hostile or broken and must be
counted and dropped, so :func:`parse` raises :class:`Malformed` with the
reason. :func:`describe` uses scapy to show such a packet in debug logs.
"""

import socket
import struct

from scapy.layers import dhcp as scapy_dhcp

from vmetal_ironic.dhcp_agent import messages

BOOTREQUEST = 1
HTYPE_ETHERNET = 1
MAGIC_COOKIE = b'\x63\x82\x53\x63'
OPTIONS_OFFSET = 240
#: Smallest DHCP request: header, cookie, option 53 and the end option.
MIN_LENGTH = OPTIONS_OFFSET + 4
#: Largest request accepted: a full Ethernet frame less IP and UDP headers.
MAX_LENGTH = 1472
#: Replies are padded to the BOOTP minimum; some PXE ROMs drop shorter ones.
MIN_REPLY_LENGTH = 300
#: RFC 2131 section 2: every client accepts a 576-byte IP datagram; larger
#: ones only when it says so in option 57 (RFC 2132 section 9.10).
MIN_DATAGRAM = 576
#: IPv4 and UDP headers around the DHCP message.
IP_UDP_HEADERS = 28

_HEADER = struct.Struct('!BBBB4sHH4s4s4s4s6s')

# Options the decisions need, with the lengths they must have.
_OPT_PAD = 0
_OPT_END = 255
_OPT_REQUESTED_ADDRESS = 50
_OPT_MESSAGE_TYPE = 53
_OPT_SERVER_ID = 54
_OPT_VENDOR_CLASS = 60
_OPT_CLIENT_ID = 61
_OPT_MAX_MESSAGE_SIZE = 57
_OPT_USER_CLASS = 77
_OPT_RELAY_INFO = 82
_OPT_ARCH = 93
_OPT_IPXE = 175

#: iPXE's encapsulated option 175 carrying sub-option 176 ("no-pxedhcp") = 1.
IPXE_NO_PXEDHCP = b'\xb0\x01\x01'


class Malformed(ValueError):
    """A request that cannot be a valid DHCP message; ``str()`` says why."""


def _addr(value, code):
    if len(value) != 4:
        raise Malformed(f'option {code} has length {len(value)}, not 4')
    return value


def parse(data):
    """Parse a client message.

    :param data: the UDP payload.
    :returns: a :class:`vmetal_ironic.dhcp_agent.messages.Request`.
    :raises Malformed: truncated, oversize, not a BOOTREQUEST over
        Ethernet, no magic cookie, an option overrunning the packet, no end
        option, or a missing/invalid message type.
    """
    size = len(data)
    if size < MIN_LENGTH:
        raise Malformed(f'truncated: {size} bytes')
    if size > MAX_LENGTH:
        raise Malformed(f'oversize: {size} bytes')
    (op, htype, hlen, _hops, xid, _secs, flags, ciaddr, _yiaddr, _siaddr,
     giaddr, chaddr) = _HEADER.unpack_from(data)
    if op != BOOTREQUEST:
        raise Malformed(f'op {op} is not BOOTREQUEST')
    if htype != HTYPE_ETHERNET or hlen != 6:
        raise Malformed(f'hardware type {htype}/length {hlen} is not '
                        'Ethernet')
    if data[236:OPTIONS_OFFSET] != MAGIC_COOKIE:
        raise Malformed('no DHCP magic cookie')
    options = {}
    raw = {}
    index = OPTIONS_OFFSET
    while True:
        if index >= size:
            raise Malformed('no end option')
        code = data[index]
        if code == _OPT_PAD:
            index += 1
            continue
        if code == _OPT_END:
            break
        if index + 1 >= size:
            raise Malformed(f'option {code} has no length')
        end = index + 2 + data[index + 1]
        if end > size:
            raise Malformed(f'option {code} runs past the end of the '
                            'packet')
        # The first occurrence wins for the options decisions read; the
        # two that are echoed back keep every instance, in order, since a
        # long one may be split over several (RFC 3396, RFC 3046 2.2).
        if code not in options:
            options[code] = data[index + 2:end]
        if code in (_OPT_CLIENT_ID, _OPT_RELAY_INFO):
            raw[code] = raw.get(code, b'') + data[index:end]
        index = end
    message_type = options.get(_OPT_MESSAGE_TYPE)
    if message_type is None or len(message_type) != 1:
        raise Malformed('no valid message type (option 53)')
    requested = options.get(_OPT_REQUESTED_ADDRESS)
    server_id = options.get(_OPT_SERVER_ID)
    arch = options.get(_OPT_ARCH)
    if arch is not None:
        if len(arch) < 2 or len(arch) % 2:
            raise Malformed(f'option 93 has length {len(arch)}')
        arch = int.from_bytes(arch[:2], 'big')
    vendor_class = options.get(_OPT_VENDOR_CLASS, b'')
    if arch is None and vendor_class.startswith(b'PXEClient:Arch:'):
        # PXE firmware also states its architecture in the vendor class
        # (PXEClient:Arch:00007:UNDI:003016); some send no option 93.
        digits = vendor_class[15:20]
        if digits.isdigit():
            arch = int(digits)
    max_size = options.get(_OPT_MAX_MESSAGE_SIZE)
    # A malformed option 57 only means the client did not raise the limit.
    max_size = int.from_bytes(max_size, 'big') if (
        max_size is not None and len(max_size) == 2) else 0
    return messages.Request(
        message_type=message_type[0],
        xid=xid,
        flags=flags,
        ciaddr=ciaddr,
        giaddr=giaddr,
        mac=chaddr.hex(':'),
        requested_address=(None if requested is None
                           else _addr(requested, _OPT_REQUESTED_ADDRESS)),
        server_id=(None if server_id is None
                   else _addr(server_id, _OPT_SERVER_ID)),
        arch=arch,
        vendor_class=vendor_class,
        user_class=options.get(_OPT_USER_CLASS, b''),
        ipxe_options=_OPT_IPXE in options,
        client_id=raw.get(_OPT_CLIENT_ID, b''),
        relay_info=raw.get(_OPT_RELAY_INFO, b''),
        max_message_size=max_size,
    )


def reply_limit(request):
    """Most bytes of UDP payload a reply to ``request`` may have."""
    datagram = max(MIN_DATAGRAM, request.max_message_size)
    return min(datagram - IP_UDP_HEADERS, MAX_LENGTH)


def describe(data):
    """A one-line scapy rendering of a packet for debug logs; never raises."""
    try:
        return scapy_dhcp.BOOTP(bytes(data)).summary()
    except Exception as exc:  # hostile input, any failure
        return f'<undecodable: {exc.__class__.__name__}>'



def _netmask(prefixlen):
    bits = (0xffffffff << (32 - prefixlen)) & 0xffffffff
    return socket.inet_ntoa(bits.to_bytes(4, 'big'))


def _scapy_bytes(options, **header):
    """Build a reply with scapy; strip the end option so segments can be
    appended."""
    packet = scapy_dhcp.BOOTP(op=2, htype=1, hlen=6, **header) / \
        scapy_dhcp.DHCP(options=[*options, 'end'])
    data = bytes(packet)
    if data[OPTIONS_OFFSET:OPTIONS_OFFSET + 2] != b'\x35\x01':
        raise AssertionError('message type is not the first option')
    return data[:-1]


def _option_segment(options):
    return bytes(scapy_dhcp.DHCP(options=[*options, 'end']))[:-1]


def _packed_ipv4(text):
    """``text`` packed when it is an IPv4 address (siaddr), else zeros: a
    TFTP server given by name only travels in option 66."""
    try:
        return socket.inet_pton(socket.AF_INET, text or '0.0.0.0')
    except OSError:
        return messages.ZERO_ADDRESS


def _options(data):
    """``[(code, raw_bytes)]`` of a reply's options, end option excluded."""
    result = []
    index = OPTIONS_OFFSET
    size = len(data)
    while index < size:
        code = data[index]
        if code == _OPT_END:
            break
        if code == _OPT_PAD:
            index += 1
            continue
        end = index + 2 + data[index + 1]
        result.append((code, data[index:end]))
        index = end
    return result


def _droppable(data):
    """Option codes a reply can lose to fit the client's size limit, the
    least useful first. Never dropped: 53, 54, 51 and 1 (the lease), 60
    (UEFI HTTP boot needs it), 82 (the relay needs it) and 66/67 when the
    header cannot carry what they say."""
    order = []
    if data[108] != 0:
        order.append(67)     # the file field holds the same name
    if data[20:24] != messages.ZERO_ADDRESS:
        order.append(66)     # siaddr holds the same server
    # Client identifier echo (RFC 6842), host name, NTP, iPXE's
    # no-pxedhcp, T1/T2 (the client derives them), DNS, router.
    order += [_OPT_CLIENT_ID, 12, 42, _OPT_IPXE, 58, 59, 6, 3]
    return order


def fit(data, limit):
    """``data`` with optional options dropped until it is at most
    ``limit`` bytes; unchanged when it fits already or nothing more can go.

    :param data: a reply ending with the end option, unpadded.
    """
    if len(data) <= limit:
        return data
    header = data[:OPTIONS_OFFSET]
    options = _options(data)
    size = len(data)
    for code in _droppable(data):
        if size <= limit:
            break
        kept = [item for item in options if item[0] != code]
        size -= sum(len(raw) for _, raw in options) - sum(
            len(raw) for _, raw in kept)
        options = kept
    return header + b''.join(raw for _, raw in options) + b'\xff'


def _with_client(template, binding):
    """``template`` (built for ``binding.options_only()``) with the
    binding's MAC in chaddr and its address in yiaddr."""
    buf = bytearray(template)
    buf[28:34] = bytes.fromhex(binding.mac.replace(':', ''))
    buf[16:20] = binding.address
    return bytes(buf)


def _patch_lease_time(buf, seconds):
    """Write ``seconds`` (and T1, T2 from it) into the options 51, 58, 59
    that a shared template carries right after options 53 and 54."""
    at = OPTIONS_OFFSET + 9
    if buf[at:at + 13:6] != bytes([51, 58, 59]):
        return
    for offset, value in ((2, seconds), (8, seconds // 2),
                          (14, seconds * 7 // 8)):
        buf[at + offset:at + offset + 4] = value.to_bytes(4, 'big')


class ReplyBuilder:
    """Reply templates for one set of :class:`messages.Settings`.

    Templates are kept for the reservations of the last :meth:`prepare`
    (an OFFER/ACK one each, and an INFORM one built on first use). Leases
    of the dynamic range share templates by their options -- the MAC and
    address are patched in -- so their number stays bounded by the number
    of distinct option sets, not of clients.

    Thread use: :meth:`prepare` runs on the cache feeder's thread and swaps
    the template table in one assignment; :meth:`build` runs on the packet
    path and only reads it (building a missing template itself).
    """

    #: Shared templates kept for dynamic leases before the table restarts.
    SHARED_MAX = 32

    def __init__(self, settings):
        self.settings = settings
        self._server = settings.server_address_text
        self._templates = {}
        # (mac, inform) -> (binding, template) of the last prepare().
        self._by_mac = {}
        self._shared = {}
        self._boot = {}
        self._nak = _scapy_bytes([('message-type', 'nak'),
                                  ('server_id', self._server)])

    def _template(self, binding, inform=False):
        lease_time = binding.lease_time or self.settings.lease_time
        options = [('message-type', 'offer'), ('server_id', self._server)]
        if not inform:
            options += [('lease_time', lease_time),
                        ('renewal_time', lease_time // 2),
                        ('rebinding_time', lease_time * 7 // 8)]
        options.append(('subnet_mask', _netmask(binding.prefixlen)))
        if binding.gateway:
            options.append(('router', binding.gateway))
        if binding.dns_servers:
            options.append(('name_server', *binding.dns_servers))
        if binding.hostname:
            options.append(('hostname', binding.hostname.encode()))
        if binding.ntp_servers:
            options.append(('NTP_server', *binding.ntp_servers))
        chaddr = bytes.fromhex(binding.mac.replace(':', '')) + bytes(10) \
            if binding.mac else bytes(16)
        return _scapy_bytes(
            options, chaddr=chaddr,
            yiaddr='0.0.0.0' if inform else binding.address_text)

    def _inform_template(self, binding, key):
        """The INFORM variant of a binding's template: the OFFER one
        without yiaddr and the lease options (51, 58, 59), cut out of its
        bytes rather than built again with scapy."""
        offer = self._templates.get((key[0], False))
        if offer is None:
            offer = self._templates[(key[0], False)] = self._template(binding)
        lease = OPTIONS_OFFSET + 9    # after options 53 and 54
        if offer[lease:lease + 13:6] == bytes([51, 58, 59]):
            template = bytearray(offer[:lease] + offer[lease + 18:])
            template[16:20] = messages.ZERO_ADDRESS
            return bytes(template)
        return self._template(binding, inform=True)

    def prepare(self, bindings):
        """Build the templates of ``bindings`` and forget all others.

        A binding whose reply cannot be encoded gets no template and is
        returned as rejected, so one bad reservation never stops the rest.

        :returns: ``(built, rejected)``: how many templates had to be built
            and ``{mac: reason}`` of the bindings that could not be.
        """
        old = self._templates
        new = {}
        rejected = {}
        built = 0
        # Reservations with the same options (subnet, gateway, DNS, no
        # host name of their own) share one scapy build, with their MAC
        # and address patched in: scapy takes about 1 ms a template, so
        # 100,000 reservations took minutes to load.
        shapes = {}
        for binding in bindings:
            key = (binding, False)
            template = old.get(key)
            if template is None:
                shape = binding.options_only()
                try:
                    base = shapes.get(shape)
                    if base is None:
                        base = shapes[shape] = self._template(shape)
                except Exception as exc:  # scapy raises what struct does
                    rejected[binding.mac] = f'reply cannot be encoded: {exc}'
                    continue
                template = _with_client(base, binding)
                built += 1
            new[key] = template
        self._by_mac = {(binding.mac, inform): (binding, template)
                        for (binding, inform), template in new.items()}
        self._templates = new
        return built, rejected

    def _shared_template(self, binding, inform):
        key = (binding.options_only(), inform)
        template = self._shared.get(key)
        if template is None:
            if len(self._shared) >= self.SHARED_MAX:
                self._shared = {}
            template = self._shared[key] = self._template(key[0], inform)
        return template

    def _boot_segment(self, boot):
        segment = self._boot.get(boot)
        if segment is None:
            options = []
            if boot.next_server:
                options.append((66, boot.next_server.encode()))
            options.append((67, boot.filename.encode()))
            if boot.vendor_class:
                options.append((60, boot.vendor_class))
            if boot.no_pxedhcp:
                options.append((175, IPXE_NO_PXEDHCP))
            filename = boot.filename.encode()
            # A URL longer than the file field only travels in option 67.
            file_field = (filename if len(filename) < 128 else b'').ljust(
                128, b'\0')
            segment = (_option_segment(options),
                       _packed_ipv4(boot.next_server), file_field)
            if len(self._boot) >= 4 * self.SHARED_MAX:
                self._boot = {}
            self._boot[boot] = segment
        return segment

    def build(self, request, decision, broadcast=False, lease_time=None):
        """Bytes of the reply ``decision`` asks for, at most
        :func:`reply_limit` bytes when optional options can make it so.

        :param request: the :class:`messages.Request` answered.
        :param decision: a :class:`messages.Decision` with an answering
            action (OFFER, ACK, NAK, INFORM_ACK).
        :param broadcast: set the broadcast flag in the reply.
        :param lease_time: seconds to put in options 51, 58 and 59 of a
            dynamic lease's OFFER or ACK instead of the binding's (what
            the store holds it for).
        """
        action = decision.action
        if action is messages.Action.NAK:
            buf = bytearray(self._nak)
            buf[28:34] = bytes.fromhex(request.mac.replace(':', ''))
        else:
            inform = action is messages.Action.INFORM_ACK
            binding = decision.binding
            if binding.dynamic:
                buf = bytearray(self._shared_template(binding, inform))
                buf[28:34] = bytes.fromhex(binding.mac.replace(':', ''))
                if not inform:
                    buf[16:20] = binding.address
                    if lease_time is not None:
                        _patch_lease_time(buf, lease_time)
            else:
                key = (binding, inform)
                # Found by MAC first: hashing a Binding hashes all its
                # fields, a few microseconds per packet; the binding is
                # the same object as at prepare() unless it changed.
                found = self._by_mac.get((binding.mac, inform))
                template = (found[1] if found is not None
                            and found[0] is binding
                            else self._templates.get(key))
                if template is None:
                    # INFORM templates, and reservations that arrived
                    # between two loads, are made on first use; the next
                    # prepare() drops the ones no longer needed.
                    template = self._templates[key] = (
                        self._inform_template(binding, key) if inform
                        else self._template(binding))
                buf = bytearray(template)
            if action is not messages.Action.OFFER:
                buf[12:16] = request.ciaddr
        buf[4:8] = request.xid
        flags = request.flags | (messages.BROADCAST_FLAG if broadcast
                                 else 0)
        buf[10:12] = flags.to_bytes(2, 'big')
        buf[24:28] = request.giaddr
        buf[242] = messages.reply_message_type(action)
        tail = []
        boot = decision.boot
        if boot is not None and action is not messages.Action.NAK:
            segment, siaddr, file_field = self._boot_segment(boot)
            buf[20:24] = siaddr
            buf[108:236] = file_field
            tail.append(segment)
        # Client identifier echoed (RFC 6842); relay information last
        # before the end option (RFC 3046).
        tail.append(request.client_id)
        tail.append(request.relay_info)
        tail.append(b'\xff')
        data = bytes(buf) + b''.join(tail)
        limit = reply_limit(request)
        if len(data) > limit:
            data = fit(data, limit)
        if len(data) < MIN_REPLY_LENGTH:
            data += bytes(MIN_REPLY_LENGTH - len(data))
        return data
