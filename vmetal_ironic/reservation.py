"""DHCP reservations: what the DHCP agent answers for one MAC.

The Ironic DHCP provider publishes a reservation when Ironic wants a node
to PXE boot and withdraws it afterwards; the agent answers only MACs that
hold one. Reservations are plain data, serialised as JSON in every store.

Every field is checked when a reservation is made, whoever makes it (the
provider, a store reading back a row a human may have edited): a value
the DHCP agent could not put on the wire is refused here with one line
naming the field and the value, never later on the packet path.
"""

import dataclasses
import ipaddress
import json

from vmetal_ironic import exception
from vmetal_ironic import network_data

#: A DHCP option holds at most 255 bytes (RFC 2132 section 2: one length
#: octet); longer values would need RFC 3396 splitting, which PXE ROMs do
#: not read back.
OPTION_MAX = 255
#: IPv4 addresses one option 6 or 42 can carry.
ADDRESSES_MAX = OPTION_MAX // 4
#: Lease times travel as a 32-bit count of seconds (option 51).
LEASE_TIME_MAX = 2 ** 32 - 1


def _refuse(mac, field, value, why):
    raise exception.InvalidProperty(
        f'reservation of {mac}: {field} {value!r} {why}')


def _check_text(mac, field, value):
    if value is None:
        return
    if not isinstance(value, str):
        _refuse(mac, field, value, 'is not a string')
    size = len(value.encode('utf-8', 'surrogatepass'))
    if not 0 < size <= OPTION_MAX:
        _refuse(mac, field, value if size <= 64 else value[:61] + '...',
                f'is {size} bytes, not 1..{OPTION_MAX}')


def _check_address(mac, field, value, version=None):
    if not isinstance(value, str):
        _refuse(mac, field, value, 'is not an IP address')
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        _refuse(mac, field, value, 'is not an IP address')
    if version is not None and parsed.version != version:
        _refuse(mac, field, value, f'is not an IPv{version} address')
    return parsed


def _check_addresses(mac, field, values, version):
    if len(values) > ADDRESSES_MAX:
        _refuse(mac, field, f'{len(values)} servers',
                f'are more than the {ADDRESSES_MAX} one DHCP option holds')
    for value in values:
        _check_address(mac, field, value, version)


