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

from vmetal_ironic.pxe import decisions

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

_HEADER = struct.Struct('!BBBB4sHH4s4s4s4s6s')

# Options the decisions need, with the lengths they must have.
_OPT_PAD = 0
_OPT_END = 255
_OPT_REQUESTED_ADDRESS = 50
_OPT_MESSAGE_TYPE = 53
_OPT_SERVER_ID = 54
_OPT_VENDOR_CLASS = 60
_OPT_CLIENT_ID = 61
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
    :returns: a :class:`vmetal_ironic.pxe.decisions.Request`.
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
        # The first occurrence wins; RFC 3396 concatenation is not needed
        # for any option read here.
        if code not in options:
            options[code] = data[index + 2:end]
            if code in (_OPT_CLIENT_ID, _OPT_RELAY_INFO):
                raw[code] = data[index:end]
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
    return decisions.Request(
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
    )


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


class ReplyBuilder:
    """Reply templates for one set of :class:`decisions.Settings`.

    Thread use: :meth:`prepare` runs on the cache feeder's thread and swaps
    the template table in one assignment; :meth:`build` runs on the packet
    path and only reads it (building a missing template itself).
    """

    def __init__(self, settings):
        self.settings = settings
        self._server = settings.server_address_text
        self._templates = {}
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
        chaddr = bytes.fromhex(binding.mac.replace(':', '')) + bytes(10)
        return _scapy_bytes(
            options, chaddr=chaddr,
            yiaddr='0.0.0.0' if inform else binding.address_text)

    def prepare(self, bindings):
        """Build the templates of ``bindings`` and forget all others.

        :returns: how many templates had to be built.
        """
        old = self._templates
        new = {}
        built = 0
        for binding in bindings:
            template = old.get((binding, False))
            if template is None:
                template = self._template(binding)
                built += 1
            new[(binding, False)] = template
        self._templates = new
        return built

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
            siaddr = socket.inet_aton(boot.next_server or '0.0.0.0')
            segment = (_option_segment(options), siaddr, file_field)
            self._boot[boot] = segment
        return segment

    def build(self, request, decision, broadcast=False):
        """Bytes of the reply ``decision`` asks for.

        :param request: the :class:`decisions.Request` answered.
        :param decision: a :class:`decisions.Decision` with an answering
            action (OFFER, ACK, NAK, INFORM_ACK).
        :param broadcast: set the broadcast flag in the reply.
        """
        action = decision.action
        if action is decisions.Action.NAK:
            buf = bytearray(self._nak)
            buf[28:34] = bytes.fromhex(request.mac.replace(':', ''))
        else:
            inform = action is decisions.Action.INFORM_ACK
            key = (decision.binding, inform)
            template = self._templates.get(key)
            if template is None:
                template = self._template(decision.binding, inform)
                if not inform:
                    self._templates[key] = template
            buf = bytearray(template)
            if action is not decisions.Action.OFFER:
                buf[12:16] = request.ciaddr
        buf[4:8] = request.xid
        flags = request.flags | (decisions.BROADCAST_FLAG if broadcast
                                 else 0)
        buf[10:12] = flags.to_bytes(2, 'big')
        buf[24:28] = request.giaddr
        buf[242] = decisions.reply_message_type(action)
        tail = []
        boot = decision.boot
        if boot is not None and action is not decisions.Action.NAK:
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
        if len(data) < MIN_REPLY_LENGTH:
            data += bytes(MIN_REPLY_LENGTH - len(data))
        return data
