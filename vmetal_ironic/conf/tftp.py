"""Options of the ``[vmetal_tftp]`` group: the read-only TFTP server."""

from oslo_config import cfg

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
]


def register_opts(conf):
    conf.register_opts(opts, group=GROUP)


def list_opts():
    return {GROUP: opts}
