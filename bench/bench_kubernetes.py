"""Kubernetes store at fleet scale on a real kube-apiserver.

Starts the same throw-away control plane as the functional tests (etcd +
kube-apiserver + kube-controller-manager, tests/functional/kube.py) and
measures, for ``HOSTS`` (10,000) hosts in one /16:

* allocation: allocations per second at 1 and 8 allocator processes
  (``VMETAL_BENCH_ALLOCATORS``) released together, and API requests per
  allocation (claim create, owner record create, claim read back); then
  one writer with several allocations in flight
  (``VMETAL_BENCH_WRITER_IN_FLIGHT``, default 8; empty: not run): one
  process, one store, that many threads allocating at once, as an Ironic
  conductor's worker pool does -- printed apart from the one-allocation-
  at-a-time writer, which it does not replace;
* reservations: the publish rate of one writer (one DHCPReservation per
  MAC) with 1 and with the store's bulk number of creates in flight
  (``VMETAL_BENCH_IN_FLIGHT``, e.g. ``1,4,8``), each from an empty
  namespace, and where the CPU per publish went; the agent's cold load
  of all of them (paged list into the agent's ReservationCache), the
  change-to-agent latency (publish returns -> the agent's cache, fed by
  its list-then-watch follower, holds it; p50/p99 over ``CHANGES``
  changes) and the memory the loaded cache takes;
* one reconcile pass over ``HOSTS`` BareMetalHosts and their claims: time
  and peak Python memory.

Each figure is printed beside the one of the previous release (the
ConfigMap store, README "Benchmarks"), and the allocation beside the local
SQLite store measured in the same run. Every loop is bounded in count and
in time (``BUDGET`` seconds per case): a case that runs out of time says
how far it got.

Each case starts from what a real 10,000-host cluster holds, not from
what earlier cases left: an allocation case's namespace (10,000 claims
and 10,000 owner records) is deleted, and the namespace controller's
deletes waited for, before the next allocation case; the last one's stay
(one fleet's) for the publishes and the reconcile pass. Each publish
level's reservations go the same way before the next level. The bench
prints the objects the cluster holds before each case: the API server's
watch cache checks its consistency with etcd by listing every object of
a kind (Kubernetes 1.34 and later), so what is left behind costs every
later case.
"""

import concurrent.futures
import os
import pathlib
import statistics
import sys
import threading
import time
import tracemalloc

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kubernetes import client as k8s_client  # noqa: E402

from tests.functional import kube  # noqa: E402

HOSTS = int(os.environ.get('VMETAL_BENCH_HOSTS', '10000'))
CHANGES = int(os.environ.get('VMETAL_BENCH_CHANGES', '200'))
BUDGET = float(os.environ.get('VMETAL_BENCH_BUDGET', '900'))
# Allocator processes per run (``VMETAL_BENCH_ALLOCATORS``, e.g. ``1,4``)
# and the cases to run (``VMETAL_BENCH_CASES``, e.g. ``allocation``).
CONCURRENCY = tuple(int(n) for n in os.environ.get(
    'VMETAL_BENCH_ALLOCATORS', '1,8').split(','))
# Allocations in flight in one writer (threads of one allocator process
# sharing its store), each level a case of its own after the processes.
WRITER_IN_FLIGHT = tuple(int(n) for n in os.environ.get(
    'VMETAL_BENCH_WRITER_IN_FLIGHT', '8').split(',') if n.strip())
CASES = frozenset(os.environ.get(
    'VMETAL_BENCH_CASES', 'allocation,reservations,reconcile').split(','))
CIDR = '198.18.0.1/16'
# Creates in flight per publish level (``VMETAL_BENCH_IN_FLIGHT``); the
# default is 1 and the store's bulk publish's own number.
IN_FLIGHT = os.environ.get('VMETAL_BENCH_IN_FLIGHT')
# Reservations per bulk call (the budget is checked between calls).
PUBLISH_CHUNK = 1000
# A directory: kube-apiserver runs with profiling on, and a CPU profile of
# PROFILE_SECONDS is taken during each allocation case and the publish
# (``go tool pprof -top <file>`` reads them).
PROFILE_DIR = os.environ.get('VMETAL_BENCH_PROFILE')
PROFILE_SECONDS = 30

