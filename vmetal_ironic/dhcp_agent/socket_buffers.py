"""Socket buffers sized past ``net.core.[rw]mem_max`` where allowed.

A boot storm sends thousands of datagrams at once; what does not fit a
socket's receive buffer is dropped by the kernel before the agent sees it.
The plain ``SO_RCVBUF`` is silently capped at ``net.core.rmem_max``
(212,992 bytes on a stock kernel, about 400 DHCP packets); the
``...FORCE`` variants pass that cap for a process holding
``CAP_NET_ADMIN``. The shipped pod does not grant it (``NET_RAW`` and
``NET_BIND_SERVICE`` only): there the node's maximum is the limit, and a
buffer smaller than asked is logged once per socket with what to change.
"""

import socket

from oslo_log import log

LOG = log.getLogger(__name__)

# Linux <asm-generic/socket.h>; Python's socket module does not name them.
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

#: option -> (its FORCE variant, its name, the sysctl that caps it)
_OPTIONS = {
    socket.SO_RCVBUF: (SO_RCVBUFFORCE, 'SO_RCVBUF', 'net.core.rmem_max'),
    socket.SO_SNDBUF: (SO_SNDBUFFORCE, 'SO_SNDBUF', 'net.core.wmem_max'),
}


def grow(sock, option, size, what='a socket'):
    """Set ``option`` (``SO_RCVBUF`` or ``SO_SNDBUF``) to ``size`` bytes,
    past the system's maximum when the process may; else as far as the
    maximum lets it (the kernel caps it without an error), with a WARNING
    naming ``what`` the buffer is for.

    :returns: what the kernel set (it doubles the request for its own
        bookkeeping).
    """
    forced, name, sysctl = _OPTIONS[option]
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    granted = sock.getsockopt(socket.SOL_SOCKET, option)
    if granted < 2 * size:
        LOG.warning('%s of %s is %d KiB, not the %d KiB asked: packets '
                    'beyond it are dropped in a burst. Raise %s on the '
                    'host, or grant the agent CAP_NET_ADMIN', name, what,
                    granted // 2048, size // 1024, sysctl)
    return granted
