"""Kubernetes store: allocations per second on a real kube-apiserver.

Starts the same throw-away control plane as the functional tests (etcd +
kube-apiserver + kube-controller-manager, tests/functional/kube.py) and
measures, at 1 and 8 concurrent allocator processes:

* ``allocate``: the bare IPAM write (list the pool ConfigMaps, one
  compare-and-swap patch, retried on 409);
* ``ensure``: the whole per-host flow Ironic runs (host, node type and
  environment lookup, allocation, network-data Secret, host annotations);

reporting allocations per second and API requests per allocation. The peer,
measured in the same run with the same process counts and flow, is the
local SQLite store (one file, ``BEGIN IMMEDIATE`` transactions).
"""

import os
import pathlib
import shutil
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kubernetes import client as k8s_client  # noqa: E402

from tests.functional import kube  # noqa: E402
from vmetal_ironic import properties as props  # noqa: E402

HOSTS = 160
CONCURRENCY = (1, 8)
CIDR = '198.18.0.1/16'


def _local_worker(path, owners, bare, gate):
    from vmetal_ironic import identity
    from vmetal_ironic.ipam import pool as ipam_pool
    from vmetal_ironic.store import local

    store = local.LocalStore(path=path)
    pool = ipam_pool.parse_pool(CIDR)
    layer = {props.NETWORK_CIDR: CIDR}
    gate[0].put(os.getpid())
    gate[1].wait(120)
    try:
        for owner, mac in owners:
            if bare:
                store.allocate(pool, owner, mac)
            else:
                identity.ensure(store, owner, mac=mac, layers=[layer])
        return time.time()
    finally:
        store.close()


def _kube_bare_worker(settings, owners, gate):
    return kube.ensure_hosts(settings, owners, gate, pool_cidr=CIDR)


def _hosts(prefix, count):
    return [(f'BareMetalHost/{prefix}/h{i:04d}',
             f'52:54:00:01:{i >> 8 & 255:02x}:{i & 255:02x}')
            for i in range(count)]


def _kube_case(cluster, core, custom, workers, flow):
    """:returns: ``(seconds, API requests, errors)``."""
    namespace = f'vk8s-bench-{os.getpid()}-{workers}-{flow}'
    core.create_namespace({'metadata': {'name': namespace}})
    try:
        hosts = _hosts(namespace, HOSTS)
        if flow == 'ensure':
            for owner, mac in hosts:
                custom.create_namespaced_custom_object(
                    'metal3.io', 'v1alpha1', namespace, 'baremetalhosts',
                    {'apiVersion': 'metal3.io/v1alpha1',
                     'kind': 'BareMetalHost',
                     'metadata': {'name': owner.rsplit('/', 1)[1],
                                  'annotations': {props.NETWORK_CIDR: CIDR}},
                     'spec': {'bootMACAddress': mac}})
        settings = cluster.settings(namespace=namespace)
        func = kube.ensure_hosts if flow == 'ensure' else _kube_bare_worker
        results, started = kube.run_together(
            workers, func, lambda i: (settings, hosts[i::workers]))
    finally:
        core.delete_namespace(namespace)
    elapsed = max(finished for _, _, finished in results) - started
    errors = [r for chunk, _, _ in results for r in chunk if r[2]]
    requests = sum(count for _, count, _ in results)
    return elapsed, requests, errors


def _local_case(workers, flow):
    directory = tempfile.mkdtemp(prefix='vk8s-bench-')
    try:
        path = os.path.join(directory, 'vmetal.sqlite')
        hosts = _hosts('local', HOSTS)
        finished, started = kube.run_together(
            workers, _local_worker,
            lambda i: (path, hosts[i::workers], flow == 'allocate'))
        return max(finished) - started
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main():
    print(f'{HOSTS} hosts per run; pool {CIDR}; each run in a fresh '
          'namespace / SQLite file; workers are separate processes')
    bindir = kube.kube_binaries()
    rows = []
    with kube.KubeCluster(bindir) as cluster, cluster.admin_client() as api:
        core = k8s_client.CoreV1Api(api)
        custom = k8s_client.CustomObjectsApi(api)
        for workers in CONCURRENCY:
            for flow in ('allocate', 'ensure'):
                elapsed, requests, errors = _kube_case(cluster, core, custom,
                                                       workers, flow)
                if errors:
                    print(f'  kubernetes {flow} x{workers}: {len(errors)} '
                          f'errors, first: {errors[0]}')
                local = _local_case(workers, flow)
                rows.append((flow, workers, HOSTS / elapsed,
                             requests / HOSTS, HOSTS / local))
    print(f'{"flow":<9} {"procs":>5} {"kube alloc/s":>13} '
          f'{"API req/alloc":>14} {"local(SQLite) alloc/s":>22} '
          f'{"local/kube":>10}')
    for flow, workers, kube_rate, per_alloc, local_rate in rows:
        print(f'{flow:<9} {workers:>5} {kube_rate:>13.1f} {per_alloc:>14.2f} '
              f'{local_rate:>22.1f} {local_rate / kube_rate:>9.1f}x')


if __name__ == '__main__':
    main()
