"""Turn Ironic's DHCP option list into per-MAC boot instructions.

Ironic describes the boot it wants as the option list its dnsmasq and
Neutron providers understand (``ironic/common/pxe_utils.py
dhcp_options_for_instance``): dicts with ``opt_name``, ``opt_value`` and
``ip_version``. The names carry dnsmasq tags that say which client class an
option is for:

* ``tag:!ipxe,67`` / ``!175,67`` - firmware PXE clients (not iPXE yet);
* ``tag:ipxe,67`` - iPXE clients (they send option 175 / user-class iPXE);
* a plain ``67`` - everybody, unless a ``!175,67`` exists, in which case it
  is the iPXE answer (the form Ironic uses for providers without tag
  support);
* ``66`` / ``150`` / ``255`` (dnsmasq ``server-ip-address``) - the TFTP
  server;
* ``60=HTTPClient`` - UEFI HTTP boot: the firmware bootfile is a URL.

This module only reads that list; it does no I/O and knows nothing of
Ironic's objects, so it is tested on its own. The vmetal DHCP agent speaks
IPv4 only, so IPv6 options (59 and the ``ipxe6`` tags) are ignored.
"""

import dataclasses
import re

from vmetal_ironic import reservation

BOOTFILE_NAMES = ('67', 'bootfile-name')
TFTP_NAME_NAMES = ('66', 'tftp-server')
TFTP_ADDRESS_NAMES = ('150', '255', 'server-ip-address', 'tftp-server-address')
VENDOR_CLASS_NAMES = ('60', 'vendor-class')
HTTP_CLIENT = 'HTTPClient'

# Client classes a bootfile applies to.
FIRMWARE = 'firmware'
IPXE = 'ipxe'
ANY = 'any'

_TAGS = {
    'tag:ipxe': IPXE,
    'tag:!ipxe': FIRMWARE,
    '!175': FIRMWARE,
    'tag:!175': FIRMWARE,
}
_IPV6_TAGS = ('tag:ipxe6', 'tag:!ipxe6')
_IPV4_RE = re.compile(r'^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)'
                      r'(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$')
_URL_RE = re.compile(r'^(https?|tftp)://[^\s/]+(/\S*)?$')
# What a DHCP bootfile field (128 bytes in the BOOTP header) can carry.
_MAX_BOOTFILE = 128


@dataclasses.dataclass(frozen=True)
class Skipped:
    """An option that was not used, and why (for the log)."""

    option: object
    reason: str

    def __str__(self):
        return f'{self.option!r}: {self.reason}'


@dataclasses.dataclass(frozen=True)
class ParsedOptions:
    """The result of :func:`parse`.

    :ivar boot: the :class:`~vmetal_ironic.reservation.BootOptions`.
    :ivar skipped: tuple of :class:`Skipped` for options that were unknown,
        malformed or contradicted an earlier one.
    """

    boot: reservation.BootOptions
    skipped: tuple = ()


def is_ipv4(text):
    """Tell whether ``text`` is a dotted-quad IPv4 address."""
    return bool(_IPV4_RE.match(str(text)))


def is_url(text):
    """Tell whether ``text`` is an http(s) or tftp URL."""
    return bool(_URL_RE.match(str(text)))


def _split_name(name):
    """Split ``tag:ipxe,67`` into ``('ipxe', '67')``.

    :returns: ``(client_class, code)``; ``client_class`` is ``None`` for an
        IPv6-only tag and ``'unknown'`` for a tag this module does not know.
    """
    tag, sep, code = name.rpartition(',')
    if not sep:
        return ANY, name.strip()
    tag = tag.strip()
    if tag in _IPV6_TAGS:
        return None, code.strip()
    return _TAGS.get(tag, 'unknown'), code.strip()


def _ip_version(option):
    try:
        return int(option.get('ip_version', 4) or 4)
    except (TypeError, ValueError):
        return 'bad'


def parse(options):
    """Read Ironic's option list.

    :param options: a list of ``{'opt_name', 'opt_value', 'ip_version'}``
        dicts as Ironic passes them to ``update_dhcp_opts``.
    :returns: a :class:`ParsedOptions`; never raises for bad entries, which
        are reported in ``skipped`` instead.
    """
    skipped = []
    bootfiles = {FIRMWARE: None, IPXE: None, ANY: None}
    tftp = {'address': None, 'name': None}
    http_client = False

    def skip(option, reason):
        skipped.append(Skipped(option, reason))

    def keep(slot, key, value, option):
        if slot[key] is None:
            slot[key] = value
        elif slot[key] != value:
            skip(option, f'contradicts the earlier value {slot[key]!r}')

    for option in options or ():
        if not isinstance(option, dict):
            skip(option, 'is not a mapping')
            continue
        name = option.get('opt_name')
        value = option.get('opt_value')
        if not isinstance(name, str) or not name.strip():
            skip(option, 'has no opt_name')
            continue
        if value is None or not isinstance(value, str) or not value.strip():
            skip(option, 'has no opt_value')
            continue
        value = value.strip()
        version = _ip_version(option)
        if version == 6:
            # The agent answers DHCPv4 only; Ironic always sends both.
            continue
        if version != 4:
            skip(option, 'has an ip_version that is neither 4 nor 6')
            continue
        client_class, code = _split_name(name)
        if client_class is None:
            continue
        if client_class == 'unknown':
            skip(option, 'has a tag this provider does not know')
            continue
        if code in BOOTFILE_NAMES:
            if len(value) > _MAX_BOOTFILE:
                skip(option, f'bootfile is longer than {_MAX_BOOTFILE} '
                             'characters')
            elif any(char.isspace() for char in value):
                skip(option, 'bootfile contains white space')
            else:
                keep(bootfiles, client_class, value, option)
        elif client_class != ANY:
            skip(option, 'only bootfile options may carry a client tag')
        elif code in TFTP_ADDRESS_NAMES:
            if is_ipv4(value):
                keep(tftp, 'address', value, option)
            else:
                skip(option, 'TFTP server address is not an IPv4 address')
        elif code in TFTP_NAME_NAMES:
            # Option 66 may be a host name; the agent needs an address for
            # next-server, so only an address is used.
            if is_ipv4(value):
                keep(tftp, 'name', value, option)
            else:
                skip(option, 'TFTP server name is not an IPv4 address')
        elif code in VENDOR_CLASS_NAMES:
            if value == HTTP_CLIENT:
                http_client = True
            else:
                skip(option, f'vendor class is not {HTTP_CLIENT}')
        else:
            skip(option, 'is an option this provider does not handle')

    firmware = bootfiles[FIRMWARE]
    ipxe = bootfiles[IPXE]
    untagged = bootfiles[ANY]
    if untagged is not None:
        if firmware is not None and ipxe is None:
            # "!175,67=<loader>" plus "67=<script>": the plain one is what
            # a client that already runs iPXE gets.
            ipxe = untagged
        elif firmware is None:
            firmware = untagged
    if ipxe is not None and not is_url(ipxe):
        skipped.append(Skipped(ipxe, 'iPXE script is not an http(s) or '
                                     'tftp URL'))
        ipxe = None

    http_boot_url = None
    if http_client and firmware is not None:
        if is_url(firmware):
            http_boot_url = firmware
            firmware = None
        else:
            skipped.append(Skipped(firmware, 'HTTP boot was asked for but '
                                             'the bootfile is not a URL'))
    boot = reservation.BootOptions(
        bootfile=firmware,
        ipxe_script_url=ipxe,
        tftp_server=tftp['address'] or tftp['name'],
        http_boot_url=http_boot_url)
    return ParsedOptions(boot=boot, skipped=tuple(skipped))
