"""The store's one way to the API server (:mod:`~vmetal_ironic.store.
kubernetes.resources`), on the fake API: cluster-wide and namespaced
collections, the answers that are values, and the compare-and-swap loop."""

import pytest

from tests.unit.store.kubernetes import cluster as cl
from tests.unit.store.kubernetes import fake_api
from vmetal_ironic import exception
from vmetal_ironic.store.kubernetes import host_outputs
from vmetal_ironic.store.kubernetes import kube_client
from vmetal_ironic.store.kubernetes import resources


def hosts_of(world):
    api = world.store().api
    return resources.Collection(api, host_outputs.BMH_API, 'BareMetalHost',
                                unserved_is_error=True)


def _host(namespace, name):
    return {'metadata': {'namespace': namespace, 'name': name}, 'spec': {}}


def test_a_cluster_wide_collection_lists_every_namespace():
    world = cl.Cluster()
    world.kube.put(cl.BMH, _host('a', 'h1'))
    world.kube.put(cl.BMH, _host('b', 'h2'))
    hosts = hosts_of(world)

    _revision, items = hosts.list()

    assert sorted((h['metadata']['namespace'], h['metadata']['name'])
                  for h in items) == [('a', 'h1'), ('b', 'h2')]
    assert hosts.in_namespace('b').get('h2')['metadata']['name'] == 'h2'
    assert hosts.in_namespace('a').get('h2') is None
    assert hosts.in_namespace('a').what('h1') == 'BareMetalHost a/h1'


def _not_served():
    # What an API server answers before it serves a CRD: a 404 naming no
    # object (the fake stands for that moment, which a test cannot time).
    raise fake_api._error(404, 'NotFound', 'the server could not find '
                          'the requested resource')


def test_a_kind_not_served_is_unavailable_not_absent():
    world = cl.Cluster()
    hosts = hosts_of(world)
    world.kube.at('get', cl.BMH, _not_served)

    with pytest.raises(exception.StoreUnavailable, match='not served'):
        hosts.in_namespace('a').get('h1')
    # An absent object of a served kind is None.
    assert hosts.in_namespace('a').get('h1') is None


def test_an_optional_source_not_served_lists_as_none():
    world = cl.Cluster()
    store = world.store()
    world.kube.at('list', store._providers_api[2], _not_served)

    assert store.providers.list(unserved=()) == ('0', [])
    world.kube.at('list', store._providers_api[2], _not_served)
    with pytest.raises(kube_client.ApiError):
        store.providers.list()


def test_compare_and_swap_reads_again_after_a_conflict_and_gives_up():
    reads, writes = [], []

    def write(current, change):
        writes.append((current, change))
        if len(writes) < 3:
            raise kube_client.ApiError('moved', 409, 'Conflict')
        return 'written'

    def read():
        reads.append(len(reads))
        return len(reads)

    assert resources.compare_and_swap(read, lambda c: c * 10, write, 'x',
                                      5) == 'written'
    # Each attempt built its change from what it read.
    assert writes == [(1, 10), (2, 20), (3, 30)]

    def lose(_current, _change):
        raise kube_client.ApiError('moved', 409, 'Conflict')

    with pytest.raises(exception.StoreConflict, match='2 times'):
        resources.compare_and_swap(read, lambda c: c, lose, 'x', 2)
    assert resources.compare_and_swap(read, lambda c: None, lose, 'x',
                                      2) is None


def test_one_swap_writes_only_at_the_version_read():
    world = cl.Cluster()
    world.kube.put(cl.BMH, _host('a', 'h1'))
    hosts = hosts_of(world).in_namespace('a')
    read = hosts.get('h1')
    version = read['metadata']['resourceVersion']

    written = hosts.swap('h1', version, {'spec': {'online': True}})

    assert written['spec'] == {'online': True}
    # The version read is gone: nothing written, read it again.
    assert hosts.swap('h1', version, {'spec': {'online': False}}) is None
    assert hosts.swap('h2', version, {'spec': {}}) is None
    assert hosts.get('h1')['spec'] == {'online': True}
