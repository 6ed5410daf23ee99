"""The store works with a token bound only to the shipped RBAC
(etc/kubernetes/rbac): any call the roles do not allow raises Forbidden
and fails this test."""

import threading

import pytest

from tests.functional import kube
from vmetal_ironic import identity
from vmetal_ironic import properties as props
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.store import kube_client
from vmetal_ironic.store import kubernetes as kube_store


@pytest.fixture
def rbac_store(kube_cluster):
    # The token authenticates as system:serviceaccount:vmetal-system:
    # vmetal-ironic, the subject of the shipped bindings, nothing more.
    settings = kube_cluster.settings(namespace='vmetal-system',
                                     token=kube_cluster.store_token)
    store = kube_store.KubernetesStore(kube.store_conf(settings))
    yield store
    store.close()


def test_store_runs_with_the_shipped_role_only(admin, namespace, rbac_store,
                                               cluster_objects):
    cluster_objects('nodeproviders', {
        'apiVersion': 'management.loft.sh/v1', 'kind': 'NodeProvider',
        'metadata': {'name': f'prov-{namespace}'},
        'spec': {'metal3': {'nodeTypes': [{
            'name': 'rbac', 'bareMetalHosts': {'selector': {
                'matchLabels': {'tier': namespace}}},
            'properties': {props.NETWORK_CIDR: '198.51.100.129/25'}}]}}})
    for index in range(2):
        admin.create_host(namespace, f'h{index}', f'52:54:00:00:02:0{index}',
                          labels={'tier': namespace})
    store = rbac_store
    owners = [f'BareMetalHost/{namespace}/h{index}' for index in range(2)]
    results = [identity.ensure(store, owner, f'52:54:00:00:02:0{index}')
               for index, owner in enumerate(owners)]
    assert [r.allocation.address for r in results] == ['198.51.100.130',
                                                       '198.51.100.131']
    identity.ensure(store, owners[0], '52:54:00:00:02:00')   # replace path
    assert store.get_network_data(owners[0]) == results[0].network_data
    assert store.get_allocation(owners[1]).address == '198.51.100.131'
    assert len(store.list_allocations('198.51.100.128/25')) == 2

    reservation = reservation_mod.Reservation(
        mac='52:54:00:00:02:00', address='198.51.100.130', prefixlen=25)
    store.publish_reservation(reservation)
    assert reservation in store.list_reservations()
    assert store.reservations_revision() != '0'
    stop = threading.Event()
    for _, reservations in store.watch_reservations(stop, timeout=2):
        assert reservation in reservations
        stop.set()
    assert store.withdraw_reservation(reservation.mac) is True

    assert store.release(owners[0]).address == '198.51.100.130'
    admin.delete_host(namespace, 'h1')
    released = store.reconcile()
    assert [a.owner for a in released] == [owners[1]]
    store.release(owners[1])     # idempotent, host gone


def test_the_shipped_role_is_really_limited(kube_cluster, rbac_store):
    # Guard against a test that passes because the token is all-powerful.
    with pytest.raises(kube_client.Forbidden, match='403 Forbidden'):
        rbac_store.api.call('list Secrets in all namespaces',
                            rbac_store.api.core.list_secret_for_all_namespaces)
    with pytest.raises(kube_client.Forbidden):
        rbac_store.api.call(
            'list ConfigMaps in default',
            rbac_store.api.core.list_namespaced_config_map, 'default')