# The ConfigMap store of the previous release (README, bench_kubernetes
# with 160 hosts; issue 9 for the reservations ConfigMap).
PREVIOUS = {
    ('allocate', 1): '93.0/s, 2.00 req; v2 before this: 157.5/s, 3.00 req',
    ('allocate', 8): '47.5/s, 4.86 req; v2 before this: 141.6/s, 3.01 req',
    'publish': '~15/s, stops at 2,808 (1 MiB ConfigMap)',
    'cold load': 'one GET of <= 1 MiB (2,808 max)',
    'latency': 'watch of one ConfigMap; silent 30 s polling after 410',
    'reconcile': 'one unpaginated full LIST of every host',
}


def _mac(index):
    return f'52:54:{index >> 24 & 255:02x}:{index >> 16 & 255:02x}:' \
           f'{index >> 8 & 255:02x}:{index & 255:02x}'


def _store(settings):
    from vmetal_ironic.store import kubernetes as kube_store
    return kube_store.KubernetesStore(kube.store_conf(settings))


def _allocator(settings, namespace, indexes, deadline, in_flight, gate):
    """Worker process: claim an address per index, as the Machine of host
    ``h<index>`` (no host read: the bare IPAM cost), ``in_flight`` at
    once (threads sharing the process's store, as a conductor's workers
    share its store)."""
    from vmetal_ironic import owner as owner_mod
    from vmetal_ironic.ipam import pool as ipam_pool

    store = _store(settings)
    pool = ipam_pool.parse_pool(CIDR)
    done, errors = [], []

    def allocate(index):
        if time.time() > deadline:
            return
        holder = owner_mod.Owner('Metal3Machine', namespace, f'm{index:05d}')
        host = {'metadata': {'namespace': namespace, 'name': f'h{index:05d}'}}
        try:
            store.addresses.allocate(pool, holder, _mac(index), host=host)
            done.append(index)
        except Exception as exc:  # reported, not fatal to the run
            errors.append(f'{type(exc).__name__}: {exc}')

    try:
        gate[0].put(os.getpid())
        gate[1].wait(120)
        # CPU from here on: the allocations, not the process's start.
        cpu_start = time.process_time()
        if in_flight > 1:
            with concurrent.futures.ThreadPoolExecutor(in_flight) as threads:
                list(threads.map(allocate, indexes))
        else:
            for index in indexes:
                allocate(index)
        return (len(done), store.api.requests, time.time(), errors[:3],
                time.process_time() - cpu_start)
    finally:
        store.close()


def _local_allocator(path, indexes, gate):
    from vmetal_ironic.ipam import pool as ipam_pool
    from vmetal_ironic.store import local

    store = local.LocalStore(path=path)
    pool = ipam_pool.parse_pool(CIDR)
    gate[0].put(os.getpid())
    gate[1].wait(120)
    try:
        for index in indexes:
            store.allocate(pool, f'Metal3Machine/bench/m{index:05d}',
                           _mac(index))
        return time.time()
    finally:
        store.close()


def _namespace(core, name):
    core.create_namespace({'metadata': {'name': name}})
    return name


def _clear(core, namespace):
    """Delete ``namespace`` and wait until the namespace controller has
    deleted everything in it, so that none of its deletes land in the
    next case's timing.

    :returns: the seconds it took.
    """
    from kubernetes.client import exceptions as k8s_exceptions

    started = time.monotonic()
    core.delete_namespace(namespace)
    limit = started + BUDGET
    while time.monotonic() < limit:
        try:
            core.read_namespace(namespace)
        except k8s_exceptions.ApiException as exc:
            if exc.status == 404:
                return time.monotonic() - started
            raise
        time.sleep(0.5)
    raise RuntimeError(f'namespace {namespace} still there after '
                       f'{BUDGET:.0f} s')


def _fresh(core, custom, previous):
    """Before a case: the previous case's namespace gone (when there is
    one), and what the cluster holds said."""
    if previous is not None:
        print(f'  (namespace {previous} deleted and gone in '
              f'{_clear(core, previous):.1f} s, outside the timing)')
    print(f'  before: {_held(custom)}')


def _ratio(rates, what):
    if len(rates) > 1:
        most, fewest = max(rates), min(rates)
        print(f'  {most} {what} / {fewest}: '
              f'{rates[most] / rates[fewest]:.2f}x')


