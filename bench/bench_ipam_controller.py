"""vmetal-ipam-controller on a real kube-apiserver.

Starts the same throw-away control plane as the functional tests and, for
``HOSTS`` (1,000 by default) BareMetalHosts that Machines claim and that
have no address yet:

* failover with a backlog: a leader starts giving the hosts their network,
  is stopped the way a killed process stops (no Lease given up) after a
  tenth of them, and a standby that was campaigning all along takes over;
  printed: the time from the kill until every host has its outputs, beside
  the lease duration (the goal: lease duration + 30 s);
* resync: a controller starting cold over the same hosts, which need
  nothing by then: the time until its queue is empty and the peak Python
  memory, beside the store's whole pass (``Store.reconcile``) over the
  same hosts in the same run.

Every wait is bounded (``BUDGET`` seconds); a case that runs out of time
says how far it got.
"""

import concurrent.futures
import os
import pathlib
import sys
import threading
import time
import tracemalloc

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kubernetes import client as k8s_client  # noqa: E402

from tests.functional import kube  # noqa: E402

HOSTS = int(os.environ.get('VMETAL_BENCH_HOSTS', '1000'))
BUDGET = float(os.environ.get('VMETAL_BENCH_BUDGET', '900'))
CIDR = '198.18.0.1/16'
LEASE = {'lease_duration': 4.0, 'renew_deadline': 3.0, 'retry_period': 0.5}
IP_ANNOTATION = 'metal3.vcluster.com/ip-address'


def _create_hosts(custom, namespace, count):
    def create(index):
        custom.create_namespaced_custom_object(
            'metal3.io', 'v1alpha1', namespace, 'baremetalhosts', {
                'apiVersion': 'metal3.io/v1alpha1', 'kind': 'BareMetalHost',
                'metadata': {'name': f'h{index:05d}', 'annotations': {
                    'metal3.vcluster.com/network-cidr': CIDR}},
                'spec': {'bootMACAddress':
                         f'52:54:00:{index >> 16 & 255:02x}:'
                         f'{index >> 8 & 255:02x}:{index & 255:02x}',
                         'consumerRef': {'kind': 'Metal3Machine',
                                         'name': f'm{index:05d}'}}})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(create, i) for i in range(count)]:
            future.result(timeout=BUDGET)


def _given(custom, namespace):
    """Hosts carrying the store's outputs (a paged list)."""
    given, token = 0, None
    while True:
        kwargs = {'limit': 500}
        if token:
            kwargs['_continue'] = token
        page = custom.list_namespaced_custom_object(
            'metal3.io', 'v1alpha1', namespace, 'baremetalhosts', **kwargs)
        given += sum(1 for host in page['items'] if IP_ANNOTATION in (
            host['metadata'].get('annotations') or {}))
        token = page['metadata'].get('continue')
        if not token:
            return given


class Replica:
    """One in-process controller replica with its elector thread."""

    def __init__(self, cluster, namespace, identity):
        from vmetal_ironic.cmd import ipam_controller as cmd
        from vmetal_ironic.conf import ipam_controller as controller_conf

        conf = kube.store_conf(cluster.settings(namespace=namespace,
                                                reconcile_interval=0))
        controller_conf.register_opts(conf)
        conf.set_override('identity', identity, group=controller_conf.GROUP)
        for key, value in LEASE.items():
            conf.set_override(key, value, group=controller_conf.GROUP)
        self.store, self.controller, self.elector = cmd.build(conf)
        self.stop = threading.Event()
        self.thread = self.elector.start(self.stop, self.controller.start,
                                         self.controller.stop)

    def crash(self):
        """Stop as a killed process stops: the work ends, the Lease is
        left to expire."""
        self.elector.release = lambda: None
        self.close()

    def close(self):
        self.stop.set()
        self.thread.join(30)
        self.store.close()


def failover(cluster, custom, namespace):
    first = Replica(cluster, namespace, 'first')
    deadline = time.monotonic() + BUDGET
    while (first.controller.counts['follow.ok'] < HOSTS // 10
           and time.monotonic() < deadline):
        time.sleep(0.2)
    second = Replica(cluster, namespace, 'second')
    time.sleep(2)       # the standby has looked at the Lease
    done_before = _given(custom, namespace)
    first.crash()
    killed = time.monotonic()
    taken = None
    given = done_before
    while time.monotonic() < deadline:
        if taken is None and second.elector.leading:
            taken = time.monotonic() - killed
        given = _given(custom, namespace)
        if given >= HOSTS:
            break
        time.sleep(1.0)
    finished = time.monotonic() - killed
    second.close()
    return done_before, taken, given, finished


def resync(cluster, namespace):
    tracemalloc.start()
    started = time.monotonic()
    replica = Replica(cluster, namespace, 'cold')
    deadline = started + BUDGET
    controller = replica.controller
    while time.monotonic() < deadline and not (
            controller.informers_ready() and controller.busy() == 0
            and controller.counts['read.ok'] >= HOSTS):
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    judged = controller.counts['read.ok']
    replica.close()

    from vmetal_ironic.store import kubernetes as kube_store
    store = kube_store.KubernetesStore(kube.store_conf(
        cluster.settings(namespace=namespace)))
    try:
        tracemalloc.start()
        started = time.monotonic()
        store.reconcile()
        pass_seconds = time.monotonic() - started
        pass_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        store.close()
    return elapsed, peak, judged, pass_seconds, pass_peak


def main():
    with kube.KubeCluster() as cluster:
        cluster.apply_kustomization(kube.MANIFESTS / 'rbac')
        with cluster.admin_client() as client:
            core = k8s_client.CoreV1Api(client)
            custom = k8s_client.CustomObjectsApi(client)
            namespace = f'bench-ctl-{os.getpid()}'
            core.create_namespace({'metadata': {'name': namespace}})
            started = time.monotonic()
            _create_hosts(custom, namespace, HOSTS)
            print(f'{HOSTS} claimed hosts created in '
                  f'{time.monotonic() - started:.1f} s')
            before, taken, given, finished = failover(cluster, custom,
                                                      namespace)
            print(f'failover with a backlog: leader killed with '
                  f'{before}/{HOSTS} hosts given; standby leading after '
                  f'{taken if taken is None else round(taken, 1)} s, '
                  f'{given}/{HOSTS} given {finished:.1f} s after the kill '
                  f'(lease duration {LEASE["lease_duration"]:.0f} s; goal: '
                  f'lease duration + 30 s)')
            elapsed, peak, judged, pass_seconds, pass_peak = resync(
                cluster, namespace)
            print(f'cold resync of {HOSTS} hosts needing nothing: '
                  f'{judged} judged in {elapsed:.1f} s, peak '
                  f'{peak / 2 ** 20:.0f} MiB; the store\'s whole pass over '
                  f'them (same run): {pass_seconds:.1f} s, peak '
                  f'{pass_peak / 2 ** 20:.0f} MiB')


if __name__ == '__main__':
    main()
