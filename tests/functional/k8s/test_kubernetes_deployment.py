"""Deployment trouble on a real API server is reported as such: here the
store's namespace missing (credentials lacking a permission are in
test_kubernetes_rbac.py and test_kubernetes_store.py). It is not the
host's fault and does not go away by retrying."""

import os
import time

import pytest

from tests.functional import kube
from vmetal_ironic import exception
from vmetal_ironic import reservation
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.store import kubernetes as kube_store
from vmetal_ironic.store.kubernetes import kube_client


@pytest.fixture
def store_in_missing_namespace(kube_cluster):
    absent = f'vk8s-absent-{os.urandom(3).hex()}'
    store = kube_store.KubernetesStore(kube.store_conf(
        kube_cluster.settings(namespace=absent)))
    yield store, absent
    store.close()


def test_missing_namespace_fails_at_once_saying_so(store_in_missing_namespace):
    store, absent = store_in_missing_namespace
    pool = ipam_pool.parse_pool('198.51.100.1/24', None)
    started = time.monotonic()
    with pytest.raises(kube_client.NamespaceNotFound) as info:
        # A Machine's address: a host owner would first be read (and be
        # missing here, a NotFound of its own).
        store.allocate(pool, 'Machine/lab/m0', '52:54:00:00:0e:01')
    # Not 50 compare-and-swap rounds ending in "lost to concurrent writers".
    assert store.api.requests <= 3
    assert time.monotonic() - started < 10
    assert f"namespace '{absent}' does not exist" in str(info.value)
    assert isinstance(info.value, exception.DeploymentError)
    with pytest.raises(kube_client.NamespaceNotFound):
        store.publish_reservation(reservation.Reservation(
            mac='52:54:00:00:0e:01', address='198.51.100.2', prefixlen=24))
