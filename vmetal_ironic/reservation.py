"""DHCP reservations: what the DHCP agent answers for one MAC.

The Ironic DHCP provider publishes a reservation when Ironic wants a node
to PXE boot and withdraws it afterwards; the agent answers only MACs that
hold one. Reservations are plain data, serialised as JSON in every store.
"""

import dataclasses
import json

from vmetal_ironic import exception
from vmetal_ironic import network_data


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

    def to_dict(self):
        data = dataclasses.asdict(self)
        data['dns_servers'] = list(self.dns_servers)
        data['boot'] = self.boot.to_dict()
        return data

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data):
        """Rebuild a reservation, validating what a store hands back.

        :raises vmetal_ironic.exception.InvalidProperty: on a bad field.
        """
        try:
            boot = BootOptions(**(data.get('boot') or {}))
            return cls(mac=network_data.normalize_mac(data['mac']),
                       address=str(data['address']),
                       prefixlen=int(data['prefixlen']),
                       gateway=data.get('gateway'),
                       dns_servers=tuple(data.get('dns_servers') or ()),
                       hostname=data.get('hostname'),
                       node=data.get('node'),
                       lease_time=data.get('lease_time'),
                       boot=boot)
        except (KeyError, TypeError, ValueError) as exc:
            raise exception.InvalidProperty(
                f'reservation {data!r} is malformed: {exc}') from None

    @classmethod
    def from_json(cls, text):
        try:
            return cls.from_dict(json.loads(text))
        except ValueError:
            raise exception.InvalidProperty(
                f'reservation {text!r} is not JSON') from None
