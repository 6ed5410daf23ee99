"""Fixtures of the Kubernetes store tests: one real control plane for the
session (see tests/functional/kube.py), a fresh namespace per test."""

import concurrent.futures
import os
import threading

import pytest
import yaml
from kubernetes import client as k8s_client

from tests import kubectl
from tests.functional import kube
from vmetal_ironic import properties as props
from vmetal_ironic.cmd import ipam_controller as controller_cmd
from vmetal_ironic.conf import ipam_controller as controller_conf
from vmetal_ironic.lab.observe import wait_for
from vmetal_ironic.store import kubernetes as kube_store

BMH = ('metal3.io', 'v1alpha1', 'baremetalhosts')
ADDRESS_CLAIMS = ('vmetal-ironic.io', 'v1alpha1', 'addressclaims')
RESERVATIONS = ('vmetal-ironic.io', 'v1alpha1', 'dhcpreservations')
OWNER_RECORDS = ('vmetal-ironic.io', 'v1alpha1', 'addressowners')
# The first release whose builds accept "" in custom resources again.
EMPTY_STRINGS_SINCE = 21
RBAC_KINDS = {'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role',
              'RoleBinding'}
HOST_NAMESPACE_BINDING = (kube.MANIFESTS / 'rbac' / 'host-namespace'
                          / 'rolebinding.yaml')


@pytest.fixture(scope='session')
def kube_cluster():
    with kube.KubeCluster() as cluster:
        cluster.apply_kustomization(kube.MANIFESTS / 'rbac')
        cluster.wait_admission_policies()
        yield cluster


def bmo_status(state):
    """A BareMetalHost ``status`` in ``state`` with the fields BMO's
    schema requires."""
    return {'operationalStatus': 'OK', 'errorMessage': '', 'errorCount': 0,
            'poweredOn': state == 'provisioned',
            'provisioning': {'ID': '', 'state': state}}


class Admin:
    """Admin-token helpers to arrange and inspect cluster state."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.client = cluster.admin_client()
        self.core = k8s_client.CoreV1Api(self.client)
        self.custom = k8s_client.CustomObjectsApi(self.client)

    def server_minor(self):
        """The API server's minor version."""
        version = k8s_client.VersionApi(self.client).get_code()
        return int(version.minor.rstrip('+'))

    def create_namespace(self, name):
        self.core.create_namespace({'metadata': {'name': name}})

    def create_host(self, namespace, name, mac=None, annotations=None,
                    labels=None, spec=None):
        body = {'apiVersion': 'metal3.io/v1alpha1', 'kind': 'BareMetalHost',
                'metadata': {'name': name, 'namespace': namespace,
                             'annotations': annotations or {},
                             'labels': labels or {}},
                'spec': dict(spec or {})}
        # BMO's schema requires it; hosts are registered powered on.
        body['spec'].setdefault('online', True)
        if mac:
            body['spec']['bootMACAddress'] = mac
        return self.custom.create_namespaced_custom_object(
            *BMH[:2], namespace, BMH[2], body)

    def set_host_state(self, namespace, name, state):
        """Write the host's provisioning state as baremetal-operator does:
        a whole status (BMO's schema requires each of these fields)
        through the status subresource.

        Skips the test on an API server that refuses an empty string in a
        custom resource (kubernetes#99804: 1.20.2 built with Go >= 1.16,
        as Debian 12's is), where BMO's own status write fails too.
        """
        if self.server_minor() < EMPTY_STRINGS_SINCE:
            pytest.skip('this kube-apiserver refuses empty strings in custom '
                        'resources (kubernetes#99804), so BMO status '
                        "(errorMessage: '') cannot be written")
        return self.custom.patch_namespaced_custom_object_status(
            *BMH[:2], namespace, BMH[2], name,
            {'status': bmo_status(state)},
            _content_type='application/merge-patch+json')

    def create_hosts(self, namespace, hosts, annotations):
        """Create many hosts in parallel: ``hosts`` is ``[(name, mac)]``."""
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda host: self.create_host(
                namespace, host[0], host[1], annotations=annotations), hosts))

    def get_host(self, namespace, name):
        return self.custom.get_namespaced_custom_object(
            *BMH[:2], namespace, BMH[2], name)

    def delete_host(self, namespace, name):
        self.custom.delete_namespaced_custom_object(
            *BMH[:2], namespace, BMH[2], name)

    def list_hosts(self, namespace):
        return self.custom.list_namespaced_custom_object(
            *BMH[:2], namespace, BMH[2])['items']

    def claims(self, namespace):
        """Every AddressClaim of the namespace (the store's records)."""
        return self.custom.list_namespaced_custom_object(
            *ADDRESS_CLAIMS[:2], namespace, ADDRESS_CLAIMS[2])['items']

    def owner_records(self, namespace):
        """Every AddressOwner of the namespace, by owner."""
        return {record['spec']['owner']: record for record in
                self.custom.list_namespaced_custom_object(
                    *OWNER_RECORDS[:2], namespace, OWNER_RECORDS[2])['items']}

    def pool_data(self, namespace, pool_key):
        """``{address: owner}`` of the allocations from one pool."""
        return {claim['spec']['address']: claim['spec']['owner']
                for claim in self.claims(namespace)
                if claim['spec'].get('pool') == pool_key
                and claim['spec']['purpose'] == 'allocation'}

    def reservations(self, namespace):
        return self.custom.list_namespaced_custom_object(
            *RESERVATIONS[:2], namespace, RESERVATIONS[2])['items']

    def secret(self, namespace, name):
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except k8s_client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_cluster_object(self, plural, body):
        return self.custom.create_cluster_custom_object(
            'management.loft.sh', 'v1', plural, body)

    def delete_cluster_object(self, plural, name):
        try:
            self.custom.delete_cluster_custom_object(
                'management.loft.sh', 'v1', plural, name)
        except k8s_client.ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope='session')