def _held(custom):
    """What the cluster holds of the store's kinds, for people: a list of
    one item per kind gives the rest's count."""
    counts = []
    for plural in ('addressclaims', 'addressowners', 'dhcpreservations'):
        page = custom.list_cluster_custom_object(
            'vmetal-ironic.io', 'v1alpha1', plural, limit=1)
        metadata = page.get('metadata') or {}
        count = len(page.get('items') or []) + int(
            metadata.get('remainingItemCount') or 0)
        counts.append(f'{plural} {count}')
    return 'the cluster holds ' + ', '.join(counts)


class _Profile:
    """With ``VMETAL_BENCH_PROFILE`` set, a CPU profile of kube-apiserver
    taken in a thread while the case runs, written as ``<name>.pprof``."""

    def __init__(self, cluster, name):
        self.cluster, self.name = cluster, name
        self.thread = None

    def _take(self):
        # Some seconds in: the worker processes are set up and writing.
        time.sleep(8)
        data = self.cluster.cpu_profile(PROFILE_SECONDS)
        path = pathlib.Path(PROFILE_DIR) / f'{self.name}.pprof'
        path.write_bytes(data)
        print(f'  profile: {path}')

    def __enter__(self):
        if PROFILE_DIR:
            self.thread = threading.Thread(target=self._take, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread is not None:
            self.thread.join(PROFILE_SECONDS + 60)


def allocation(cluster, core, workers, in_flight=1):
    namespace = _namespace(
        core, f'vbench-alloc-{workers}-{in_flight}-{os.getpid()}')
    settings = cluster.settings(namespace=namespace)
    deadline = time.time() + BUDGET
    cpu_before = cluster.cpu_seconds()
    with _Profile(cluster, f'kube-apiserver-allocate-{workers}'):
        results, started = kube.run_together(
            workers, _allocator,
            lambda i: (settings, namespace, range(i, HOSTS, workers),
                       deadline, in_flight),
            timeout=BUDGET + 120)
    cpu_after = cluster.cpu_seconds()
    done = sum(r[0] for r in results)
    requests = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results) - started
    errors = [e for r in results for e in r[3]]
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0)
           for name in cpu_after}
    cpu['allocators'] = sum(r[4] for r in results)
    cpu['wall'] = elapsed
    import tempfile
    directory = tempfile.mkdtemp(prefix='vbench-')
    path = os.path.join(directory, 'vmetal.sqlite')
    finished, local_started = kube.run_together(
        workers, _local_allocator,
        lambda i: (path, range(i, HOSTS, workers)))
    local_rate = HOSTS / (max(finished) - local_started)
    return namespace, done, elapsed, requests, errors, local_rate, cpu


def _cpu_line(cpu, done, what='allocation', client='allocators',
              whats=None):
    """Where the CPU went: seconds per 1000 of ``what`` (plural
    ``whats``) by process, and how many of the machine's cores they kept
    busy together."""
    per = 1000 / max(done, 1)
    parts = [f'{name} {cpu.get(name, 0.0) * per:.1f} s'
             for name in ('kube-apiserver', 'etcd', client)]
    total = sum(cpu.get(name, 0.0) for name in
                ('kube-apiserver', 'etcd', 'kube-controller-manager',
                 client))
    busy = total / max(cpu['wall'], 1e-9)
    # With every core doing nothing else, the rate this CPU per
    # ``what`` allows.
    ceiling = os.cpu_count() / max(total / max(done, 1), 1e-9)
    return (f'  CPU per 1000 {whats or what + "s"}: {", ".join(parts)}; '
            f'together {busy:.2f} of {os.cpu_count()} cores busy over the run '
            f'(load average {os.getloadavg()[0]:.1f}); {os.cpu_count()} '
            f'cores at this CPU per {what}: {ceiling:.0f}/s at most')


def _reservation(index, node='n'):
    from vmetal_ironic import reservation as reservation_mod

    return reservation_mod.Reservation(
        mac=_mac(index), address=f'198.18.{index >> 8 & 255}.'
        f'{index & 255}', prefixlen=16, gateway='198.18.0.1',
        dns_servers=('198.18.0.53',), hostname=f'h{index:05d}',
        node=f'{node}-{index:05d}', lease_time=3600,
        boot=reservation_mod.BootOptions(
            bootfile='snponly.efi', tftp_server='198.18.0.3',
            ipxe_script_url='http://198.18.0.3:8080/boot.ipxe'))


