import os
import socket

import pytest

from vmetal_ironic.dhcp_agent import socket_buffers

MIB = 2**20


def _rmem_max():
    with open('/proc/sys/net/core/rmem_max') as value:
        return int(value.read())


@pytest.mark.skipif(os.geteuid() != 0, reason='FORCE needs CAP_NET_ADMIN')
def test_grows_past_the_system_maximum_with_the_capability():
    size = max(4 * MIB, 2 * _rmem_max())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        got = socket_buffers.grow(sock, socket.SO_RCVBUF, size)
    # The kernel doubles what it is given, for its own bookkeeping.
    assert got == 2 * size > 2 * _rmem_max()


class RefusedForce:
    """A socket as an unprivileged process sees it: the FORCE options
    fail with EPERM (imitated: the tests run as root), the plain one is
    capped at ``cap``."""

    def __init__(self, cap):
        self.cap = cap
        self.value = None

    def setsockopt(self, level, option, size):
        if option in (socket_buffers.SO_RCVBUFFORCE,
                      socket_buffers.SO_SNDBUFFORCE):
            raise PermissionError(1, 'Operation not permitted')
        self.value = 2 * min(size, self.cap)

    def getsockopt(self, level, option):
        return self.value


def test_without_the_capability_takes_what_the_maximum_allows():
    sock = RefusedForce(cap=212992)
    assert socket_buffers.grow(sock, socket.SO_SNDBUF, 4 * MIB) == 425984
