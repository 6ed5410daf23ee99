"""The store works with a token bound only to the shipped RBAC
(etc/kubernetes/rbac, and rbac/host-namespace bound in the hosts'
namespace): any call the roles do not allow raises Forbidden and fails
this test. And that RBAC is least privilege: a Secret the store did not
write cannot be read (issue 9 item 5)."""

import pytest

from tests.functional import kube
from tests.functional.k8s.conftest import node_provider
from vmetal_ironic import host_network
from vmetal_ironic import properties as props
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.store import kubernetes as kube_store
from vmetal_ironic.store.kubernetes import kube_client


@pytest.fixture
def rbac_store(kube_cluster):
    # The token authenticates as system:serviceaccount:vmetal-system:
    # vmetal-ironic, the subject of the shipped bindings, nothing more.
    settings = kube_cluster.settings(namespace='vmetal-system',
                                     token=kube_cluster.store_token)
    store = kube_store.KubernetesStore(kube.store_conf(settings))
    yield store
    store.close()


def test_store_runs_with_the_shipped_role_only(admin, host_namespace,
                                               rbac_store, cluster_objects):
    namespace = host_namespace
    cluster_objects('nodeproviders', node_provider(
        namespace, 'rbac', {props.NETWORK_CIDR: '198.51.100.129/25'}))
    for index in range(2):
        admin.create_host(namespace, f'h{index}', f'52:54:00:00:02:0{index}',
                          labels={'tier': namespace})
    store = rbac_store
    owners = [f'BareMetalHost/{namespace}/h{index}' for index in range(2)]
    results = [host_network.ensure(store, owner, f'52:54:00:00:02:0{index}')
               for index, owner in enumerate(owners)]
    assert [r.allocation.address for r in results] == ['198.51.100.130',
                                                       '198.51.100.131']
    host_network.ensure(store, owners[0], '52:54:00:00:02:00')   # replace path
    assert admin.secret(namespace, 'vmetal-nd-baremetalhost-h0') is not None
    assert store.get_allocation(owners[1]).address == '198.51.100.131'
    assert len(store.list_allocations('198.51.100.128/25')) == 2

    reservation = reservation_mod.Reservation(
        mac='52:54:00:00:02:00', address='198.51.100.130', prefixlen=25)
    revision, _ = store.reservations_snapshot()
    store.publish_reservation(reservation, owner=owners[0])
    assert reservation in store.list_reservations()
    assert store.reservations_revision() != '0'
    changes = []
    for change in store.follow_reservations(revision, 5):
        changes.append(change)
        if change.changed is not None:
            break
    assert changes[-1].changed == reservation
    assert store.withdraw_reservation(reservation.mac) is True

    assert store.release(owners[0]).address == '198.51.100.130'
    admin.delete_host(namespace, 'h1')
    # The pass is cluster-wide: hosts other tests of the session deleted
    # are released too now that no store thread releases them between
    # tests (vmetal-ipam-controller does, and none runs here).
    released = [a.owner for a in store.reconcile()
                if a.owner.split('/')[1] == namespace]
    assert released == [owners[1]]
    store.release(owners[1])     # idempotent, host gone


def test_a_foreign_secret_is_forbidden_and_the_store_still_works(
        admin, host_namespace, rbac_store):
    namespace = host_namespace
    admin.core.create_namespaced_secret(namespace, {
        'metadata': {'name': 'bmc-credentials'},
        'stringData': {'username': 'admin', 'password': 'secret'}})
    with pytest.raises(kube_client.Forbidden, match='403'):
        rbac_store.api.call(
            'get Secret bmc-credentials', rbac_store.api.core.read_namespaced_secret,
            'bmc-credentials', namespace)
    # Nor in the store's own namespace, nor any Secret outside the bound
    # namespaces even to write.
    with pytest.raises(kube_client.Forbidden, match='403'):
        rbac_store.api.call('list Secrets',
                            rbac_store.api.core.list_namespaced_secret,
                            namespace)
    with pytest.raises(kube_client.Forbidden, match='403'):
        rbac_store.api.call(
            'create Secret in default',
            rbac_store.api.core.create_namespaced_secret, 'default',
            {'metadata': {'name': 'vmetal-nd-x'}})
    admin.create_host(namespace, 'h', '52:54:00:00:02:09', annotations={
        props.NETWORK_CIDR: '198.51.100.1/24'})
    owner = f'BareMetalHost/{namespace}/h'
    host_network.ensure(rbac_store, owner, '52:54:00:00:02:09')
    assert admin.secret(namespace, 'vmetal-nd-baremetalhost-h') is not None
    rbac_store.release(owner)
    assert admin.secret(namespace, 'vmetal-nd-baremetalhost-h') is None


def test_the_shipped_role_is_really_limited(kube_cluster, rbac_store):
    # Guard against a test that passes because the token is all-powerful.
    with pytest.raises(kube_client.Forbidden, match='403 Forbidden'):
        rbac_store.api.call('list Secrets in all namespaces',
                            rbac_store.api.core.list_secret_for_all_namespaces)
    with pytest.raises(kube_client.Forbidden):
        rbac_store.api.call(
            'list ConfigMaps in default',
            rbac_store.api.core.list_namespaced_config_map, 'default')


def test_item9_a_release_cut_short_keeps_the_address_held(
        kube_cluster, admin, namespace, rbac_store):
    # A real failure half way through a release: this namespace has no
    # host-namespace binding, so the store's identity may patch the host
    # but not delete the Secret there. The address must still be held
    # then: it is freed last, never while a Secret may advertise it.
    admin.create_host(namespace, 'h', '52:54:00:00:02:0a', annotations={
        props.NETWORK_CIDR: '203.0.113.1/24'})
    full = kube_store.KubernetesStore(kube.store_conf(
        kube_cluster.settings(namespace='vmetal-system')))
    owner = f'BareMetalHost/{namespace}/h'
    try:
        address = host_network.ensure(full, owner,
                                      '52:54:00:00:02:0a').allocation.address
        with pytest.raises(kube_client.Forbidden, match='403'):
            rbac_store.release(owner)
        assert full.get_allocation(owner).address == address
        assert admin.secret(namespace, 'vmetal-nd-baremetalhost-h') is not None
    finally:
        full.release(owner)
        full.close()
