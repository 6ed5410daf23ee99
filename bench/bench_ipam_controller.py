"""vmetal-ipam-controller on a real kube-apiserver, the real command in
processes of its own, watched through its metrics endpoint.

Starts the same throw-away control plane as the functional tests, with
``HOSTS`` (10,000 by default) BareMetalHosts of which ``BACKLOG`` (1,000)
are claimed by Machines and have no address yet, then:

* failover with a backlog: a leader starts giving the claimed hosts their
  network, a standby campaigns beside it; the leader is killed (SIGKILL)
  once it gave a tenth; printed: the time from the kill until every
  claimed host has its outputs, beside the lease duration (the issue's
  goal: lease duration + 30 s). The Lease timing is the shipped
  Deployment's (etc/kubernetes/controller/configmap.yaml);
* full resync: a controller process starting cold over every host, which
  need nothing by then: the time from its start, and from its leading,
  until every host key was reconciled and the queue is empty, and its
  peak resident memory (VmHWM); beside it, the store's whole pass
  (``Store.reconcile``) over the same hosts in the same run (the issue's
  goal: 26 s and 90 MiB);
* reservations: ``bench_kubernetes``'s publish of ``VMETAL_BENCH_HOSTS``
  (10,000) reservations by one writer, in the same run (goal 285/s).

The controller processes get the plain environment values of the
shipped Deployment, if it sets any. ``VMETAL_BENCH_CONTROLLER_CASES``
(``failover,resync,publish``) picks the cases. Every wait is bounded
(``BUDGET`` seconds); a case that runs out of time says how far it got.
"""

import concurrent.futures
import os
import pathlib
import sys
import tempfile
import time
import tracemalloc

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kubernetes import client as k8s_client  # noqa: E402

from tests.functional import kube  # noqa: E402
from tests.functional.k8s import controller_process as process  # noqa: E402

HOSTS = int(os.environ.get('VMETAL_BENCH_CONTROLLER_HOSTS', '10000'))
BACKLOG = int(os.environ.get('VMETAL_BENCH_CONTROLLER_BACKLOG', '1000'))
BUDGET = float(os.environ.get('VMETAL_BENCH_BUDGET', '900'))
CIDR = '198.18.0.1/16'
IP_ANNOTATION = 'metal3.vcluster.com/ip-address'
CLAIMED = 'vmetal-bench/claimed'
BMH = ('metal3.io', 'v1alpha1', 'baremetalhosts')
CASES = os.environ.get('VMETAL_BENCH_CONTROLLER_CASES',
                       'failover,resync,publish').split(',')
GOAL_RESYNC = (26.0, 90)
GOAL_PUBLISH = 285


def _shipped_lease():
    """The Lease timing of the shipped ConfigMap."""
    configmap = yaml.safe_load((kube.MANIFESTS / 'controller' /
                                'configmap.yaml').read_text())
    text = configmap['data']['vmetal-ironic.conf']
    section = text.split('[vmetal_ipam_controller]', 1)[1]
    timing = {}
    for line in section.splitlines():
        key, sep, value = line.partition('=')
        if sep and key.strip() in ('lease_duration', 'renew_deadline',
                                   'retry_period'):
            timing[key.strip()] = float(value)
    return timing


def _shipped_env():
    """The Deployment's environment values that are plain values."""
    deployment = yaml.safe_load((kube.MANIFESTS / 'controller' /
                                 'deployment.yaml').read_text())
    [container] = deployment['spec']['template']['spec']['containers']
    return {item['name']: item['value'] for item in container.get('env', [])
            if 'value' in item}


def _create_hosts(custom, namespace, count, claimed):
    def create(index):
        body = {'apiVersion': 'metal3.io/v1alpha1', 'kind': 'BareMetalHost',
                'metadata': {'name': f'h{index:05d}', 'annotations': {
                    'metal3.vcluster.com/network-cidr': CIDR}},
                'spec': {'online': True, 'bootMACAddress':
                         f'52:54:00:{index >> 16 & 255:02x}:'
                         f'{index >> 8 & 255:02x}:{index & 255:02x}'}}
        if index < claimed:
            body['metadata']['labels'] = {CLAIMED: 'yes'}
            body['spec']['consumerRef'] = {'kind': 'Metal3Machine',
                                           'name': f'm{index:05d}'}
        custom.create_namespaced_custom_object(*BMH[:2], namespace, BMH[2],
                                               body)

    deadline = time.monotonic() + BUDGET
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(create, i) for i in range(count)]:
            future.result(timeout=max(1.0, deadline - time.monotonic()))


def _given(custom, namespace):
    """Claimed hosts carrying the store's outputs (a paged list)."""
    given, token = 0, None
    while True:
        kwargs = {'limit': 500, 'label_selector': CLAIMED}
        if token:
            kwargs['_continue'] = token
        page = custom.list_namespaced_custom_object(
            *BMH[:2], namespace, BMH[2], **kwargs)
        given += sum(1 for host in page['items'] if IP_ANNOTATION in (
            host['metadata'].get('annotations') or {}))
        token = page['metadata'].get('continue')
        if not token:
            return given


def _metric(replica, *key):
    return replica.metrics().get(key, 0)


