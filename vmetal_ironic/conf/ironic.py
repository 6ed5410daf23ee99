"""Options of the ``[vmetal_ironic]`` group: the plugins inside Ironic."""

from oslo_config import cfg

from vmetal_ironic.conf import group

GROUP = 'vmetal_ironic'

opts = [
    cfg.BoolOpt('inject_network_data',
                default=True,
                help='Whether the vmetal DHCP provider puts the host\'s '
                     'network_data.json into the node\'s network_data field '
                     '(read by the ramdisk) and into a config drive given as '
                     'a dict without network_data, whenever Ironic prepares '
                     'the node to boot on the provisioning network. Data a '
                     'caller supplied is never overwritten.'),
    cfg.IntOpt('lease_time',
               min=60,
               help='DHCP lease time in seconds written into every '
                    'reservation; unset leaves the choice to the DHCP '
                    'agent.'),
    cfg.IntOpt('release_deleted_nodes_interval',
               default=300,
               min=0,
               help='Seconds between sweeps of the conductor that release '
                    'the addresses of owners "Node/<uuid>" whose Ironic '
                    'node no longer exists (Ironic calls no driver when a '
                    'node is deleted). Runs in conductors that enable the '
                    'vmetal network interface; 0 disables the sweep. '
                    'Owners of Metal3 hosts (BareMetalHost/...) are never '
                    'touched: their addresses follow the BareMetalHost.'),
    cfg.FloatOpt('store_deadline',
                 default=60.0,
                 min=1.0,
                 help='Seconds one store operation made for an Ironic task '
                      '(all its API calls, their retries and a retry of the '
                      'whole operation) may take before the node\'s step '
                      'fails with a temporary error; bounds how long a '
                      'conductor worker and the node lock are held while '
                      'the store\'s API server does not answer.'),
]

register_opts, list_opts = group.hooks(GROUP, opts)