def _publish(cluster, core, in_flight, rates):
    """Publish ``HOSTS`` reservations into a new namespace through the
    store's bulk publish with ``in_flight`` creates at once; print the
    rate (kept in ``rates``) and where the CPU went.

    :returns: ``(namespace, writer, published)``; the caller closes the
        writer.
    """
    namespace = _namespace(core, f'vbench-res-{in_flight}-{os.getpid()}')
    writer = _store(cluster.settings(namespace=namespace))
    deadline = time.time() + BUDGET
    published = skipped = 0
    cpu_before = cluster.cpu_seconds()
    own_before = time.process_time()
    started = time.monotonic()
    with _Profile(cluster, f'kube-apiserver-publish-{in_flight}'):
        for first in range(0, HOSTS, PUBLISH_CHUNK):
            if time.time() > deadline:
                break
            done = writer.reservations.publish_many(
                [(_reservation(index), None) for index in
                 range(first, min(HOSTS, first + PUBLISH_CHUNK))],
                in_flight=in_flight)
            published += done.count
            skipped += len(done.skipped)
    elapsed = time.monotonic() - started
    cpu_after = cluster.cpu_seconds()
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0)
           for name in cpu_after}
    cpu['publisher'] = time.process_time() - own_before
    cpu['wall'] = elapsed
    rates[in_flight] = published / elapsed
    print(f'publish {in_flight:>3} in flight: {published} at '
          f'{rates[in_flight]:.0f}/s, {skipped} skipped, '
          f'{writer.api.requests / max(published, 1):.2f} requests each '
          f'(previous: {PREVIOUS["publish"]})')
    print(_cpu_line(cpu, published, 'publish', 'publisher', 'publishes'))
    return namespace, writer, published


def reservations(cluster, core, custom):
    """The publish levels (printed as they finish), then the agent's cold
    load and the change-to-agent latency on the last level's
    reservations."""
    from vmetal_ironic.dhcp_agent import cache as cache_mod
    from vmetal_ironic.store.kubernetes import reservations as store_res

    levels = tuple(int(n) for n in (
        IN_FLIGHT or f'1,{store_res.IN_FLIGHT}').split(','))
    rates = {}
    namespace = writer = None
    try:
        for in_flight in levels:
            if writer is not None:
                writer.close()
            _fresh(core, custom, namespace)
            namespace, writer, published = _publish(cluster, core,
                                                    in_flight, rates)
        _ratio(rates, 'in flight')

        agent = _store(cluster.settings(namespace=namespace))
        try:
            tracemalloc.start()
            started = time.monotonic()
            cache = cache_mod.ReservationCache()
            poller = cache_mod.RevisionPoller(agent, cache, interval=10)
            poller.refresh(force=True)
            cold = time.monotonic() - started
            memory = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            loaded = len(cache)

            poller.start()
            latencies = []
            deadline = time.time() + BUDGET
            try:
                for change in range(CHANGES):
                    if time.time() > deadline:
                        break
                    index = change * 37 % max(published, 1)
                    updated = _reservation(index, node=f'c{change}')
                    writer.publish_reservation(updated)
                    written = time.monotonic()
                    limit = written + 30
                    while True:
                        binding = cache.get(updated.mac)
                        if (binding is not None
                                and binding.node == updated.node):
                            break
                        if time.monotonic() > limit:
                            break
                        time.sleep(0.001)
                    latencies.append(time.monotonic() - written)
            finally:
                poller.stop()
        finally:
            agent.close()
        return loaded, cold, memory, latencies
    finally:
        if writer is not None:
            writer.close()
        if namespace is not None:
            _clear(core, namespace)


def _create_hosts(custom, namespace, count):
    from vmetal_ironic import owner as owner_mod
    from vmetal_ironic.store.kubernetes import kube_names

    def create(index):
        # Provisioned, claimed, with the store's outputs: a pass has
        # nothing to give them (as in a fleet whose claims were followed).
        secret = kube_names.network_data_secret_name(
            owner_mod.for_host(namespace, f'h{index:05d}'))
        custom.create_namespaced_custom_object(
            'metal3.io', 'v1alpha1', namespace, 'baremetalhosts', {
                'apiVersion': 'metal3.io/v1alpha1', 'kind': 'BareMetalHost',
                'metadata': {'name': f'h{index:05d}'},
                'spec': {'bootMACAddress': _mac(index), 'consumerRef': {
                    'kind': 'Metal3Machine', 'name': f'm{index:05d}'},
                    'networkData': {'name': secret},
                    'preprovisioningNetworkDataName': secret,
                    'online': True}})
        # BMO's CRD keeps status in its subresource, written apart.
        custom.patch_namespaced_custom_object_status(
            'metal3.io', 'v1alpha1', namespace, 'baremetalhosts',
            f'h{index:05d}', {'status': {
                'operationalStatus': 'OK', 'errorMessage': '',
                'errorCount': 0, 'poweredOn': True,
                'provisioning': {'ID': '', 'state': 'provisioned'}}},
            _content_type='application/merge-patch+json')

    deadline = time.time() + BUDGET
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(create, index) for index in range(count)
                   if index % 100]           # 1 in 100 hosts was deleted
        for future in futures:
            future.result(timeout=max(1, deadline - time.time()))