def _wait(predicate, deadline, interval=0.2):
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def failover(settings, workdir, custom, namespace, lease):
    deadline = time.monotonic() + BUDGET
    env = _shipped_env()
    first = process.ControllerProcess(settings, workdir, 'first', env=env,
                                      **lease)
    second = None
    try:
        _wait(lambda: _metric(first, 'vmetal_ipam_controller_leading'),
              deadline)
        second = process.ControllerProcess(settings, workdir, 'second',
                                           env=env, **lease)
        _wait(lambda: b'campaigns' in second.log.read_bytes(), deadline)
        _wait(lambda: _metric(first, 'vmetal_ipam_controller_steps_total',
                              'ok', 'follow') >= BACKLOG // 10, deadline)
        first.kill()
        killed = time.monotonic()
        done_before = _given(custom, namespace)
        taken, given = None, done_before
        while time.monotonic() < deadline:
            if taken is None and _metric(second,
                                         'vmetal_ipam_controller_leading'):
                taken = time.monotonic() - killed
            given = _given(custom, namespace)
            if given >= BACKLOG:
                break
            time.sleep(0.5)
        finished = time.monotonic() - killed
        failed = _metric(second, 'vmetal_ipam_controller_steps_total',
                         'failed', 'follow')
        return done_before, taken, given, finished, failed
    finally:
        for replica in (first, second):
            if replica is not None:
                replica.stop()


def resync(settings, workdir):
    deadline = time.monotonic() + BUDGET
    started = time.monotonic()
    cold = process.ControllerProcess(settings, workdir, 'cold',
                                     env=_shipped_env())
    try:
        _wait(lambda: _metric(cold, 'vmetal_ipam_controller_leading'),
              deadline, interval=0.05)
        leading = time.monotonic()

        def drained():
            found = cold.metrics()
            return (found.get(('vmetal_ipam_controller_reconcile_seconds_'
                               'count', 'host'), 0) >= HOSTS
                    and found.get(('vmetal_ipam_controller_queue_depth',))
                    == 0)

        _wait(drained, deadline, interval=0.1)
        done = time.monotonic()
        found = cold.metrics()
        judged = found.get(('vmetal_ipam_controller_reconcile_seconds_count',
                            'host'), 0)
        read = found.get(('vmetal_ipam_controller_steps_total', 'ok', 'read'),
                         0)
        peak = cold.peak_rss()
    finally:
        cold.stop()
    return done - started, done - leading, judged, read, peak


def store_pass(settings):
    from vmetal_ironic.store import kubernetes as kube_store

    store = kube_store.KubernetesStore(kube.store_conf(settings))
    try:
        tracemalloc.start()
        started = time.monotonic()
        store.reconcile()
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        store.close()
    return elapsed, peak


def publish(cluster, core):
    """bench_kubernetes's reservation publish, in this run."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import bench_kubernetes

    published, rate = bench_kubernetes.reservations(cluster, core)[:2]
    return published, rate


def main():
    lease = _shipped_lease()
    print(f'{HOSTS} hosts, {BACKLOG} of them claimed with no address yet; '
          f'shipped Lease timing {lease}; load average at start '
          f'{os.getloadavg()[0]:.1f}')
    with kube.KubeCluster() as cluster, \
            tempfile.TemporaryDirectory(prefix='vbench-ctl-') as workdir:
        cluster.apply_kustomization(kube.MANIFESTS / 'rbac')
        with cluster.admin_client() as client:
            core = k8s_client.CoreV1Api(client)
            custom = k8s_client.CustomObjectsApi(client)
            namespace = f'bench-ctl-{os.getpid()}'
            core.create_namespace({'metadata': {'name': namespace}})
            settings = cluster.settings(namespace=namespace,
                                        reconcile_interval=0)
            started = time.monotonic()
            _create_hosts(custom, namespace, HOSTS, BACKLOG)
            print(f'{HOSTS} hosts created in '
                  f'{time.monotonic() - started:.1f} s')

            if 'failover' in CASES:
                _print_failover(lease, *failover(settings, workdir, custom,
                                                 namespace, lease))
            if 'resync' in CASES:
                _print_resync(settings, workdir)
            if 'publish' in CASES:
                published, rate = publish(cluster, core)
                print(f'reservations published by one writer: {published} '
                      f'at {rate:.0f}/s; goal {GOAL_PUBLISH}/s (load average '
                      f'{os.getloadavg()[0]:.1f})')


def _print_failover(lease, before, taken, given, finished, failed):
    print(f'failover with a backlog: leader killed with '
          f'{before}/{BACKLOG} claimed hosts given; standby leading '
          f'after {taken if taken is None else round(taken, 1)} s, '
          f'{given}/{BACKLOG} given {finished:.1f} s after the kill '
          f'({failed:.0f} failed follow steps); goal: lease duration '
          f'+ 30 s = {lease["lease_duration"] + 30:.0f} s '
          f'(load average {os.getloadavg()[0]:.1f})')


def _print_resync(settings, workdir):
    total, from_leading, judged, read, peak = resync(settings,
                                                     workdir)
    print(f'full resync, cold process: {judged:.0f}/{HOSTS} host keys '
          f'reconciled ({read:.0f} read from the API server) in '
          f'{total:.1f} s from the process start, {from_leading:.1f} '
          f's from leading; peak RSS {peak / 2 ** 20:.0f} MiB; goal: '
          f'{GOAL_RESYNC[0]:.0f} s, {GOAL_RESYNC[1]} MiB '
          f'(load average {os.getloadavg()[0]:.1f})')
    elapsed, pass_peak = store_pass(settings)
    print(f'  peer, same run: the store\'s whole pass over the same '
          f'hosts {elapsed:.1f} s, peak Python memory '
          f'{pass_peak / 2 ** 20:.0f} MiB (tracemalloc)')


if __name__ == '__main__':
    main()
