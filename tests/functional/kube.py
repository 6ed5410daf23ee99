"""A real, throw-away Kubernetes control plane for tests and benchmarks.

:class:`KubeCluster` runs etcd, kube-apiserver and kube-controller-manager
(garbage collector and namespace controllers only) on free 127.0.0.1
ports, every file in one temporary directory. The three binaries come
from ``tools/build-kube``, which builds a current release from its Go
modules once and caches them outside the repository;
:func:`kube_binaries` runs it when they are not cached.

Authentication is a static token file: an admin token in
``system:masters`` and a token for the identity of the shipped
ServiceAccount ``vmetal-system/vmetal-ironic`` (so the RBAC test exercises
exactly the shipped bindings). The API serves a certificate made here with
openssl, so clients verify TLS against :attr:`KubeCluster.ca_file`.

Importable from ``bench/`` too (no pytest dependency).
"""

import concurrent.futures
import ctypes
import multiprocessing
import os
import pathlib
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import yaml
from kubernetes import client as k8s_client
from oslo_config import cfg

from tests import kubectl
from vmetal_ironic.lab import netns
from vmetal_ironic.lab.ironic import free_port

from vmetal_ironic.conf import kubernetes as kube_conf
from vmetal_ironic.conf import vmetal as vmetal_conf

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / 'tools' / 'build-kube'
MANIFESTS = REPO / 'etc' / 'kubernetes'
STORE_SA = 'system:serviceaccount:vmetal-system:vmetal-ironic'
CONTROLLER_SA = 'system:serviceaccount:vmetal-system:vmetal-ipam-controller'
BUILD_TIMEOUT = 40 * 60
BINARIES = ('kube-apiserver', 'kube-controller-manager', 'etcd')
READY_TIMEOUT = 60


def kube_binaries():
    """Directory with kube-apiserver, kube-controller-manager and etcd,
    built (once, cached outside the repository) when missing.

    ``VMETAL_KUBE_BINDIR`` names a directory holding them instead (binaries
    built elsewhere); nothing is built then.
    """
    given = os.environ.get('VMETAL_KUBE_BINDIR')
    if given:
        return _checked(pathlib.Path(given), 'VMETAL_KUBE_BINDIR')
    result = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE,
                            timeout=BUILD_TIMEOUT, check=True, text=True)
    return _checked(pathlib.Path(result.stdout.strip().splitlines()[-1]),
                    str(BUILD_SCRIPT))


def _checked(path, source):
    for name in BINARIES:
        if not os.access(path / name, os.X_OK):
            raise RuntimeError(f'{source}: {path / name} is not an '
                               'executable')
    return path


BMO_BUILD_SCRIPT = REPO / 'tools' / 'build-bmo'


def bmo_crds():
    """Directory (a kustomization) of baremetal-operator's CRDs, generated
    once by ``tools/build-bmo`` and cached outside the repository."""
    result = subprocess.run([str(BMO_BUILD_SCRIPT)], stdout=subprocess.PIPE,
                            timeout=BUILD_TIMEOUT, check=True, text=True)
    path = pathlib.Path(result.stdout.strip().splitlines()[-1]) / 'crds'
    if not (path / 'kustomization.yaml').is_file():
        raise RuntimeError(f'{BMO_BUILD_SCRIPT} did not produce {path}')
    return path


def crd_documents(bmo_dir):
    """The CRDs a test cluster gets: baremetal-operator's own for
    ``metal3.io`` (generated from its API module, see :func:`bmo_crds`), so
    what the store writes meets the schema Metal3 installs (``spec.online``
    required, status in its subresource, unknown fields pruned); the
    project's trimmed ones for the vCluster Platform kinds."""
    metal3 = kubectl.render(bmo_dir)
    groups = {doc['spec']['group'] for doc in metal3}
    return metal3 + [doc for doc in kubectl.render(MANIFESTS / 'crds')
                     if doc['spec']['group'] not in groups]


