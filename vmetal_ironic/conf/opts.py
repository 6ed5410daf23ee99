"""Option listing for oslo-config-generator (``oslo.config.opts``)."""

from vmetal_ironic.conf import bridge
from vmetal_ironic.conf import dhcp_agent
from vmetal_ironic.conf import ipam_controller
from vmetal_ironic.conf import ironic
from vmetal_ironic.conf import kubernetes
from vmetal_ironic.conf import local_store
from vmetal_ironic.conf import tftp
from vmetal_ironic.conf import vmetal

# One entry per option-group module; the generator walks them in order.
_GROUP_MODULES = (
    vmetal,
    local_store,
    kubernetes,
    ipam_controller,
    ironic,
    dhcp_agent,
    tftp,
    bridge,
)


def list_opts():
    """Return ``[(group, [opts])]`` for every vmetal-ironic group."""
    result = []
    for module in _GROUP_MODULES:
        for group, options in module.list_opts().items():
            result.append((group, options))
    return result
