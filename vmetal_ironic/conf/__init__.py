"""vmetal-ironic configuration: one module per option group.

Importing this package registers every group on the global ``CONF``; when
running inside Ironic, that is Ironic's own ``CONF`` object, so the vmetal
groups can live in ironic.conf.
"""

from oslo_config import cfg

from vmetal_ironic.conf import bridge
from vmetal_ironic.conf import dhcp_agent
from vmetal_ironic.conf import ironic
from vmetal_ironic.conf import kubernetes
from vmetal_ironic.conf import local_store
from vmetal_ironic.conf import tftp
from vmetal_ironic.conf import vmetal

CONF = cfg.CONF

vmetal.register_opts(CONF)
local_store.register_opts(CONF)
kubernetes.register_opts(CONF)
ironic.register_opts(CONF)
dhcp_agent.register_opts(CONF)
tftp.register_opts(CONF)
bridge.register_opts(CONF)
