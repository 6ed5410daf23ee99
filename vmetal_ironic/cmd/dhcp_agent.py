"""``vmetal-dhcp-agent``: the PXE responder of the provisioning network.

Reads ``[vmetal_dhcp_agent]``, ``[vmetal_tftp]`` and the store options
from ``--config-file``; SIGTERM/SIGINT stop it cleanly, SIGHUP reloads the
configuration files and the reservations. A configuration problem prints
one line and exits 1.
"""

import signal
import sys

from oslo_config import cfg
from oslo_log import log

from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import exception
from vmetal_ironic import store as store_mod
from vmetal_ironic.dhcp_agent import agent as agent_mod

PROG = 'vmetal-dhcp-agent'

_cli_opts = [
    cfg.StrOpt('interface',
               help='Provisioning interface; overrides '
                    '[vmetal_dhcp_agent]interface.'),
]


def _load_conf(argv):
    conf = cfg.ConfigOpts()
    vmetal_conf.vmetal.register_opts(conf)
    vmetal_conf.local_store.register_opts(conf)
    vmetal_conf.dhcp_agent.register_opts(conf)
    vmetal_conf.tftp.register_opts(conf)
    vmetal_conf.bridge.register_opts(conf)
    conf.register_cli_opts(_cli_opts)
    log.register_options(conf)
    conf(argv, project='vmetal-ironic', prog=PROG)
    log.setup(conf, PROG)
    return conf


def main(argv=None):
    """Run the agent; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    store = None
    agent = None
    try:
        conf = _load_conf(argv)
        # Check the agent's own options before touching the store.
        agent = agent_mod.Agent(conf, None, interface=conf.interface)
        # Before start(), which reads the store and may take a while: a
        # SIGHUP then is a reload request, not the default "terminate".
        signal.signal(signal.SIGTERM, agent.request_stop)
        signal.signal(signal.SIGINT, agent.request_stop)
        signal.signal(signal.SIGHUP, agent.request_reload)
        store = store_mod.get_store(conf)
        agent.attach_store(store)
        agent.start()
    except (exception.VmetalError, cfg.Error, ValueError) as exc:
        sys.stderr.write(f'{PROG}: error: {exc}\n')
        if store is not None:
            store.close()
        return 1
    try:
        agent.run()
    finally:
        store.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