def controller_rbac(kube_cluster):
    """The shipped identities and roles of vmetal-ipam-controller and of
    the DHCP agent (not their Deployments: no kubelet runs here)."""
    objects = [obj for directory in ('controller', 'agent')
               for obj in kubectl.render(kube.MANIFESTS / directory)
               if obj['kind'] in RBAC_KINDS]
    kubectl.apply(objects, kube_cluster.kubeconfig)
    return objects


@pytest.fixture(scope='session')
def admin(kube_cluster):
    helper = Admin(kube_cluster)
    yield helper
    helper.client.close()


@pytest.fixture
def namespace(admin):
    """A namespace of its own: hosts and the store's objects live there,
    so tests do not see each other's pools."""
    name = f'vk8s-{os.getpid()}-{os.urandom(3).hex()}'
    admin.create_namespace(name)
    yield name
    admin.core.delete_namespace(name)


@pytest.fixture
def host_namespace(admin, namespace):
    """The test namespace bound as the shipped kustomization binds a hosts'
    namespace (etc/kubernetes/rbac/host-namespace)."""
    binding = yaml.safe_load(HOST_NAMESPACE_BINDING.read_text())
    binding['metadata']['namespace'] = namespace
    k8s_client.RbacAuthorizationV1Api(
        admin.client).create_namespaced_role_binding(namespace, binding)
    return namespace


@pytest.fixture
def make_store(kube_cluster, namespace):
    """``make_store(**options)`` -> a KubernetesStore on the test cluster,
    closed at teardown."""
    stores = []

    def factory(**options):
        settings = kube_cluster.settings(namespace=namespace, **options)
        store = kube_store.KubernetesStore(kube.store_conf(settings))
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()


@pytest.fixture
def cluster_objects(admin):
    """Create NodeProviders / Network Environments, deleted at teardown
    (they are cluster-scoped, so they must not leak into other tests)."""
    created = []

    def create(plural, body):
        created.append((plural, body['metadata']['name']))
        return admin.create_cluster_object(plural, body)

    yield create
    for plural, name in created:
        admin.delete_cluster_object(plural, name)


def node_provider(namespace, type_name, properties):
    """A NodeProvider ``prov-<namespace>`` with one node type selecting
    the hosts labelled ``tier=<namespace>``."""
    return {
        'apiVersion': 'management.loft.sh/v1', 'kind': 'NodeProvider',
        'metadata': {'name': f'prov-{namespace}'},
        'spec': {'metal3': {'nodeTypes': [{
            'name': type_name,
            'bareMetalHosts': {'selector': {'matchLabels': {
                'tier': namespace}}},
            'properties': properties}]}}}


@pytest.fixture
def layered(admin, namespace, cluster_objects):
    """A node type selecting hosts labelled ``tier=<namespace>`` and a
    default Network Environment (plus a non-default one that must be
    ignored), each giving a different network."""
    cluster_objects('nodeproviders', node_provider(namespace, 'small', {
        props.NETWORK_CIDR: '198.51.100.1/24',
        props.DNS_SERVERS: '198.51.100.53'}))
    cluster_objects('networkenvironments', {
        'apiVersion': 'management.loft.sh/v1', 'kind': 'NetworkEnvironment',
        'metadata': {'name': f'env-{namespace}', 'annotations': {
            'machines.vcluster.com/is-default-environment': 'true'}},
        'spec': {'providerRef': f'prov-{namespace}', 'properties': {
            props.NETWORK_CIDR: '192.0.2.1/24',
            props.DNS_SERVERS: '192.0.2.53'}}})
    cluster_objects('networkenvironments', {
        'apiVersion': 'management.loft.sh/v1', 'kind': 'NetworkEnvironment',
        'metadata': {'name': f'other-{namespace}'},
        'spec': {'properties': {props.NETWORK_CIDR: '203.0.113.1/24'}}})
    return {'tier': namespace}


@pytest.fixture
def start_controller(kube_cluster, namespace):
    """``start_controller(**options)`` -> a running vmetal-ipam-controller
    (in this process: its Lease, watches and workers are the real ones) on
    the test namespace, stopped at teardown. ``identity`` and the
    ``[vmetal_ipam_controller]`` options may be given; the rest are
    ``[vmetal_kubernetes]`` values."""
    running = []

    def start(identity='test-controller', lease_duration=4.0,
              renew_deadline=3.0, retry_period=0.5, as_user=None,
              **options):
        settings = kube_cluster.settings(namespace=namespace)
        settings.update(options)
        conf = kube.store_conf(settings)
        controller_conf.register_opts(conf)
        for key, value in (('identity', identity),
                           ('lease_duration', lease_duration),
                           ('renew_deadline', renew_deadline),
                           ('retry_period', retry_period)):
            conf.set_override(key, value, group=controller_conf.GROUP)
        store, controller, elector = controller_cmd.build(conf)
        if as_user:
            # The admin token acting as ``as_user`` (impersonation): the
            # API server applies that user's RBAC to every request.
            store.api.client.set_default_header('Impersonate-User', as_user)
        stop = threading.Event()
        thread = elector.start(stop, controller.start, controller.stop)
        running.append((store, stop, thread))
        wait_for(lambda: controller.informers_ready(), timeout=30,
                 what='the controller leading and watching')
        return controller

    yield start
    for store, stop, thread in running:
        stop.set()
        thread.join(15)
        store.close()