def _check_int(mac, field, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(mac, field, value, 'is not an integer')
    if not low <= value <= high:
        _refuse(mac, field, value, f'is not {low}..{high}')


@dataclasses.dataclass(frozen=True)
class BootOptions:
    """Per-MAC boot instructions; ``None`` fields fall back to the agent's
    configured defaults.

    :ivar bootfile: file for a firmware (non-iPXE) PXE client, chosen by
        Ironic for the node's boot mode, e.g. ``snponly.efi``.
    :ivar ipxe_script_url: URL an iPXE client is sent to.
    :ivar tftp_server: next-server / option 66 address.
    :ivar http_boot_url: boot URL for UEFI HTTP boot clients.
    """

    bootfile: str | None = None
    ipxe_script_url: str | None = None
    tftp_server: str | None = None
    http_boot_url: str | None = None

    def check(self, mac):
        """:raises vmetal_ironic.exception.InvalidProperty: a field cannot
        be sent in a DHCP option."""
        for field in dataclasses.fields(self):
            _check_text(mac, f'boot.{field.name}',
                        getattr(self, field.name))

    def to_dict(self):
        return {key: value for key, value in dataclasses.asdict(self).items()
                if value is not None}


@dataclasses.dataclass(frozen=True)
class Reservation:
    """One MAC's DHCP answer.

    :ivar mac: normalised MAC address (lower case, colons).
    :ivar address: IPv4 address to hand out.
    :ivar prefixlen: prefix length of the address's network.
    :ivar gateway: router option, or ``None``.
    :ivar dns_servers: tuple of DNS server addresses.
    :ivar hostname: option 12, or ``None``.
    :ivar node: the Ironic node UUID the reservation belongs to, if any.
    :ivar lease_time: lease time in seconds, or ``None`` for the default.
    :ivar boot: :class:`BootOptions`.
    :ivar ntp_servers: tuple of NTP server addresses (option 42).
    :raises vmetal_ironic.exception.InvalidProperty: a field is out of
        range; the message names the field and the value.
    """

    mac: str
    address: str
    prefixlen: int
    gateway: str | None = None
    dns_servers: tuple = ()
    hostname: str | None = None
    node: str | None = None
    lease_time: int | None = None
    boot: BootOptions = dataclasses.field(default_factory=BootOptions)
    ntp_servers: tuple = ()

    def __post_init__(self):
        mac = self.mac
        if not isinstance(mac, str):
            _refuse(mac, 'mac', mac, 'is not a MAC address')
        address = _check_address(mac, 'address', self.address)
        _check_int(mac, 'prefixlen', self.prefixlen, 0,
                   address.max_prefixlen)
        if self.gateway is not None:
            _check_address(mac, 'gateway', self.gateway, address.version)
        for field in ('dns_servers', 'ntp_servers'):
            if not isinstance(getattr(self, field), (list, tuple)):
                _refuse(mac, field, getattr(self, field), 'is not a list')
        # Tuples whatever the caller passed, so the value stays hashable.
        object.__setattr__(self, 'dns_servers', tuple(self.dns_servers))
        object.__setattr__(self, 'ntp_servers', tuple(self.ntp_servers))
        _check_addresses(mac, 'dns_servers', self.dns_servers,
                         address.version)
        _check_addresses(mac, 'ntp_servers', self.ntp_servers,
                         address.version)
        _check_text(mac, 'hostname', self.hostname)
        if self.lease_time is not None:
            _check_int(mac, 'lease_time', self.lease_time, 1,
                       LEASE_TIME_MAX)
        if not isinstance(self.boot, BootOptions):
            _refuse(mac, 'boot', self.boot, 'is not boot options')
        self.boot.check(mac)

    def to_dict(self):
        data = dataclasses.asdict(self)
        data['dns_servers'] = list(self.dns_servers)
        data['boot'] = self.boot.to_dict()
        if self.ntp_servers:
            data['ntp_servers'] = list(self.ntp_servers)
        else:
            # Rows stay readable by agents that predate the field.
            del data['ntp_servers']
        return data

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data):
        """Rebuild a reservation, validating what a store hands back.

        :raises vmetal_ironic.exception.InvalidProperty: on a bad field.
        """
        if not isinstance(data, dict):
            raise exception.InvalidProperty(
                f'reservation {_short(data)} is not an object')
        try:
            mac = network_data.normalize_mac(data['mac'])
        except (KeyError, TypeError, ValueError,
                exception.VmetalError) as exc:
            raise exception.InvalidProperty(
                f'reservation {_short(data)}: mac {data.get("mac")!r} is not '
                f'a MAC address ({exc})') from None
        missing = [key for key in ('address', 'prefixlen') if key not in data]
        if missing:
            raise exception.InvalidProperty(
                f'reservation of {mac}: {", ".join(missing)} missing')
        boot = data.get('boot') or {}
        if not isinstance(boot, dict):
            _refuse(mac, 'boot', boot, 'is not an object')
        unknown = sorted(set(boot) - {f.name for f in
                                      dataclasses.fields(BootOptions)})
        if unknown:
            _refuse(mac, 'boot', unknown[0], 'is not a boot option')
        servers = {}
        for key in ('dns_servers', 'ntp_servers'):
            value = data.get(key) or ()
            if not isinstance(value, (list, tuple)):
                _refuse(mac, key, value, 'is not a list')
            servers[key] = tuple(value)
        return cls(mac=mac,
                   address=data['address'],
                   prefixlen=data['prefixlen'],
                   gateway=data.get('gateway'),
                   hostname=data.get('hostname'),
                   node=data.get('node'),
                   lease_time=data.get('lease_time'),
                   boot=BootOptions(**boot),
                   **servers)

    @classmethod
    def from_json(cls, text):
        """:raises vmetal_ironic.exception.InvalidProperty: not JSON or a
        bad field."""
        try:
            return cls.from_dict(json.loads(text))
        except ValueError:
            raise exception.InvalidProperty(
                f'reservation {_short(text)} is not JSON') from None


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'
