"""What the agent answers to a DHCP message: pure logic, no I/O.

The server hands :func:`decide` a parsed :class:`Request`, the
:class:`Binding` it found in memory for the client's MAC (or ``None``) and
the agent's :class:`Settings`; it gets back a :class:`Decision` that the
codec turns into bytes and :func:`destination` tells where to send them.

RFC 2131 rules kept here:

* DISCOVER from a known MAC -> OFFER of its reserved address.
* REQUEST, told apart by which fields are set (RFC 2131 4.3.2):
  SELECTING (server identifier set) -> ACK, or NAK when the requested
  address is not the reserved one; a REQUEST naming *another* server's
  identifier is the client choosing that server, and several agents may
  serve one link, so it is ignored, never NAKed.
  INIT-REBOOT (requested address, no server identifier) and
  RENEWING/REBINDING (ciaddr set) -> ACK for the reserved address, NAK
  otherwise.
* RELEASE and DECLINE get no reply; INFORM gets an ACK without a lease.
* A MAC with no reservation is ignored ("the server MUST remain silent if
  it has no record of the client") unless the dynamic range gives it one.
"""

import dataclasses
import enum
import socket

# Message types (option 53).
DISCOVER = 1
OFFER = 2
REQUEST = 3
DECLINE = 4
ACK = 5
NAK = 6
RELEASE = 7
INFORM = 8

MESSAGE_NAMES = {
    DISCOVER: 'DISCOVER', OFFER: 'OFFER', REQUEST: 'REQUEST',
    DECLINE: 'DECLINE', ACK: 'ACK', NAK: 'NAK', RELEASE: 'RELEASE',
    INFORM: 'INFORM',
}

BROADCAST_FLAG = 0x8000
ZERO_ADDRESS = b'\0\0\0\0'
BROADCAST_ADDRESS = '255.255.255.255'


def message_name(message_type):
    """:returns: the RFC 2131 name of a message type, or ``TYPE<n>``."""
    return MESSAGE_NAMES.get(message_type, f'TYPE{message_type}')


class Action(enum.Enum):
    """What the server does with a request."""

    OFFER = 'offer'
    ACK = 'ack'
    NAK = 'nak'
    #: ACK to an INFORM: configuration only, no address, no lease time.
    INFORM_ACK = 'inform-ack'
    #: No reply is due (RELEASE, DECLINE): the exchange is complete.
    NO_REPLY = 'no-reply'
    #: Not ours to answer (unknown MAC, another server's client, ...).
    IGNORE = 'ignore'


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """The fields of a client message that decisions look at.

    Addresses are 4-byte packed values so comparisons cost nothing.

    :ivar message_type: option 53.
    :ivar xid: transaction id, as the 4 raw bytes.
    :ivar flags: the BOOTP flags word.
    :ivar ciaddr: client address (``ZERO_ADDRESS`` when unset).
    :ivar giaddr: relay agent address (``ZERO_ADDRESS`` when not relayed).
    :ivar mac: client hardware address, lower case with colons.
    :ivar requested_address: option 50, or ``None``.
    :ivar server_id: option 54, or ``None``.
    :ivar arch: first client architecture of option 93, or ``None``.
    :ivar vendor_class: option 60 (``b''`` when absent).
    :ivar user_class: option 77 (``b''`` when absent).
    :ivar ipxe_options: option 175 was present (iPXE's own options).
    :ivar client_id: option 61 with its code and length bytes, echoed back
        (RFC 6842), or ``b''``.
    :ivar relay_info: option 82 with its code and length bytes, echoed back
        to the relay (RFC 3046), or ``b''``.
    """

    message_type: int
    xid: bytes
    flags: int
    ciaddr: bytes
    giaddr: bytes
    mac: str
    requested_address: bytes | None = None
    server_id: bytes | None = None
    arch: int | None = None
    vendor_class: bytes = b''
    user_class: bytes = b''
    ipxe_options: bool = False
    client_id: bytes = b''
    relay_info: bytes = b''

    @property
    def is_ipxe(self):
        """iPXE says who it is in its user class or its option 175."""
        return self.ipxe_options or b'iPXE' in self.user_class

    @property
    def is_http_client(self):
        return self.vendor_class.startswith(b'HTTPClient')

    @property
    def is_pxe_client(self):
        return (self.vendor_class.startswith(b'PXEClient')
                or self.arch is not None)


