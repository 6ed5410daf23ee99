"""Socket buffers sized past ``net.core.[rw]mem_max`` where allowed.

A boot storm sends thousands of datagrams at once; what does not fit a
socket's receive buffer is dropped by the kernel before the agent sees it.
The plain ``SO_RCVBUF`` is silently capped at ``net.core.rmem_max``
(212,992 bytes on a stock kernel, about 400 DHCP packets); the
``...FORCE`` variants pass that cap for a process holding
``CAP_NET_ADMIN``, which the agent has (its raw DHCP socket needs it).
"""

import socket

# Linux <asm-generic/socket.h>; Python's socket module does not name them.
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

_FORCED = {socket.SO_RCVBUF: SO_RCVBUFFORCE, socket.SO_SNDBUF: SO_SNDBUFFORCE}


def grow(sock, option, size):
    """Set ``option`` (``SO_RCVBUF`` or ``SO_SNDBUF``) to ``size`` bytes,
    past the system's maximum when the process may; else as far as the
    maximum lets it (the kernel caps it without an error).

    :returns: what the kernel set (it doubles the request for its own
        bookkeeping).
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, _FORCED[option], size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    return sock.getsockopt(socket.SOL_SOCKET, option)
