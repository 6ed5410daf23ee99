"""``vmetal-ipam-controller``: follows the claims and releases addresses
for the Kubernetes store, one active replica through a Lease.

Reads ``[vmetal]``, ``[vmetal_kubernetes]`` and ``[vmetal_ipam_controller]``
from ``--config-file``; SIGTERM/SIGINT stop it cleanly (a leader gives its
Lease up). A configuration problem prints one line and exits 1.
"""

import os
import signal
import socket
import sys
import threading

from oslo_config import cfg
from oslo_log import log

from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import exception
from vmetal_ironic.conf import ipam_controller as controller_conf
from vmetal_ironic.ipam_controller import controller as controller_mod
from vmetal_ironic.ipam_controller import leader
from vmetal_ironic.ipam_controller import metrics as metrics_mod
from vmetal_ironic.store import kubernetes as kube_store

PROG = 'vmetal-ipam-controller'
LOG = log.getLogger(__name__)


def _load_conf(argv):
    conf = cfg.ConfigOpts()
    vmetal_conf.vmetal.register_opts(conf)
    vmetal_conf.kubernetes.register_opts(conf)
    controller_conf.register_opts(conf)
    log.register_options(conf)
    conf(argv, project='vmetal-ironic', prog=PROG)
    log.setup(conf, PROG)
    return conf


def build(conf):
    """``(store, controller, elector)`` from the options.

    :raises vmetal_ironic.exception.DeploymentError: no usable API.
    :raises ValueError: lease timings that do not hold together.
    """
    group = conf.vmetal_ipam_controller
    identity = group.identity or os.environ.get('POD_NAME') or (
        f'{socket.gethostname()}-{os.getpid()}')
    store = kube_store.KubernetesStore(conf)
    metrics = metrics_mod.Metrics()
    controller = controller_mod.Controller(
        store, identity, workers=group.workers,
        resync=conf.vmetal_kubernetes.reconcile_interval or None,
        max_delay=group.max_retry_delay, metrics=metrics)
    elector = leader.LeaseElector(
        store.api.client, store.namespace, identity,
        lease_duration=group.lease_duration,
        renew_deadline=group.renew_deadline,
        retry_period=group.retry_period, metrics=metrics)
    return store, controller, elector


def serve_metrics(conf, metrics):
    """The metrics endpoint, or ``None`` when disabled.

    :raises vmetal_ironic.exception.DeploymentError: the address cannot be
        bound.
    """
    group = conf.vmetal_ipam_controller
    if not group.metrics_port:
        return None
    try:
        return metrics.serve(group.metrics_host, group.metrics_port)
    except OSError as exc:
        raise exception.DeploymentError(
            f'[{controller_conf.GROUP}] cannot serve metrics on '
            f'{group.metrics_host}:{group.metrics_port}: {exc.strerror}'
        ) from None


def main(argv=None):
    """Run the controller; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    stop = threading.Event()
    try:
        conf = _load_conf(argv)
        store, controller, elector = build(conf)
        server = serve_metrics(conf, controller.metrics)
    except (exception.VmetalError, cfg.Error, ValueError) as exc:
        sys.stderr.write(f'{PROG}: error: {exc}\n')
        return 1
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    LOG.info('%s campaigns for Lease %s/%s', elector.identity,
             store.namespace, elector.name)
    try:
        elector.run(stop, controller.start, controller.stop)
    finally:
        if server is not None:
            server.shutdown()
        store.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
