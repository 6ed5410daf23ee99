"""Options of the ``[vmetal_local_store]`` group: the embedded SQLite store."""

from oslo_config import cfg

from vmetal_ironic.conf import group

GROUP = 'vmetal_local_store'

opts = [
    cfg.StrOpt('database',
               default='/var/lib/vmetal-ironic/vmetal.sqlite',
               help='Path of the SQLite file holding allocations, network '
                    'data and DHCP reservations. Every process that shares '
                    'it (Ironic conductor, DHCP agent, the vmetal-ipam CLI) '
                    'sees the same state; the directory is created when '
                    'missing.'),
    cfg.FloatOpt('busy_timeout',
                 default=30.0,
                 min=0.1,
                 help='Seconds a writer waits for another process to finish '
                      'its transaction before giving up with a temporary '
                      'error.'),
]

register_opts, list_opts = group.hooks(GROUP, opts)