def reconcile(cluster, custom, namespace, claimed):
    _create_hosts(custom, namespace, claimed)
    store = _store(cluster.settings(namespace=namespace))
    try:
        before = store.api.requests
        tracemalloc.start()
        started = time.monotonic()
        released = store.reconcile()
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return elapsed, peak, len(released), store.api.requests - before
    finally:
        store.close()


def main():
    print(f'{HOSTS} hosts in {CIDR}; {CHANGES} changes for latency; '
          f'{BUDGET:.0f} s budget per case; allocators are processes')
    bindir = kube.kube_binaries()
    with kube.KubeCluster(bindir, profiling=bool(PROFILE_DIR)) as cluster, \
            cluster.admin_client() as api:
        cluster.apply_kustomization(kube.MANIFESTS / 'rbac')
        print('watches kube-apiserver serves before the cases: '
              + ', '.join(f'{group or "core"}/{resource} {count}'
                          for (group, resource), count in
                          sorted(cluster.open_watches().items())))
        core = k8s_client.CoreV1Api(api)
        custom = k8s_client.CustomObjectsApi(api)
        print(f'\n{"allocation":<12} {"procs":>5} {"done":>7} '
              f'{"allocs/s":>9} {"API req/alloc":>14} {"SQLite allocs/s":>16}'
              f'   previous release')
        rates = {}
        namespace = None
        cases = [(workers, 1) for workers in CONCURRENCY]
        cases += [(1, in_flight) for in_flight in WRITER_IN_FLIGHT]
        for workers, in_flight in cases if 'allocation' in CASES else ():
            # One fleet's claims and owners, not one per case.
            _fresh(core, custom, namespace)
            (namespace, done, elapsed, requests, errors, local,
             cpu) = allocation(cluster, core, workers, in_flight)
            if in_flight == 1:
                rates[workers] = done / elapsed
                what = 'allocate'
                previous = PREVIOUS.get(('allocate', workers),
                                        'not measured')
            else:
                # Not a row of the processes' ratio: one writer, several
                # allocations at once (a conductor's worker pool).
                what = f'1 writer, {in_flight} in flight:'
                previous = 'one writer, one at a time: the row with 1 proc'
            print(f'{what:<12} {workers:>5} {done:>7} '
                  f'{done / elapsed:>9.1f} {requests / max(done, 1):>14.2f} '
                  f'{local:>16.1f}   {previous}')
            print(_cpu_line(cpu, done))
            if errors:
                print(f'  errors, first: {errors[0]}')
        _ratio(rates, 'allocators')
        if 'reservations' in CASES:
            print('\nreservations')
            loaded, cold, memory, latencies = reservations(cluster, core,
                                                           custom)
            latencies.sort()
            p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
            print(f'  agent cold load of {loaded}: {cold:.2f} s, '
                  f'{memory / 2 ** 20:.1f} MiB in the cache '
                  f'(previous: {PREVIOUS["cold load"]})')
            print(f'  change to agent over {len(latencies)} changes: p50 '
                  f'{statistics.median(latencies) * 1000:.0f} ms, p99 '
                  f'{p99 * 1000:.0f} ms (previous: {PREVIOUS["latency"]})')
        if 'reconcile' not in CASES or namespace is None:
            return

        elapsed, peak, released, requests = reconcile(cluster, custom,
                                                      namespace, HOSTS)
        print(f'\nreconcile pass over {HOSTS} hosts and claims: '
              f'{elapsed:.1f} s, peak {peak / 2 ** 20:.0f} MiB, '
              f'{requests} API requests, {released} released (the hosts '
              f'deleted) (previous: {PREVIOUS["reconcile"]})')


if __name__ == '__main__':
    main()