def _die_with_parent():
    """Ask the kernel to SIGKILL the child when the test process dies, so
    a killed test run leaves no API server behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)   # 1 = PR_SET_PDEATHSIG


class KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager, torn down by PID.

    :param bindir: directory of the kube binaries (see :func:`kube_binaries`).
    :param profiling: serve kube-apiserver's ``/debug/pprof`` (benchmarks
        profile it with :meth:`cpu_profile`); off as in a hardened cluster.
    """

    def __init__(self, bindir=None, profiling=False):
        self.bindir = pathlib.Path(bindir) if bindir else kube_binaries()
        self.profiling = profiling
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix='vk8s-'))
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.url = f'https://127.0.0.1:{self.port}'
        self.admin_token = 'vk8s-admin-' + os.urandom(12).hex()
        self.store_token = 'vk8s-store-' + os.urandom(12).hex()
        self.controller_token = 'vk8s-controller-' + os.urandom(12).hex()
        self.ca_file = str(self.workdir / 'apiserver.crt')
        self._procs = {}

    # -- processes ----------------------------------------------------------

    def _spawn(self, name, argv):
        log = open(self.workdir / f'{name}.log', 'ab')  # noqa: SIM115
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    start_new_session=True,
                                    preexec_fn=_die_with_parent)
        finally:
            log.close()
        self._procs[name] = proc
        return proc

    def cpu_seconds(self):
        """``{name: CPU seconds}`` (user + system) each control-plane
        process has used so far (``/proc/<pid>/stat``), for benchmarks."""
        ticks = os.sysconf('SC_CLK_TCK')
        used = {}
        for name, proc in self._procs.items():
            try:
                with open(f'/proc/{proc.pid}/stat') as stat:
                    fields = stat.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            # Fields 14 and 15 of proc(5): utime, stime (after the name,
            # which may hold spaces, they are the 12th and 13th).
            used[name] = (int(fields[11]) + int(fields[12])) / ticks
        return used

    def log_tail(self, name, lines=20):
        try:
            text = (self.workdir / f'{name}.log').read_text(errors='replace')
        except OSError:
            return ''
        return '\n'.join(text.splitlines()[-lines:])

    def _stop(self, name, timeout=10):
        proc = self._procs.pop(name, None)
        if proc is not None:
            netns.Topology.stop(proc, timeout)

    def _prepare(self):
        work = self.workdir
        subprocess.run(
            ['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
             '-days', '2', '-subj', '/CN=127.0.0.1',
             '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
             '-addext', 'basicConstraints=critical,CA:TRUE',
             '-keyout', str(work / 'apiserver.key'),
             '-out', str(work / 'apiserver.crt')],
            check=True, capture_output=True, timeout=60)
        subprocess.run(['openssl', 'genrsa', '-out', str(work / 'sa.key'),
                        '2048'], check=True, capture_output=True, timeout=60)
        (work / 'tokens.csv').write_text(
            f'{self.admin_token},vk8s-admin,vk8s-admin,"system:masters"\n'
            f'{self.store_token},{STORE_SA},vk8s-store,'
            '"system:serviceaccounts,system:serviceaccounts:vmetal-system"\n'
            f'{self.controller_token},{CONTROLLER_SA},vk8s-controller,'
            '"system:serviceaccounts,system:serviceaccounts:vmetal-system"\n')
        (work / 'kubeconfig').write_text(yaml.safe_dump({
            'apiVersion': 'v1', 'kind': 'Config',
            'clusters': [{'name': 'vk8s', 'cluster': {
                'server': self.url, 'certificate-authority': self.ca_file}}],
            'users': [{'name': 'admin', 'user': {'token': self.admin_token}}],
            'contexts': [{'name': 'vk8s', 'context': {
                'cluster': 'vk8s', 'user': 'admin'}}],
            'current-context': 'vk8s'}))

    def _start_etcd(self):
        client = f'http://127.0.0.1:{self.etcd_port}'
        peer = f'http://127.0.0.1:{self.etcd_peer_port}'
        self._spawn('etcd', [
            str(self.bindir / 'etcd'), '--name', 'vk8s', '--data-dir', str(self.workdir / 'etcd'),
            '--listen-client-urls', client, '--advertise-client-urls', client,
            '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
            '--initial-cluster', f'vk8s={peer}', '--unsafe-no-fsync',
            '--log-level', 'warn'])
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive('etcd')
            try:
                with urllib.request.urlopen(client + '/health',  # noqa: S310
                                            timeout=2) as answer:
                    if b'true' in answer.read():
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise RuntimeError('etcd not healthy in time:\n' + self.log_tail('etcd'))

    def _check_alive(self, name):
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f'{name} exited with {proc.returncode}:\n'
                               + self.log_tail(name))

    def start_apiserver(self):
        """Start (or restart, on the same port and etcd) kube-apiserver."""
        work = self.workdir
        self._spawn('kube-apiserver', [
            str(self.bindir / 'kube-apiserver'),
            f'--etcd-servers=http://127.0.0.1:{self.etcd_port}',
            '--bind-address=127.0.0.1', f'--secure-port={self.port}',
            '--advertise-address=127.0.0.1',
            f'--cert-dir={work / "certs"}',
            f'--tls-cert-file={work / "apiserver.crt"}',
            f'--tls-private-key-file={work / "apiserver.key"}',
            f'--token-auth-file={work / "tokens.csv"}',
            '--authorization-mode=RBAC',
            '--service-account-issuer=https://kubernetes.default.svc',
            f'--service-account-key-file={work / "sa.key"}',
            f'--service-account-signing-key-file={work / "sa.key"}',
            '--service-cluster-ip-range=198.19.255.0/24',
            '--endpoint-reconciler-type=none',
            '--disable-admission-plugins=ServiceAccount',
            f'--profiling={str(self.profiling).lower()}', '--v=0'])
        self.wait_ready()
        # On a restart, the controller manager may have given up while the
        # API was away; garbage collection must keep working afterwards.
        manager = self._procs.get('kube-controller-manager')
        if manager is not None and manager.poll() is not None:
            self._start_controller_manager()

    def stop_apiserver(self):
        """Stop kube-apiserver (etcd and its data stay)."""
        self._stop('kube-apiserver')

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self._check_alive('kube-apiserver')
            try:
                # urlopen raises for any status but 2xx.
                self._admin_get('/readyz', timeout=3)
                return
            except (OSError, urllib.error.URLError) as exc:
                last = exc
            time.sleep(0.25)
        raise RuntimeError(f'kube-apiserver not ready in {timeout}s ({last}):\n'
                           + self.log_tail('kube-apiserver'))

    def _admin_get(self, path, timeout):
        context = ssl.create_default_context(cafile=self.ca_file)
        request = urllib.request.Request(  # noqa: S310 - https only
            self.url + path,
            headers={'Authorization': f'Bearer {self.admin_token}'})
        with urllib.request.urlopen(request, context=context,  # noqa: S310
                                    timeout=timeout) as answer:
            return answer.read()

    def cpu_profile(self, seconds):
        """kube-apiserver's CPU profile (pprof format) over the next
        ``seconds``; needs ``profiling=True``."""
        return self._admin_get(f'/debug/pprof/profile?seconds={seconds}',
                               timeout=seconds + 30)

    def open_watches(self):
        """``{(group, resource): count}`` of the watches kube-apiserver
        is serving now (its ``apiserver_longrunning_requests`` gauge)."""
        watches = {}
        for line in self._admin_get('/metrics', timeout=30).decode(
                errors='replace').splitlines():
            if (not line.startswith('apiserver_longrunning_requests{')
                    or 'verb="WATCH"' not in line):
                continue
            labels = dict(part.split('=', 1) for part in
                          line[line.index('{') + 1:line.rindex('}')]
                          .split(','))
            count = int(float(line.rsplit(' ', 1)[1]))
            if count:
                key = (labels.get('group', '""').strip('"'),
                       labels.get('resource', '""').strip('"'))
                watches[key] = watches.get(key, 0) + count
        return watches

    def _start_controller_manager(self):
        self._spawn('kube-controller-manager', [
            str(self.bindir / 'kube-controller-manager'),
            f'--kubeconfig={self.workdir / "kubeconfig"}',
            '--controllers=garbagecollector,namespace',
            '--leader-elect=false', '--secure-port=0',
            '--use-service-account-credentials=false', '--v=0'])

    def start(self):
        """Start everything and install the CRDs; tears down on failure."""
        try:
            self._prepare()
            self._start_etcd()
            self.start_apiserver()
            self._start_controller_manager()
            kubectl.apply(crd_documents(bmo_crds()), self.kubeconfig)
            self.apply_kustomization(MANIFESTS / 'store')
            self._wait_crds()
            time.sleep(0.5)
            self._check_alive('kube-controller-manager')
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        """Stop every process by PID (SIGKILL after a timeout) and remove
        the working directory."""
        for name in ('kube-controller-manager', 'kube-apiserver', 'etcd'):
            self._stop(name)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- clients ------------------------------------------------------------

    def configuration(self, token=None):
        configuration = k8s_client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = self.ca_file
        configuration.api_key = {
            'authorization': f'Bearer {token or self.admin_token}'}
        return configuration

    def admin_client(self):
        """An ApiClient with the admin token; the caller closes it."""
        return k8s_client.ApiClient(self.configuration())

    def settings(self, namespace='vmetal-system', token=None, **extra):
        """``[vmetal_kubernetes]`` values for a store on this cluster."""
        values = {'api_url': self.url, 'token': token or self.admin_token,
                  'ca_file': self.ca_file, 'namespace': namespace,
                  # Hosts of other tests' namespaces are not this store's.
                  'follow_claims_namespaces': [namespace]}
        values.update(extra)
        return values

    @property
    def kubeconfig(self):
        """A kubeconfig file with the admin token, for kubectl."""
        return self.workdir / 'kubeconfig'

    def apply_kustomization(self, directory):
        """``kubectl apply -k directory`` with the admin token.

        :returns: the API server's answer for each object.
        """
        return kubectl.apply(kubectl.render(directory), self.kubeconfig)

    def wait_admission_policies(self, timeout=READY_TIMEOUT):
        """Wait until the shipped ValidatingAdmissionPolicies are enforced
        (the API server loads a new policy a moment after it is created):
        a dry-run Secret the store's identity may not make must be refused
        by a policy, not let through."""
        probe = {'metadata': {'name': 'vk8s-policy-probe'}}
        with k8s_client.ApiClient(self.configuration(
                token=self.store_token)) as api:
            core = k8s_client.CoreV1Api(api)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    core.create_namespaced_secret('vmetal-system', probe,
                                                  dry_run='All')
                except k8s_client.ApiException as exc:
                    if (exc.status == 403
                            and 'ValidatingAdmissionPolicy' in exc.body):
                        return
                    if exc.status != 403:
                        raise
                if time.monotonic() > deadline:
                    raise RuntimeError('admission policies not enforced in '
                                       f'{timeout}s')
                time.sleep(0.2)

    def _wait_crds(self, timeout=READY_TIMEOUT):
        with self.admin_client() as api:
            custom = k8s_client.CustomObjectsApi(api)
            deadline = time.monotonic() + timeout
            for group, version, plural in (
                    ('metal3.io', 'v1alpha1', 'baremetalhosts'),
                    ('management.loft.sh', 'v1', 'nodeproviders'),
                    ('management.loft.sh', 'v1', 'networkenvironments'),
                    ('vmetal-ironic.io', 'v1alpha1', 'addressclaims'),
                    ('vmetal-ironic.io', 'v1alpha1', 'addressowners'),
                    ('vmetal-ironic.io', 'v1alpha1', 'dhcpreservations')):
                while True:
                    try:
                        custom.list_cluster_custom_object(group, version,
                                                          plural)
                        break
                    except k8s_client.ApiException:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)


