"""Hardware types that pair the stock ones with the vmetal network
interface.

Ironic accepts a node's network interface only when its hardware type
lists that exact class, and the stock ``manual-management``, ``ipmi`` and
``redfish`` types list only Ironic's own. These subclasses change nothing
but that list, with :class:`~vmetal_ironic.ironic.network.VmetalNetwork`
first so that ``vmetal`` is their default network interface (when it is
in ``[DEFAULT]enabled_network_interfaces``). Nodes that must stay on the
stock types - Metal3's - get their network identity from the vmetal DHCP
provider instead.
"""

from ironic.drivers import generic
from ironic.drivers import ipmi
from ironic.drivers import redfish

from vmetal_ironic.ironic import network


class _VmetalNetworkMixin:
    """Puts the vmetal network interface first in the supported list."""

    @property
    def supported_network_interfaces(self):
        stock = [iface for iface in super().supported_network_interfaces
                 if iface is not network.VmetalNetwork]
        return [network.VmetalNetwork, *stock]


class VmetalManualManagementHardware(_VmetalNetworkMixin,
                                     generic.ManualManagementHardware):
    """``vmetal-manual-management``: manual-management with vmetal."""


class VmetalIPMIHardware(_VmetalNetworkMixin, ipmi.IPMIHardware):
    """``vmetal-ipmi``: ipmi with vmetal."""


class VmetalRedfishHardware(_VmetalNetworkMixin, redfish.RedfishHardware):
    """``vmetal-redfish``: redfish with vmetal."""
