"""The MTU of the interface that holds an IPv4 address.

TFTP blocks larger than the link's MTU leave as IP fragments; losing one
fragment loses the block, and large blocks multiply what a forged request
can aim at someone. dnsmasq caps ``blksize`` at the interface MTU; the
agent does the same with :func:`max_blksize`.
"""

import fcntl
import socket
import struct

# Linux <linux/sockios.h>.
_SIOCGIFADDR = 0x8915
_SIOCGIFMTU = 0x8921
# IPv4 header (no options) + UDP header + TFTP DATA header.
_OVERHEAD = 20 + 8 + 4


def _ifreq(sock, request, name):
    return fcntl.ioctl(sock.fileno(), request,
                       struct.pack('256s', name.encode()[:15]))


def interface_mtu(address):
    """:returns: the MTU of the interface holding ``address`` (IPv4, this
    network namespace), or ``None`` when no interface holds it (a wildcard
    address, or it went away)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            try:
                found = socket.inet_ntoa(
                    _ifreq(sock, _SIOCGIFADDR, name)[20:24])
            except OSError:
                continue  # no IPv4 address
            if found == address:
                return struct.unpack('i', _ifreq(sock, _SIOCGIFMTU,
                                                 name)[16:20])[0]
    return None


def named_mtu(interface):
    """:returns: the MTU of ``interface``, or ``None`` if it is gone."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            return struct.unpack('i', _ifreq(sock, _SIOCGIFMTU,
                                             interface)[16:20])[0]
        except OSError:
            return None


def max_blksize(address, ceiling, interface=None):
    """:returns: the largest TFTP block one unfragmented datagram from
    ``address`` carries, at most ``ceiling`` (``ceiling`` when the
    interface is not known).

    :param interface: the interface, when known (an address that is not
        the interface's first one is not found by :func:`interface_mtu`).
    """
    mtu = named_mtu(interface) if interface else None
    if mtu is None:
        mtu = interface_mtu(address)
    if mtu is None:
        return ceiling
    return max(8, min(ceiling, mtu - _OVERHEAD))