def run_together(workers, func, args_for, timeout=600):
    """Run ``func(*args_for(i), gate)`` in ``workers`` spawned processes
    released together once all are set up.

    :returns: ``(results, started)``: each worker's return value and the
        ``time.time()`` they were released at.
    """
    context = multiprocessing.get_context('spawn')
    with context.Manager() as manager, \
            concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=context) as pool:
        ready, go = manager.Queue(), manager.Event()
        futures = [pool.submit(func, *args_for(index), (ready, go))
                   for index in range(workers)]
        for _ in range(workers):
            ready.get(timeout=120)
        started = time.time()
        go.set()
        results = [future.result(timeout=timeout) for future in futures]
    return results, started


def store_conf(settings):
    """An oslo.config object for a KubernetesStore from ``settings``."""
    conf = cfg.ConfigOpts()
    vmetal_conf.register_opts(conf)
    kube_conf.register_opts(conf)
    conf([], project='vmetal-ironic', default_config_files=[])
    conf.set_override('store', 'kubernetes', group='vmetal')
    for key, value in settings.items():
        conf.set_override(key, value, group=kube_conf.GROUP)
    return conf


def ensure_hosts(settings, owners_and_macs, gate=None, pool_cidr=None):
    """Worker body: give each owner its network identity through the
    Kubernetes store, as one Ironic conductor or agent process would.

    Runs in a child process (module-level, so it pickles).

    :param settings: ``[vmetal_kubernetes]`` values.
    :param owners_and_macs: ``[(owner, mac)]``.
    :param gate: ``(ready queue, go event)`` manager proxies: the worker
        reports ready once set up, then waits for go, so that all workers
        start together and set-up time is not measured.
    :param pool_cidr: when given, only ``store.allocate`` from this pool
        (no property lookup, Secret or annotations): the bare IPAM cost.
    :returns: ``(results, requests, finished)``: results ``[(owner, address
        or None, error text or None)]``, requests the API calls made,
        finished the ``time.time()`` of the last answer.
    """
    # Imported here: this runs in freshly spawned worker processes.
    from vmetal_ironic import exception
    from vmetal_ironic import host_network
    from vmetal_ironic.ipam import pool as ipam_pool
    from vmetal_ironic.store import kubernetes as kube_store

    store = kube_store.KubernetesStore(store_conf(settings))
    pool = ipam_pool.parse_pool(pool_cidr) if pool_cidr else None
    results = []
    try:
        if gate is not None:
            gate[0].put(os.getpid())
            gate[1].wait(120)
        for owner, mac in owners_and_macs:
            try:
                if pool is not None:
                    address = store.allocate(pool, owner, mac).address
                else:
                    result = host_network.ensure(store, owner, mac=mac)
                    address = (result.allocation.address
                               if result.allocation else None)
                results.append((owner, address, None))
            except exception.VmetalError as exc:
                results.append((owner, None,
                                f'{type(exc).__name__}: {exc}'))
        return results, store.api.requests, time.time()
    finally:
        store.close()
