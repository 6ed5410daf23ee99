"""Options of the ``[vmetal_bridge]`` group: the agent between the
provisioning L2 and the cluster network where Ironic runs.

The provisioning side forwards Ironic's HTTP root and the part of Ironic's
API that the IPA ramdisk calls; the cluster side carries the conductor's
calls to a ramdisk's API, toward reserved addresses only. Nothing is
routed: these are HTTP forwards with a fixed list of paths
(``doc/source/two-networks.rst``).
"""

from oslo_config import cfg

from vmetal_ironic.conf import group

GROUP = 'vmetal_bridge'

opts = [
    cfg.BoolOpt('enabled',
                default=False,
                help='Bridge the provisioning network and the cluster '
                     'network: forward Ironic\'s HTTP root and the IPA '
                     'ramdisk\'s API calls from the provisioning side, and '
                     'carry the conductor\'s calls to the ramdisk from the '
                     'cluster side. Leave off when Ironic shares the '
                     'provisioning L2 with the servers.'),
    cfg.URIOpt('ironic_http_url',
               schemes=['http', 'https'],
               help='Ironic\'s HTTP root ([deploy]http_root served over '
                    'HTTP) as the agent reaches it on the cluster network, '
                    'e.g. http://ironic.metal3.svc:6180: write it exactly '
                    'as Ironic\'s [deploy]http_url, which the agent '
                    'replaces by http_advertise_url in the iPXE scripts, '
                    'configs and commands that cross to the provisioning '
                    'side. Required when enabled.'),
    cfg.URIOpt('ironic_api_url',
               schemes=['http', 'https'],
               help='Ironic\'s API as the agent reaches it on the cluster '
                    'network, e.g. https://ironic.metal3.svc:6385: write it '
                    'exactly as Ironic\'s [service_catalog]'
                    'endpoint_override, which the agent replaces by '
                    'api_advertise_url (ipa-api-url in the boot configs). '
                    'Required when enabled.'),
    cfg.StrOpt('ca_file',
               help='CA bundle that signs the certificates of '
                    'ironic_http_url and ironic_api_url when they are '
                    'https. Unset: the system\'s CA store.'),
    cfg.HostAddressOpt('provisioning_address',
                       help='Address the provisioning-side forwards listen '
                            'on. Defaults to [vmetal_dhcp_agent]'
                            'server_address (never a wildcard: the cluster '
                            'side must not reach them).'),
    cfg.PortOpt('http_port',
                default=8080,
                help='Provisioning-side port forwarding GET and HEAD to '
                     'ironic_http_url (iPXE scripts, kernels, ramdisks, '
                     'images).'),
    cfg.PortOpt('api_port',
                default=6385,
                help='Provisioning-side port forwarding the IPA ramdisk\'s '
                     'API calls (version discovery, lookup, heartbeat, '
                     'continue_inspection) to ironic_api_url.'),
    cfg.URIOpt('http_advertise_url',
               schemes=['http'],
               help='URL servers on the provisioning side are told for '
                    'Ironic\'s HTTP root: also the base of the iPXE script '
                    'URL DHCP hands out when [vmetal_dhcp_agent]'
                    'ipxe_script_url is unset. Default: '
                    'http://<provisioning_address>:<http_port>.'),
    cfg.URIOpt('api_advertise_url',
               schemes=['http'],
               help='URL the IPA ramdisk is told for Ironic\'s API, in '
                    'place of ironic_api_url. Default: '
                    'http://<provisioning_address>:<api_port>.'),
    cfg.HostAddressOpt('callback_address',
                       help='Cluster-side address the callback proxy '
                            'listens on (the pod\'s eth0 address, or '
                            '0.0.0.0 only when the provisioning interface '
                            'cannot reach it). Required when enabled.'),
    cfg.PortOpt('callback_port',
                default=8081,
                help='Cluster-side port of the callback proxy through '
                     'which the conductor reaches the ramdisk\'s API.'),
    cfg.URIOpt('callback_advertise_url',
               schemes=['http', 'https'],
               help='Base URL the conductor is told in place of the '
                    'ramdisk\'s own callback_url: a heartbeat\'s '
                    'callback_url becomes <this>/<the heartbeat\'s source '
                    'address>. On Kubernetes, the agent\'s callback '
                    'Service. https exactly when callback_cert_file is '
                    'set. Default: http(s)://<callback_address>:'
                    '<callback_port>.'),
    cfg.StrOpt('callback_cert_file',
               help='PEM certificate (chain) the callback listener serves '
                    'TLS with, so that Ironic can keep [agent]require_tls '
                    '= true: its names must include the host of '
                    'callback_advertise_url, and Ironic checks it against '
                    '[agent]verify_ca (or a node\'s driver_info '
                    'agent_verify_ca). Unset: plain HTTP. Read at start '
                    'and checked again every callback_cert_check_interval '
                    'seconds: a new pair (a renewed Secret) serves the '
                    'next handshakes, one that does not load leaves the '
                    'previous one in service.'),
    cfg.StrOpt('callback_key_file',
               help='PEM private key of callback_cert_file (unset: the key '
                    'is in callback_cert_file).'),
    cfg.FloatOpt('callback_cert_check_interval',
                 default=30.0,
                 min=0.1,
                 help='Seconds between two checks of callback_cert_file '
                      'and callback_key_file for a new pair (their '
                      'contents are compared). The kubelet updates a '
                      'mounted Secret within a minute or two; a check '
                      'costs two small reads.'),
    cfg.PortOpt('ipa_port',
                default=9999,
                help='Port of the ramdisk\'s API (IPA\'s listen_port): the '
                     'only port the callback proxy connects to.'),
    cfg.IntOpt('max_connections',
               default=512,
               min=1,
               help='Connections the bridge serves at once over all its '
                    'listeners; past it a new connection is answered 503 '
                    'and closed.'),
    cfg.IntOpt('max_connections_per_client',
               default=32,
               min=1,
               help='Connections one source address may hold at once, so '
                    'that one slow or hostile client cannot take the '
                    'others\' slots.'),
    cfg.IntOpt('max_header_bytes',
               default=16384,
               min=1024,
               help='Largest request or response head (request line and '
                    'headers) in bytes; larger ones are refused (431/502).'),
    cfg.FloatOpt('header_timeout',
                 default=10.0,
                 min=0.1,
                 help='Seconds a client has to send a whole request head '
                      'after connecting.'),
    cfg.FloatOpt('idle_timeout',
                 default=30.0,
                 min=0.1,
                 help='Seconds either side of a forward may send or take '
                      'nothing before the connection is cut.'),
    cfg.FloatOpt('upstream_timeout',
                 default=60.0,
                 min=0.1,
                 help='Seconds to wait for an upstream to accept the '
                      'connection and send its response head; past it the '
                      'client gets 504.'),
    cfg.IntOpt('max_heartbeat_bytes',
               default=65536,
               min=1024,
               help='Largest heartbeat body read to rewrite its '
                    'callback_url (a heartbeat is about 2 KiB with a '
                    'certificate); larger ones get 413.'),
    cfg.StrOpt('cache_dir',
               help='Directory for local copies of the kernels, ramdisks '
                    'and images downloaded from ironic_http_url, served '
                    'from the kernel (sendfile) once Ironic\'s HTTP server '
                    'answers the conditional request every download makes '
                    'with 304 Not Modified; a changed file goes through '
                    'and replaces its copy, Ironic down is still 502. At '
                    'start the agent adopts the whole copies it finds '
                    '(still revalidated before they are served) and '
                    'removes unfinished fills and copies without their '
                    'record. Unset: no copies, every body is relayed. '
                    'The two-networks Kubernetes overlay sets it on an '
                    'emptyDir.'),
    cfg.IntOpt('cache_max_bytes',
               default=2147483648,
               min=0,
               help='Bytes the copies in cache_dir may take (least '
                    'recently used ones are removed first, never one '
                    'being sent); a file larger than this is relayed. 0 '
                    'turns the copies off.'),
    cfg.IntOpt('cache_send_threads',
               default=32,
               min=0,
               max=64,
               help='Threads that send the copies to servers: each takes '
                    'one download whole (sendfile, waiting for the '
                    'server\'s socket itself, at most idle_timeout at a '
                    'time), so the kernel\'s sending work for many '
                    'downloads spreads over the CPUs. While all are busy '
                    '(or with 0) a download is sent from the bridge\'s '
                    'event loop thread, one CPU for all of them.'),
]

register_opts, list_opts = group.hooks(GROUP, opts)
