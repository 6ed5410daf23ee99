"""The informer's list: paged, delivered whole, slimmed; its loop's
failure handling (the watch itself is the real API server's:
tests/functional/k8s/test_ipam_controller.py)."""

import threading

from tests.unit.store.kubernetes import cluster as cl
from vmetal_ironic.ipam_controller import informer


class Handler:
    def __init__(self):
        self.synced_with = []
        self.changes = []

    def synced(self, objects):
        self.synced_with.append(objects)

    def changed(self, kind, obj):
        self.changes.append((kind, obj))


def test_a_relist_delivers_every_page_whole_without_managed_fields():
    world = cl.Cluster()
    store = world.store()
    for index in range(3):
        world.host(f'h{index}')
    world.kube.objects[(cl.BMH, cl.HOSTS, 'h0')]['metadata'][
        'managedFields'] = [{'manager': 'x'}]
    handler = Handler()
    feed = informer.Informer(
        store.api, 'BareMetalHosts', store.api.custom.list_cluster_custom_object,
        ('metal3.io', 'v1alpha1', cl.BMH), handler)
    revision = feed.relist()
    [objects] = handler.synced_with
    assert [o['metadata']['name'] for o in objects] == ['h0', 'h1', 'h2']
    assert all('managedFields' not in o['metadata'] for o in objects)
    assert revision and feed.relists == 1
    # A digest keeps what it returns of each object, not the object.
    feed.digest = lambda obj: obj['metadata']['name'].upper()
    feed.relist()
    assert handler.synced_with[-1] == ['H0', 'H1', 'H2']


def test_a_failing_list_is_retried_and_counted_never_raised():
    world = cl.Cluster()
    store = world.store()
    world.kube.deny('list', cl.BMH, None)
    handler = Handler()
    feed = informer.Informer(
        store.api, 'BareMetalHosts', store.api.custom.list_cluster_custom_object,
        ('metal3.io', 'v1alpha1', cl.BMH), handler, retry=0.01)
    failures = []
    feed.on_failure = lambda: failures.append(1)
    stop = threading.Event()
    thread = threading.Thread(target=feed.run, args=(stop,))
    thread.start()
    for _ in range(500):
        if feed.failures >= 3:
            break
        stop.wait(0.01)
    stop.set()
    thread.join(5)
    assert feed.failures >= 3 and handler.synced_with == []
    assert len(failures) == feed.failures
