"""Options of the ``[vmetal_dhcp_agent]`` group: the PXE DHCP responder."""

from oslo_config import cfg

from vmetal_ironic.conf import group

GROUP = 'vmetal_dhcp_agent'

DEFAULT_BOOT_FILES = {
    # RFC 4578 / IANA processor architecture types (option 93).
    '0': 'undionly.kpxe',     # x86 BIOS
    '6': 'ipxe32.efi',        # x86 UEFI (32 bit)
    '7': 'snponly.efi',       # x64 UEFI
    '9': 'snponly.efi',       # EBC, announced by some x64 UEFI firmware
    '11': 'snponly-arm64.efi',  # ARM64 UEFI
}

opts = [
    cfg.StrOpt('interface',
               help='Provisioning interface the agent answers on (the '
                    'socket is bound to it with SO_BINDTODEVICE). '
                    'Required.'),
    cfg.IPOpt('server_address',
              version=4,
              help='IPv4 address of this agent on the provisioning '
                   'network: the DHCP server identifier, next-server and '
                   'TFTP address. Defaults to the first IPv4 address of '
                   '"interface". Every agent of an active-active pair has '
                   'its own.'),
    cfg.PortOpt('port',
                default=67,
                help='UDP port the DHCP server listens on.'),
    cfg.PortOpt('client_port',
                default=68,
                help='UDP port replies to clients are sent to.'),
    cfg.IntOpt('lease_time',
               default=3600,
               min=60,
               help='Lease time in seconds when the reservation sets '
                    'none.'),
    cfg.StrOpt('ipxe_script_url',
               help='URL of the iPXE script (Ironic\'s boot.ipxe) handed to '
                    'clients that are already iPXE (user class "iPXE" or '
                    'option 175). A reservation\'s own URL wins.'),
    cfg.DictOpt('boot_files',
                default=DEFAULT_BOOT_FILES,
                help='Boot file for a firmware PXE client by its client '
                     'architecture (option 93), as arch:file pairs. A '
                     'reservation\'s own boot file wins.'),
    cfg.StrOpt('default_boot_file',
               default='undionly.kpxe',
               help='Boot file for a PXE client that sends no or an '
                    'unknown architecture.'),
    cfg.StrOpt('http_boot_url',
               help='URL given to UEFI HTTP boot clients (vendor class '
                    '"HTTPClient"). Unset: they are answered without boot '
                    'information.'),
    cfg.StrOpt('dynamic_range',
               help='Optional first-last IPv4 range (e.g. '
                    '192.0.2.100-192.0.2.150) leased to MACs without a '
                    'reservation, for inspection of unknown hosts, held in '
                    'this agent\'s memory only: run it on one agent per '
                    'L2, or use inspection_range. Unset (and no '
                    'inspection_range): unknown MACs are ignored.'),
    cfg.StrOpt('inspection_range',
               help='Optional first-last IPv4 range leased to MACs without '
                    'a reservation, shared by every agent of the scope '
                    '([vmetal]address_scope) through the store: each lease '
                    'is an AddressClaim, so any agent answers an unknown '
                    'host with the same address and no address goes to two '
                    'MACs. Needs a store that shares leases (kubernetes); '
                    'excludes dynamic_range. The dynamic_prefixlen, '
                    'dynamic_gateway, dynamic_dns_servers and '
                    'dynamic_lease_time options apply to its leases. Every '
                    'agent of a scope names the same range.'),
    cfg.FloatOpt('inspection_clock_skew',
                 default=30.0,
                 min=0.0,
                 help='Seconds past a shared inspection lease\'s expiry '
                      'before an agent takes it back: room for agents '
                      'whose clocks differ.'),
    cfg.IntOpt('inspection_offer_hold',
               default=60,
               min=5,
               help='Seconds a shared inspection address is held for a MAC '
                    'that sent a DISCOVER and has not yet sent a REQUEST; '
                    'the REQUEST extends it to dynamic_lease_time. A flood '
                    'of DISCOVERs from MACs that never request pins the '
                    'range for this long (plus inspection_clock_skew), not '
                    'for a whole lease.'),
    cfg.BoolOpt('inspection_conflict_check',
                default=True,
                help='Before a new shared inspection lease is offered, ask '
                     'the L2 by ARP (RFC 5227 probe, waiting '
                     'inspection_conflict_timeout) whether something '
                     'already uses the address; if so it is held for nobody '
                     'for dynamic_lease_time and another one is offered. '
                     'Answers are remembered for 60 s. Reserved addresses '
                     'are never probed.'),
    cfg.FloatOpt('inspection_conflict_timeout',
                 default=0.1,
                 min=0.01,
                 max=5.0,
                 help='Seconds the conflict check waits for an ARP answer '
                      'before it takes the address for free. The wait is '
                      'off the packet path (other clients are answered '
                      'meanwhile) but delays this client\'s OFFER: raise it '
                      'on an L2 whose hosts answer ARP slowly.'),
    cfg.IntOpt('dynamic_prefixlen',
               default=24,
               min=1,
               max=32,
               help='Prefix length sent with dynamic-range leases.'),
    cfg.IPOpt('dynamic_gateway',
              version=4,
              help='Router sent with dynamic-range leases.'),
    cfg.ListOpt('dynamic_dns_servers',
                default=[],
                help='DNS servers sent with dynamic-range leases.'),
    cfg.IntOpt('dynamic_lease_time',
               default=600,
               min=10,
               help='Lease time of dynamic-range and inspection-range '
                    'leases in seconds. A shared inspection lease is '
                    'renewed in the store (one write) once half of it has '
                    'passed.'),
    cfg.BoolOpt('no_pxedhcp',
                default=True,
                help='Send iPXE clients encapsulated option 175 sub-option '
                     '176 = 1 ("no-pxedhcp") so they do not wait ~3 s for '
                     'ProxyDHCP offers.'),
    cfg.BoolOpt('send_ra',
                default=True,
                help='Send IPv6 router advertisements without a prefix and '
                     'with router lifetime 0 on the interface (on start, '
                     'periodically and in answer to router solicitations), '
                     'which ends iPXE\'s ~13 s wait for IPv6 '
                     'autoconfiguration. Changes no route on the link.'),
    cfg.FloatOpt('ra_interval',
                 default=10.0,
                 min=1.0,
                 help='Seconds between unsolicited router advertisements. '
                      'Values below 3 are raised to 3: RFC 4861 6.2.6 '
                      'keeps multicast advertisements at least 3 s '
                      'apart.'),
    cfg.FloatOpt('interface_check_interval',
                 default=1.0,
                 min=0.1,
                 help='Seconds between checks that the provisioning '
                      'interface still has the index the sockets are bound '
                      'to; when it was deleted and created again the '
                      'sockets are opened again on it.'),
    cfg.FloatOpt('poll_interval',
                 default=1.0,
                 min=0.05,
                 help='Seconds between checks of the store\'s reservation '
                      'revision; the packet path never calls the store.'),
    cfg.IntOpt('receive_buffer',
               default=4 * 1024 * 1024,
               min=65536,
               help='SO_RCVBUF of the DHCP socket in bytes, so a boot storm '
                    'is queued rather than dropped. Set past '
                    'net.core.rmem_max (SO_RCVBUFFORCE) where the agent '
                    'has CAP_NET_ADMIN, else capped at it.'),
    cfg.IntOpt('batch_size',
               default=256,
               min=1,
               help='Most packets handled per wake-up of the work loop '
                    'before checking for stop and reload requests.'),
    cfg.FloatOpt('summary_interval',
                 default=60.0,
                 min=1.0,
                 help='Seconds between the summary lines logged at info.'),
    cfg.HostAddressOpt('metrics_host',
                       default='127.0.0.1',
                       help='Address of the Prometheus metrics endpoint.'),
    cfg.PortOpt('metrics_port',
                default=9567,
                help='Port of the Prometheus metrics endpoint; 0 '
                     'disables it.'),
]

register_opts, list_opts = group.hooks(GROUP, opts)
