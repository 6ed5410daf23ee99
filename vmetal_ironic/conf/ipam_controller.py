"""Options of the ``[vmetal_ipam_controller]`` group: the controller that
follows claims and releases addresses (``vmetal-ipam-controller``). It
reaches the cluster through ``[vmetal_kubernetes]``; its resync period is
``[vmetal_kubernetes]reconcile_interval``."""

from oslo_config import cfg

from vmetal_ironic.conf import group

GROUP = 'vmetal_ipam_controller'

opts = [
    cfg.StrOpt('identity',
               help='This replica\'s name in the Lease '
                    '(holderIdentity) and in the Events it writes; '
                    'defaults to the host name and process id (in a pod: '
                    'the pod name).'),
    cfg.FloatOpt('lease_duration',
                 default=15.0,
                 min=2.0,
                 help='Seconds a standby waits on a Lease record that did '
                      'not change before it takes over; a killed leader is '
                      'replaced within about this long.'),
    cfg.FloatOpt('renew_deadline',
                 default=10.0,
                 min=1.0,
                 help='Seconds the leader keeps working without renewing '
                      'the Lease; less than lease_duration, so that it '
                      'stops before any standby starts.'),
    cfg.FloatOpt('retry_period',
                 default=2.0,
                 min=0.1,
                 help='Seconds between two looks at the Lease (a leader\'s '
                      'renew, a standby\'s check).'),
    cfg.IntOpt('workers',
               default=2,
               min=1,
               help='Threads reconciling hosts; one host is never '
                    'reconciled by two at once.'),
    cfg.FloatOpt('max_retry_delay',
                 default=60.0,
                 min=0.1,
                 help='Bound of the delay before a host whose reconcile '
                      'failed is tried again (the delay doubles from 0.5 s '
                      'on every failure).'),
    cfg.HostAddressOpt('metrics_host',
                       default='127.0.0.1',
                       help='Address of the Prometheus metrics endpoint '
                            '(every replica serves its own; the shipped '
                            'Deployment listens on the pod\'s addresses, '
                            'port metrics).'),
    cfg.PortOpt('metrics_port',
                default=0,
                help='Port of the Prometheus metrics endpoint; 0 (the '
                     'default: replicas started side by side on one '
                     'machine would contend for a fixed port) disables '
                     'it. The shipped Deployment serves it on 9568.'),
]

register_opts, list_opts = group.hooks(GROUP, opts)