@dataclasses.dataclass(frozen=True, slots=True)
class Binding:
    """One MAC's address and options, ready for the packet path.

    Built once per reservation when the cache loads; hashable so the codec
    can key its reply templates by it.
    """

    mac: str
    address: bytes
    prefixlen: int
    gateway: str | None = None
    dns_servers: tuple = ()
    hostname: str | None = None
    lease_time: int | None = None
    bootfile: str | None = None
    ipxe_script_url: str | None = None
    tftp_server: str | None = None
    http_boot_url: str | None = None
    node: str | None = None
    dynamic: bool = False

    @property
    def address_text(self):
        return socket.inet_ntoa(self.address)

    @classmethod
    def from_reservation(cls, reservation):
        """:param reservation: a :class:`vmetal_ironic.reservation.Reservation`.
        :raises ValueError: the address is not IPv4.
        """
        boot = reservation.boot
        return cls(mac=reservation.mac,
                   address=socket.inet_aton(reservation.address),
                   prefixlen=reservation.prefixlen,
                   gateway=reservation.gateway,
                   dns_servers=tuple(reservation.dns_servers),
                   hostname=reservation.hostname,
                   lease_time=reservation.lease_time,
                   bootfile=boot.bootfile,
                   ipxe_script_url=boot.ipxe_script_url,
                   tftp_server=boot.tftp_server,
                   http_boot_url=boot.http_boot_url,
                   node=reservation.node)


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The agent-wide answers, from ``[vmetal_dhcp_agent]``.

    :ivar server_address: this agent's address, packed; it is the server
        identifier, so every agent of an active-active set has its own.
    :ivar lease_time: default lease time in seconds.
    :ivar boot_files: ``{architecture: file}`` for firmware PXE clients.
    :ivar default_boot_file: for PXE clients of no or unknown architecture.
    :ivar ipxe_script_url: where iPXE clients are sent.
    :ivar http_boot_url: where UEFI HTTP boot clients are sent.
    :ivar no_pxedhcp: tell iPXE not to wait for ProxyDHCP offers.
    """

    server_address: bytes
    lease_time: int = 3600
    boot_files: tuple = ()
    default_boot_file: str | None = 'undionly.kpxe'
    ipxe_script_url: str | None = None
    http_boot_url: str | None = None
    no_pxedhcp: bool = True

    @property
    def server_address_text(self):
        return socket.inet_ntoa(self.server_address)

    def boot_file_for(self, arch):
        for known, name in self.boot_files:
            if known == arch:
                return name
        return self.default_boot_file


@dataclasses.dataclass(frozen=True, slots=True)
class BootReply:
    """Boot information added to an OFFER/ACK.

    :ivar kind: ``pxe`` (firmware PXE: TFTP boot file), ``ipxe`` (iPXE: the
        script URL) or ``http`` (UEFI HTTP boot: a URL).
    :ivar filename: the BOOTP file field and option 67.
    :ivar next_server: siaddr and option 66 (``pxe``/``ipxe``), or ``None``.
    :ivar vendor_class: option 60 to echo (``HTTPClient``), or ``None``.
    :ivar no_pxedhcp: add option 175 with sub-option 176 = 1.
    """

    kind: str
    filename: str
    next_server: str | None = None
    vendor_class: bytes | None = None
    no_pxedhcp: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request.

    :ivar action: an :class:`Action`.
    :ivar reason: short text for the exchange log line.
    :ivar binding: the client's :class:`Binding` (``None`` when ignored or
        for a NAK to an unknown address).
    :ivar boot: a :class:`BootReply`, or ``None`` for a plain client.
    """

    action: Action
    reason: str
    binding: Binding | None = None
    boot: BootReply | None = None


