"""Options of the ``[vmetal_kubernetes]`` group: the Kubernetes store."""

from oslo_config import cfg

from vmetal_ironic.conf import group

GROUP = 'vmetal_kubernetes'

opts = [
    cfg.StrOpt('api_url',
               help='URL of the Kubernetes API, e.g. https://10.0.0.1:6443. '
                    'When set, the store connects there with token or '
                    'token_file and ca_file; when unset, it uses kubeconfig '
                    'if given, else the in-cluster service account, else '
                    '~/.kube/config.'),
    cfg.StrOpt('token',
               secret=True,
               help='Bearer token for api_url. Prefer token_file.'),
    cfg.StrOpt('token_file',
               help='File holding the bearer token for api_url; read at '
                    'start.'),
    cfg.StrOpt('ca_file',
               help='CA bundle that signs the API server certificate when '
                    'api_url is used.'),
    cfg.BoolOpt('verify_ssl',
                default=True,
                help='Verify the API server certificate when api_url is '
                     'used. Turn off only in throw-away test clusters.'),
    cfg.StrOpt('kubeconfig',
               help='Path of a kubeconfig file to use instead of the '
                    'in-cluster service account.'),
    cfg.StrOpt('context',
               help='kubeconfig context to use; default: its current one.'),
    cfg.StrOpt('namespace',
               default='vmetal-system',
               help='Namespace holding the AddressClaim objects (one per '
                    'held address), the DHCPReservation objects (one per '
                    'MAC) and the network data Secrets of owners that are '
                    'not BareMetalHosts.'),
    cfg.FloatOpt('address_cache_seconds',
                 default=30.0,
                 min=0.0,
                 help='How long an allocating process trusts its list of '
                      'held addresses before listing them again. The list '
                      'only proposes candidates; creating the claim decides, '
                      'so a stale list costs retries, never a duplicate.'),
    cfg.FloatOpt('connect_timeout',
                 default=5.0,
                 min=0.1,
                 help='Seconds to wait for a TCP/TLS connection to the API.'),
    cfg.FloatOpt('request_timeout',
                 default=30.0,
                 min=0.1,
                 help='Seconds to wait for one API response.'),
    cfg.IntOpt('max_retries',
               default=5,
               min=0,
               help='Retries of one API call after a connection error, a '
                    'timeout, a 5xx or a 429 answer, before the call fails '
                    'with a temporary error.'),
    cfg.FloatOpt('retry_backoff',
                 default=0.5,
                 min=0.0,
                 help='Delay in seconds before the first retry of a failed '
                      'API call; doubled on each further retry.'),
    cfg.FloatOpt('retry_backoff_max',
                 default=8.0,
                 min=0.0,
                 help='Upper bound of the delay between two retries.'),
    cfg.IntOpt('max_conflict_retries',
               default=50,
               min=1,
               help='Attempts of one compare-and-swap write (allocating or '
                    'releasing an address, publishing or withdrawing a '
                    'reservation, patching a host, a reconcile pass) that '
                    'keeps losing to concurrent writers (HTTP 409) before '
                    'giving up with a temporary error.'),
    cfg.IntOpt('reconcile_interval',
               default=300,
               min=0,
               help='Seconds between two full resyncs of vmetal-ipam-'
                    'controller: every host is judged again and the claims '
                    'writers left half way are collected, whatever events '
                    'were missed. 0 turns the resync off (events only).'),
    cfg.ListOpt('follow_claims_namespaces',
                default=['*'],
                help='Namespaces whose BareMetalHosts vmetal-ipam-controller '
                     'gives '
                     'their address, network-data Secret and annotations '
                     'once a Machine claims them (spec.consumerRef), '
                     'without waiting for Ironic to prepare a PXE boot (a '
                     'virtual-media boot never does). "*" is every '
                     'namespace; an empty value turns it off. When several '
                     'Ironic deployments share one cluster, name the '
                     'namespaces of the hosts this one manages '
                     '(baremetal-operator\'s WATCH_NAMESPACE).'),
    cfg.StrOpt('node_type_label',
               default='vmetal-ironic.io/node-type',
               help='Label naming the node type of a BareMetalHost, as '
                    '<node type> or <node provider>.<node type> (a label '
                    'value allows no "/"). Without it '
                    'the node type is the one whose bareMetalHosts.selector '
                    'matches the host\'s labels.'),
    cfg.StrOpt('node_provider_api',
               default='management.loft.sh/v1/nodeproviders',
               help='group/version/plural of the cluster-scoped vCluster '
                    'NodeProvider resource whose spec.metal3.nodeTypes carry '
                    'node type properties.'),
    cfg.StrOpt('network_environment_api',
               default='management.loft.sh/v1/networkenvironments',
               help='group/version/plural of the cluster-scoped Network '
                    'Environment resource whose spec.properties are the '
                    'least specific property layer.'),
]

register_opts, list_opts = group.hooks(GROUP, opts)
