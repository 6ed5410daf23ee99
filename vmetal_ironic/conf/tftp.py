"""Options of the ``[vmetal_tftp]`` group: the read-only boot-file servers
(TFTP, and HTTP for UEFI HTTP boot)."""

from oslo_config import cfg

from vmetal_ironic.conf import group

GROUP = 'vmetal_tftp'

opts = [
    cfg.BoolOpt('enabled',
                default=True,
                help='Serve boot files over TFTP from the DHCP agent.'),
    cfg.StrOpt('root',
               default='/usr/lib/ipxe',
               help='Directory served read-only (Debian\'s "ipxe" package '
                    'installs the iPXE binaries in /usr/lib/ipxe). Paths '
                    'leaving it (.., absolute paths, symlinks pointing out) '
                    'are refused.'),
    cfg.ListOpt('link_dirs',
                default=[],
                help='Directories outside "root" that symlinks inside it may '
                     'point into (Debian links /usr/lib/ipxe/ipxe.efi to '
                     '/boot/ipxe.efi: add /boot to serve it). Any other '
                     'symlink leaving the root is refused.'),
    cfg.HostAddressOpt('address',
                       help='Address to listen on; defaults to the DHCP '
                            'agent\'s server address.'),
    cfg.PortOpt('port',
                default=69,
                help='UDP port of the TFTP server.'),
    cfg.IntOpt('timeout',
               default=5,
               min=1,
               help='Seconds before an unacknowledged block is resent.'),
    cfg.IntOpt('retries',
               default=3,
               min=1,
               help='Resends of a block before the transfer is abandoned.'),
    cfg.BoolOpt('single_port',
                default=False,
                help='Send every transfer from the listening port instead '
                     'of a new port per transfer (RFC 1350). Needed when '
                     'only that port is reachable: behind NAT, kube-proxy '
                     'or a firewall without a TFTP helper.'),
    cfg.IntOpt('threads',
               default=2,
               min=1,
               max=64,
               help='Threads sharing the transfers in classic mode (a '
                    'port per transfer); each transfer stays on one. Most '
                    'of a block\'s cost is the kernel sending it, which '
                    'threads do in parallel. Single-port mode uses one. '
                    'The session limits are for the whole server.'),
    cfg.BoolOpt('compiled',
                default=True,
                help='Send the blocks of a transfer from the compiled data '
                     'path (a C module built with the agent), in both '
                     'modes: it answers each in-order acknowledgement '
                     'without the Python interpreter. Every limit and '
                     'counter is the same on both paths. When the module is '
                     'not built the Python path serves; the agent logs '
                     'which one runs.'),
    cfg.IntOpt('max_sessions',
               default=4096,
               min=1,
               help='Transfers served at once; more requests are answered '
                    'with a "server busy" error. In classic mode each '
                    'transfer holds one socket: the agent raises its '
                    'descriptor limit to fit, or lowers this value with a '
                    'warning if the hard limit is too low.'),
    cfg.IntOpt('max_windowsize',
               default=64,
               min=1,
               max=65535,
               help='Largest RFC 7440 window granted: blocks sent before '
                    'waiting for an acknowledgement (EDK2 asks for 4).'),
    cfg.IntOpt('max_timeout',
               default=10,
               min=1,
               max=255,
               help='Longest retransmission timeout a client may ask for '
                    '(RFC 2349 "timeout" option); a longer one is left out '
                    'of the answer and "timeout" applies, so a request '
                    'nobody answers holds its session for at most '
                    'max(timeout, max_timeout) x (retries + 1) seconds.'),
    cfg.IntOpt('max_sessions_per_address',
               default=32,
               min=1,
               help='Transfers one client address may hold at once; its '
                    'next request ends its oldest idle one (one that never '
                    'answered first). A full table ends the oldest '
                    'session whose client never answered rather than '
                    'refuse a new request.'),
    cfg.PortOpt('http_port',
                help='Also serve the root read-only over HTTP on this TCP '
                     'port, and answer UEFI HTTP boot clients (vendor class '
                     'HTTPClient) with a URL on the agent, unless '
                     '[vmetal_dhcp_agent]http_boot_url names another. '
                     'Unset: no HTTP.'),
    cfg.StrOpt('http_boot_file',
               default='snponly.efi',
               help='File under the root that UEFI HTTP boot clients are '
                    'sent to when [vmetal_tftp]http_port is set.'),
    cfg.IntOpt('http_max_connections',
               default=256,
               min=1,
               help='HTTP connections served at once; more are answered '
                    '503 at once.'),
    cfg.IntOpt('http_max_connections_per_address',
               default=16,
               min=1,
               help='HTTP connections one client address may hold at once; '
                    'more are answered 503. Every connection must also send '
                    'its request head within 10 s and keep reading its '
                    'answer at 64 KiB/s on average.'),
]

register_opts, list_opts = group.hooks(GROUP, opts)