def choose_boot(request, binding, settings):
    """Pick the boot information for a client, or ``None``.

    An OS's DHCP client (no PXE vendor class, no architecture, not iPXE) gets
    none. The reservation's own boot options win over the agent's defaults.

    :returns: a :class:`BootReply` or ``None``.
    """
    next_server = binding.tftp_server or settings.server_address_text
    if request.is_ipxe:
        url = binding.ipxe_script_url or settings.ipxe_script_url
        if url:
            return BootReply('ipxe', url, next_server=next_server,
                             no_pxedhcp=settings.no_pxedhcp)
        # Without a script, handing iPXE a boot file again would loop;
        # plain configuration at least lets it fall through to other
        # boot devices.
        return None
    if request.is_http_client:
        url = binding.http_boot_url or settings.http_boot_url
        if url:
            return BootReply('http', url, vendor_class=b'HTTPClient')
        return None
    if request.is_pxe_client:
        filename = binding.bootfile or settings.boot_file_for(request.arch)
        if filename:
            return BootReply('pxe', filename, next_server=next_server)
    return None


def _answer(action, reason, request, binding, settings):
    return Decision(action, reason, binding,
                    choose_boot(request, binding, settings))


def _check_address(request, binding, wanted, settings, state):
    if wanted == binding.address:
        return _answer(Action.ACK, state, request, binding, settings)
    return Decision(Action.NAK, f'{state}: asked for '
                    f'{socket.inet_ntoa(wanted)}, reserved '
                    f'{binding.address_text}', binding)


def decide(request, binding, settings):
    """Decide the answer to ``request``.

    :param request: a :class:`Request`.
    :param binding: the :class:`Binding` for ``request.mac``, or ``None``.
    :param settings: the agent's :class:`Settings`.
    :returns: a :class:`Decision`.
    """
    kind = request.message_type
    foreign = (request.server_id is not None
               and request.server_id != settings.server_address)
    if kind == DISCOVER:
        if binding is None:
            return Decision(Action.IGNORE, 'unknown MAC')
        return _answer(Action.OFFER, 'discover', request, binding, settings)
    if kind == REQUEST:
        if foreign:
            # The client picked another server's offer (maybe another
            # agent of ours): stay silent, a NAK would break its lease.
            return Decision(Action.IGNORE, 'request for another server')
        if binding is None:
            return Decision(Action.IGNORE, 'unknown MAC')
        if request.server_id is not None:
            wanted = request.requested_address or request.ciaddr
            return _check_address(request, binding, wanted, settings,
                                  'selecting')
        if request.requested_address is not None:
            return _check_address(request, binding,
                                  request.requested_address, settings,
                                  'init-reboot')
        if request.ciaddr != ZERO_ADDRESS:
            state = ('renewing' if request.flags & BROADCAST_FLAG == 0
                     else 'rebinding')
            return _check_address(request, binding, request.ciaddr,
                                  settings, state)
        return Decision(Action.IGNORE, 'request names no address')
    if kind in (RELEASE, DECLINE):
        if foreign:
            return Decision(Action.IGNORE,
                            f'{message_name(kind).lower()} for another '
                            'server')
        if binding is None:
            return Decision(Action.IGNORE, 'unknown MAC')
        return Decision(Action.NO_REPLY, message_name(kind).lower(),
                        binding)
    if kind == INFORM:
        if binding is None:
            return Decision(Action.IGNORE, 'unknown MAC')
        return _answer(Action.INFORM_ACK, 'inform', request, binding,
                       settings)
    return Decision(Action.IGNORE, f'{message_name(kind)} is not for a '
                    'server')


def reply_message_type(action):
    """:returns: the option 53 value for an answering action."""
    return {Action.OFFER: OFFER, Action.ACK: ACK, Action.NAK: NAK,
            Action.INFORM_ACK: ACK}[action]


def destination(request, action, client_port=68, server_port=67):
    """Where a reply goes (RFC 2131 4.1).

    Relayed requests go back to the relay's giaddr on the server port; a
    NAK is broadcast; a client that has an address (renewing, INFORM) gets
    a unicast to ciaddr; everyone else a broadcast, since a client without
    an address cannot answer ARP.

    :returns: ``(address_text, port, broadcast_flag_in_reply)``.
    """
    if request.giaddr != ZERO_ADDRESS:
        return (socket.inet_ntoa(request.giaddr), server_port,
                action is Action.NAK)
    if action is Action.NAK:
        return BROADCAST_ADDRESS, client_port, True
    if request.ciaddr != ZERO_ADDRESS and (
            action is Action.INFORM_ACK
            or request.message_type == REQUEST):
        return socket.inet_ntoa(request.ciaddr), client_port, False
    return BROADCAST_ADDRESS, client_port, False
