"""The DHCP message types the agent works with: plain data, no policy.

The wire codec (:mod:`~vmetal_ironic.dhcp_agent.codec`) turns bytes into a
:class:`Request` and a :class:`Decision` into bytes; the policy
(:mod:`~vmetal_ironic.dhcp_agent.decisions`) maps a :class:`Request` and a
:class:`Binding` to a :class:`Decision`. Both import this module and
neither imports the other.
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
        to the relay (RFC 3046), or ``b''``; every instance of a split
        option 82, in order (RFC 3396).
    :ivar max_message_size: option 57, the largest DHCP message the client
        accepts, or 0 when it sent none.
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
    max_message_size: int = 0

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

    :ivar dynamic: a lease of the dynamic range, not a reservation.
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
    ntp_servers: tuple = ()

    @property
    def address_text(self):
        return socket.inet_ntoa(self.address)

    def options_only(self):
        """This binding without its MAC and address: what a reply template
        depends on once those two are patched in."""
        return dataclasses.replace(self, mac='', address=ZERO_ADDRESS,
                                   node=None)

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
                   node=reservation.node,
                   ntp_servers=tuple(reservation.ntp_servers))


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
    :ivar url_translation: an object whose ``url(text)`` turns Ironic's
        cluster-side URLs into the ones the agent's bridge advertises
        (:class:`~vmetal_ironic.dhcp_agent.bridge.urls.Translation`), or
        ``None``.
    """

    server_address: bytes
    lease_time: int = 3600
    boot_files: tuple = ()
    default_boot_file: str | None = 'undionly.kpxe'
    ipxe_script_url: str | None = None
    http_boot_url: str | None = None
    no_pxedhcp: bool = True
    url_translation: object = None

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


#: Option 53 of the reply to each answering action, keyed by the action's
#: value (``_value_``, a plain attribute): keyed by the members, or read
#: through ``.value``, it would call a Python function of :mod:`enum` on
#: every packet.
_REPLY_TYPES = {Action.OFFER.value: OFFER, Action.ACK.value: ACK,
                Action.NAK.value: NAK, Action.INFORM_ACK.value: ACK}


def reply_message_type(action):
    """:returns: the option 53 value for an answering action.
    :raises KeyError: ``action`` sends no reply.
    """
    return _REPLY_TYPES[action._value_]
