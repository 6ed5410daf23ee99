"""Watch the provisioning interface for going away and coming back.

The kernel binds a socket to an interface *index* (``SO_BINDTODEVICE``
takes a name but keeps the index), so when the interface is deleted and
created again -- a veth re-created, a bridge or VLAN rebuilt by a network
restart, a Multus attachment re-plugged -- the agent's sockets stay on the
dead index and hear nothing. :class:`InterfaceWatch` notices the index
changing by asking for it (``if_nametoindex``, one ioctl) at a bounded
interval; the agent then opens its sockets again.
"""

import enum
import socket


class Change(enum.Enum):
    """What :meth:`InterfaceWatch.check` found."""

    SAME = 'same'
    #: The interface no longer exists.
    GONE = 'gone'
    #: It exists with another index than the sockets are bound to.
    BACK = 'back'


def index_of(interface):
    """:returns: the interface index of ``interface`` or ``None``."""
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        return None


class InterfaceWatch:
    """Compare the interface's current index with the bound one.

    :param interface: interface name.
    :param index: the index the sockets are bound to (looked up when
        ``None``).
    """

    def __init__(self, interface, index=None):
        self.interface = interface
        self.bound_index = index if index is not None else index_of(interface)
        self.present = self.bound_index is not None

    def check(self):
        """:returns: a :class:`Change`; ``GONE`` and ``BACK`` only once per
        event (``BACK`` again until :meth:`rebound` is called)."""
        index = index_of(self.interface)
        if index is None:
            if self.present:
                self.present = False
                return Change.GONE
            return Change.SAME
        self.present = True
        if index != self.bound_index:
            return Change.BACK
        return Change.SAME

    def rebound(self):
        """The sockets are open on the current index now."""
        self.bound_index = index_of(self.interface)
        self.present = self.bound_index is not None
