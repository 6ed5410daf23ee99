"""Options of the ``[vmetal]`` group: the store and default properties."""

from oslo_config import cfg

from vmetal_ironic.conf import group

GROUP = 'vmetal'

opts = [
    cfg.StrOpt('store',
               default='local',
               help='Where allocations, network data and DHCP reservations '
                    'are kept: "local" (an embedded SQLite file, for labs '
                    'and devstack) or "kubernetes" (BareMetalHosts, '
                    'the store\'s own objects and Secrets; for Metal3 and '
                    'vMetal). Names '
                    'an entry point of the vmetal_ironic.stores namespace.'),
    cfg.StrOpt('network_cidr',
               help='Default for the metal3.vcluster.com/network-cidr '
                    'property, as <gateway>/<prefix> (e.g. 192.0.2.1/24). '
                    'Used when neither the host nor its node type sets it; '
                    'the least specific layer, like a default network '
                    'environment.'),
    cfg.StrOpt('network_ip_range',
               help='Default for metal3.vcluster.com/network-ip-range: '
                    'a-b[,c-d...] ranges inside network_cidr to allocate '
                    'from.'),
    cfg.StrOpt('dns_servers',
               help='Default for metal3.vcluster.com/dns-servers: '
                    'comma-separated IPv4 addresses.'),
    cfg.IntOpt('mtu',
               default=1500,
               min=576,
               max=9216,
               help='MTU written into the link of generated '
                    'network_data.json documents.'),
    cfg.StrOpt('address_scope',
               default='default',
               regex=r'^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$',
               help='Name of the layer-2 network the pools of this '
                    'installation hand out addresses on. An address is held '
                    'once per scope, whatever pool, prefix or range asked '
                    'for it, so overlapping pools never share an address. '
                    'Installations whose pools are on separate L2s with '
                    'overlapping address spaces give each its own scope (a '
                    'lowercase DNS label).'),
    cfg.ListOpt('reserved_addresses',
                default=[],
                help='Infrastructure IPv4 addresses no host may be given '
                     '(the DHCP agent\'s own address, routers, the API '
                     'virtual IP...), e.g. 192.168.100.3. They are held in '
                     'the same namespace as allocations, so neither a pool '
                     'nor a custom network-data document can take them.'),
]

register_opts, list_opts = group.hooks(GROUP, opts)
