"""A small fake cluster for the store's race tests: the fake API
(:mod:`.fake_api`), stores standing for separate processes on it, and
BareMetalHosts arranged the way Metal3 writes them."""

from vmetal_ironic import host_network
from vmetal_ironic.store import kubernetes as kube_store
from tests.unit.store.kubernetes import fake_api

NAMESPACE = 'vmetal-system'
HOSTS = 'm3'
BMH = 'baremetalhosts'
CLAIMS = 'addressclaims'
OWNERS = 'addressowners'
RESERVATIONS = 'dhcpreservations'


class Cluster:
    """One fake API server and the stores (processes) sharing it."""

    def __init__(self, **options):
        self.kube = fake_api.FakeKube()
        self.options = dict(options)
        self.options.setdefault('follow_claims_namespaces', ['*'])

    def store(self, **options):
        """A new store, as another process would have."""
        conf = fake_api.conf_for(NAMESPACE, **dict(self.options, **options))
        conf.set_override('network_cidr', '192.0.2.1/24', group='vmetal')
        return kube_store.KubernetesStore(conf,
                                          api=fake_api.api_on(self.kube, conf))

    def host(self, name, mac=None, consumer=None, state='available',
             annotations=None):
        body = {'apiVersion': 'metal3.io/v1alpha1', 'kind': 'BareMetalHost',
                'metadata': {'name': name, 'namespace': HOSTS,
                             'annotations': dict(annotations or {})},
                'spec': {'bootMACAddress': mac or _mac(name)},
                'status': {'provisioning': {'state': state}}}
        if consumer:
            body['spec']['consumerRef'] = _ref(consumer)
        return self.kube.put(BMH, body)

    def change_host(self, name, **changes):
        """Merge ``changes`` (a merge patch) into host ``name``."""
        return self.kube._patch(BMH, HOSTS, name, changes)

    def claim(self, name, consumer):
        return self.change_host(name, spec={'consumerRef': _ref(consumer)})

    def let_go(self, name, state='available'):
        return self.change_host(name, spec={'consumerRef': None}, status={
            'provisioning': {'state': state}})

    def delete_host(self, name):
        self.kube._delete(BMH, HOSTS, name, None)

    def get_host(self, name):
        return self.kube.get(BMH, HOSTS, name)

    def claims(self):
        """``{address: owner}`` of every AddressClaim."""
        return {obj['spec']['address']: obj['spec']['owner']
                for obj in self.kube.items(CLAIMS, NAMESPACE)
                if obj['spec'].get('purpose') != 'gateway'}

    def reservations(self):
        return sorted((obj['spec']['mac'], obj['spec']['address'])
                      for obj in self.kube.items(RESERVATIONS, NAMESPACE))


def _mac(name):
    return '52:54:00:00:00:%02x' % (sum(name.encode()) % 256)


def _ref(consumer):
    kind, namespace, name = consumer.split('/')
    return {'kind': kind, 'namespace': namespace, 'name': name,
            'apiVersion': 'infrastructure.cluster.x-k8s.io/v1beta1'}


def give(store, name):
    """Ironic's flow for host ``name`` (address, Secret, outputs)."""
    return host_network.ensure(
        store, f'BareMetalHost/{HOSTS}/{name}',
        defaults=host_network.defaults_from_conf(store.conf))
