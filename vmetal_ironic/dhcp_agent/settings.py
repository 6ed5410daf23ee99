"""The agent's configuration, read and checked: ``[vmetal_dhcp_agent]``
turned into :class:`~vmetal_ironic.dhcp_agent.messages.Settings` and an optional
:class:`~vmetal_ironic.dhcp_agent.dynamic.DynamicPool`.

Every problem is one :class:`ConfigError` line naming the option and the
value, raised before anything is opened.
"""

import fcntl
import ipaddress
import os
import socket
import struct

from vmetal_ironic import exception
from vmetal_ironic import reservation
from vmetal_ironic.dhcp_agent import dynamic as dynamic_mod
from vmetal_ironic.dhcp_agent import http_boot
from vmetal_ironic.dhcp_agent import messages

_SIOCGIFADDR = 0x8915


class ConfigError(exception.DeploymentError):
    """The agent cannot start with this configuration."""


def interface_address(interface):
    """:returns: the first IPv4 address of ``interface`` as text.

    :raises ConfigError: no such interface or no IPv4 address on it.
    """
    if not os.path.exists(f'/sys/class/net/{interface}'):
        raise ConfigError(f'[vmetal_dhcp_agent]interface {interface!r} does '
                          'not exist')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            result = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR,
                                 struct.pack('256s', interface.encode()[:15]))
        except OSError:
            raise ConfigError(
                f'interface {interface!r} has no IPv4 address; set '
                '[vmetal_dhcp_agent]server_address or configure one'
            ) from None
    return socket.inet_ntoa(result[20:24])


def _boot_files(table):
    files = []
    for arch, name in sorted((table or {}).items()):
        try:
            files.append((int(arch), name))
        except ValueError:
            raise ConfigError(f'[vmetal_dhcp_agent]boot_files key {arch!r} '
                              'is not an architecture number') from None
    return tuple(files)


def _url(value, name):
    if value and '://' not in value:
        raise ConfigError(f'[vmetal_dhcp_agent]{name} {value!r} is not a '
                          'URL')
    if value and len(value.encode()) > reservation.OPTION_MAX:
        raise ConfigError(f'[vmetal_dhcp_agent]{name} is longer than the '
                          '255 bytes a DHCP option holds')
    return value or None


def settings_from_conf(conf, server_address, ipxe_script_default=None,
                       url_translation=None):
    """:returns: :class:`~vmetal_ironic.dhcp_agent.messages.Settings`.

    :param ipxe_script_default: the iPXE script URL when
        ``ipxe_script_url`` is unset (the bridge's, when it is on).
    :param url_translation: the bridge's URL translation, when it is on.

    :raises ConfigError: on a bad value.
    """
    group = conf.vmetal_dhcp_agent
    return messages.Settings(
        server_address=socket.inet_aton(server_address),
        lease_time=group.lease_time,
        boot_files=_boot_files(group.boot_files),
        default_boot_file=group.default_boot_file or None,
        ipxe_script_url=(_url(group.ipxe_script_url, 'ipxe_script_url')
                         or ipxe_script_default),
        http_boot_url=(_url(group.http_boot_url, 'http_boot_url')
                       or http_boot.agent_url(conf, server_address)),
        no_pxedhcp=group.no_pxedhcp,
        url_translation=url_translation)


def dynamic_from_conf(conf):
    """:returns: a :class:`~vmetal_ironic.dhcp_agent.dynamic.DynamicPool` or
    ``None`` when no range is configured.

    :raises ConfigError: on a bad range.
    """
    group = conf.vmetal_dhcp_agent
    if not group.dynamic_range:
        return None
    try:
        first, last = dynamic_mod.parse_range(group.dynamic_range)
        for server in group.dynamic_dns_servers:
            ipaddress.IPv4Address(server)
    except ValueError as exc:
        raise ConfigError(f'[vmetal_dhcp_agent]{exc}') from None
    return dynamic_mod.DynamicPool(
        first, last, group.dynamic_prefixlen, gateway=group.dynamic_gateway,
        dns_servers=group.dynamic_dns_servers,
        lease_time=group.dynamic_lease_time)


def inspection_from_conf(conf):
    """:returns: ``(first, last)`` of the shared inspection range, or
    ``None`` when none is configured.

    :raises ConfigError: a bad range, or both ranges set.
    """
    group = conf.vmetal_dhcp_agent
    if not group.inspection_range:
        return None
    if group.dynamic_range:
        raise ConfigError('[vmetal_dhcp_agent]inspection_range and '
                          'dynamic_range are both set: choose the shared '
                          'range or the per-agent one')
    try:
        first, last = dynamic_mod.parse_range(group.inspection_range)
        for server in group.dynamic_dns_servers:
            ipaddress.IPv4Address(server)
    except ValueError as exc:
        message = str(exc).replace('dynamic range', 'inspection_range')
        raise ConfigError(f'[vmetal_dhcp_agent]{message}') from None
    return first, last
