"""What RBAC cannot say, said by the shipped ValidatingAdmissionPolicies
(etc/kubernetes/admission): the store's identity changes only the
network-data Secrets it made and only the BareMetalHost fields it owns.

Every refused write here is one the shipped RBAC allows (the store's
token is bound to it exactly as in test_kubernetes_rbac.py), so each case
failed before the policies; the same write as admin goes through, which
shows it is the policy, not the request, that is refused.
"""

import json

import pytest
from kubernetes import client as k8s_client

from tests.functional import kube
from vmetal_ironic import host_network
from vmetal_ironic import properties as props
from vmetal_ironic.store import kubernetes as kube_store

BMH = ('metal3.io', 'v1alpha1', 'baremetalhosts')
MERGE = 'application/merge-patch+json'
OURS = {'app.kubernetes.io/managed-by': 'vmetal-ironic',
        'vmetal-ironic.io/component': 'network-data'}


@pytest.fixture
def as_store(kube_cluster):
    """Clients authenticated as the store's ServiceAccount."""
    with k8s_client.ApiClient(kube_cluster.configuration(
            token=kube_cluster.store_token)) as api:
        yield k8s_client.CoreV1Api(api), k8s_client.CustomObjectsApi(api)


def _refused(call, *args, **kwargs):
    with pytest.raises(k8s_client.ApiException) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 403, caught.value.body
    message = json.loads(caught.value.body)['message']
    assert 'ValidatingAdmissionPolicy' in message, message
    return message


def _secret(name, labels=None, password='secret'):  # noqa: S107
    return {'metadata': {'name': name, 'labels': dict(labels or {})},
            'stringData': {'password': password}}


def test_foreign_secrets_cannot_be_replaced_or_deleted(
        admin, host_namespace, as_store):
    namespace = host_namespace
    core, _ = as_store
    admin.core.create_namespaced_secret(namespace,
                                        _secret('bmc-credentials'))
    body = _refused(core.replace_namespaced_secret, 'bmc-credentials',
                    namespace, _secret('bmc-credentials', OURS, 'mine'))
    assert f'not {namespace}/bmc-credentials' in body
    body = _refused(core.delete_namespaced_secret, 'bmc-credentials',
                    namespace)
    assert f'{namespace}/bmc-credentials is not one' in body
    # Not even a Secret that looks like the store's but was not labelled
    # by it (someone else's vmetal-nd-*).
    admin.core.create_namespaced_secret(namespace,
                                        _secret('vmetal-nd-impostor'))
    _refused(core.delete_namespaced_secret, 'vmetal-nd-impostor', namespace)
    assert admin.secret(namespace, 'bmc-credentials').data == {
        'password': 'c2VjcmV0'}     # 'secret', as admin wrote it
    assert admin.secret(namespace, 'vmetal-nd-impostor') is not None


def test_only_labelled_network_data_secrets_can_be_made(
        admin, host_namespace, as_store):
    namespace = host_namespace
    core, _ = as_store
    body = _refused(core.create_namespaced_secret, namespace,
                    _secret('bmc-credentials-2', OURS))
    assert 'only write Secrets named vmetal-nd-*' in body
    _refused(core.create_namespaced_secret, namespace,
             _secret('vmetal-nd-unlabelled'))
    # Its own Secret: made, then it may not take its marks off it.
    core.create_namespaced_secret(namespace, _secret('vmetal-nd-h0', OURS))
    _refused(core.replace_namespaced_secret, 'vmetal-nd-h0', namespace,
             _secret('vmetal-nd-h0'))
    core.replace_namespaced_secret('vmetal-nd-h0', namespace,
                                   _secret('vmetal-nd-h0', OURS, 'new'))
    core.delete_namespaced_secret('vmetal-nd-h0', namespace)
    assert admin.secret(namespace, 'vmetal-nd-h0') is None
    assert admin.secret(namespace, 'bmc-credentials-2') is None
    assert admin.secret(namespace, 'vmetal-nd-unlabelled') is None


@pytest.mark.parametrize('patch,why', [
    ({'spec': {'image': {'url': 'http://198.51.100.9/evil.img'}}},
     'only spec.networkData and spec.preprovisioningNetworkDataName'),
    # Hosts are made online (as BMO's CRD asks): powering one off is the
    # change.
    ({'spec': {'online': False}}, 'only spec.networkData'),
    ({'spec': {'bmc': {'credentialsName': 'vmetal-nd-h0'}}},
     'only spec.networkData'),
    ({'spec': {'bootMACAddress': None}}, 'only spec.networkData'),
    ({'metadata': {'annotations': {'example.com/other': 'x'}}},
     'only its output annotations'),
    ({'metadata': {'annotations': {'keep': None}}},
     'only its output annotations'),
    ({'metadata': {'labels': {'tier': 'gold'}}}, 'may not change the labels'),
    ({'metadata': {'finalizers': ['example.com/hold']}},
     'may not change the labels, finalizers'),
    ({'spec': {'networkData': {'name': 'bmc-credentials'}}},
     'only at its own network-data Secrets'),
    ({'spec': {'preprovisioningNetworkDataName': 'bmc-credentials'}},
     'only at its own network-data Secrets'),
], ids=['image', 'online', 'bmc', 'bootMAC', 'add-annotation',
        'drop-annotation', 'labels', 'finalizers', 'networkData-foreign',
        'preprov-foreign'])
def test_only_the_host_outputs_can_be_patched(admin, host_namespace,
                                              as_store, patch, why):
    namespace = host_namespace
    _, custom = as_store
    admin.create_host(namespace, 'h0', '52:54:00:00:08:01',
                      annotations={'keep': 'me'},
                      spec={'bmc': {'address': 'redfish://198.51.100.9/1',
                                    'credentialsName': 'bmc-credentials'}})
    before = admin.get_host(namespace, 'h0')
    body = _refused(custom.patch_namespaced_custom_object, *BMH[:2],
                    namespace, BMH[2], 'h0', patch, _content_type=MERGE)
    assert why in body
    after = admin.get_host(namespace, 'h0')
    assert after['metadata']['resourceVersion'] == before[
        'metadata']['resourceVersion']
    # The same patch as admin is accepted: the policy, not the request,
    # refused it.
    admin.custom.patch_namespaced_custom_object(
        *BMH[:2], namespace, BMH[2], 'h0', patch, _content_type=MERGE)


def test_the_store_writes_its_outputs_through_the_policies(
        admin, host_namespace, kube_cluster):
    """The store, with its own token, saves and then clears a host's
    outputs (annotations, both references, its Secret) where a user set
    other annotations and the BMC credentials."""
    namespace = host_namespace
    admin.core.create_namespaced_secret(namespace,
                                        _secret('bmc-credentials'))
    admin.create_host(
        namespace, 'h0', '52:54:00:00:08:02',
        annotations={props.NETWORK_CIDR: '203.0.113.1/24', 'keep': 'me'},
        spec={'bmc': {'address': 'redfish://198.51.100.9/1',
                      'credentialsName': 'bmc-credentials'}})
    # Its records live in its own namespace, as the shipped Role says.
    store = kube_store.KubernetesStore(kube.store_conf(kube_cluster.settings(
        namespace='vmetal-system', token=kube_cluster.store_token)))
    try:
        _save_and_clear(admin, namespace, store)
    finally:
        store.close()


def _save_and_clear(admin, namespace, store):
    owner = f'BareMetalHost/{namespace}/h0'
    result = host_network.ensure(store, owner, '52:54:00:00:08:02')
    host = admin.get_host(namespace, 'h0')
    annotations = host['metadata']['annotations']
    assert annotations['metal3.vcluster.com/ip-address'] == (
        f'{result.allocation.address}/24')
    assert annotations['keep'] == 'me'
    secret = admin.secret(namespace, 'vmetal-nd-baremetalhost-h0')
    assert secret.metadata.labels['vmetal-ironic.io/component'] == (
        'network-data')
    assert host['spec']['networkData']['name'] == secret.metadata.name
    assert host['spec']['bmc']['credentialsName'] == 'bmc-credentials'

    store.release(owner)
    host = admin.get_host(namespace, 'h0')
    assert 'metal3.vcluster.com/ip-address' not in host['metadata'][
        'annotations']
    assert 'networkData' not in host['spec']
    assert admin.secret(namespace, 'vmetal-nd-baremetalhost-h0') is None
    assert admin.secret(namespace, 'bmc-credentials') is not None


# -- vmetal-ipam-controller's identity ----------------------------------------

VERDICT = 'vmetal-ironic.io/ipam-verdict'
CONTROLLER_EVENT = {
    'reportingComponent': 'vmetal-ipam-controller',
    'reportingInstance': 'replica-a',
    'source': {'component': 'vmetal-ipam-controller'},
    'reason': 'AddressAllocated', 'message': '198.51.100.7 allocated',
    'type': 'Normal'}


@pytest.fixture
def as_controller(kube_cluster, controller_rbac):
    """Clients authenticated as the controller's ServiceAccount (the
    shipped roles of etc/kubernetes/controller)."""
    with k8s_client.ApiClient(kube_cluster.configuration(
            token=kube_cluster.controller_token)) as api:
        yield (k8s_client.CoreV1Api(api), k8s_client.CustomObjectsApi(api),
               k8s_client.CoordinationV1Api(api))


def _event(namespace, about, **changes):
    body = {'metadata': {'generateName': 'h0.', 'namespace': namespace},
            'involvedObject': about, **CONTROLLER_EVENT}
    body.update(changes)
    return body


def test_the_controller_writes_outputs_and_its_verdict_and_nothing_else(
        admin, host_namespace, as_controller, as_store):
    namespace = host_namespace
    _, custom, _ = as_controller
    admin.create_host(namespace, 'h0', '52:54:00:00:08:11',
                      annotations={'keep': 'me'})
    # What it writes: the outputs and its verdict.
    custom.patch_namespaced_custom_object(
        *BMH[:2], namespace, BMH[2], 'h0', {'metadata': {'annotations': {
            VERDICT: 'AddressAllocated: 198.51.100.7',
            'metal3.vcluster.com/ip-address': '198.51.100.7/24'}},
            'spec': {'preprovisioningNetworkDataName': 'vmetal-nd-h0'}},
        _content_type=MERGE)
    # What it may not: another annotation, another field of the host.
    assert 'only its output annotations' in _refused(
        custom.patch_namespaced_custom_object, *BMH[:2], namespace, BMH[2],
        'h0', {'metadata': {'annotations': {'keep': None}}},
        _content_type=MERGE)
    assert 'only spec.networkData' in _refused(
        custom.patch_namespaced_custom_object, *BMH[:2], namespace, BMH[2],
        'h0', {'spec': {'online': False}}, _content_type=MERGE)
    # The verdict is the controller's alone: not the store's to write.
    _refused(as_store[1].patch_namespaced_custom_object, *BMH[:2], namespace,
             BMH[2], 'h0', {'metadata': {'annotations': {VERDICT: 'x'}}},
             _content_type=MERGE)
    annotations = admin.get_host(namespace, 'h0')['metadata']['annotations']
    assert (annotations['keep'], annotations[VERDICT]) == (
        'me', 'AddressAllocated: 198.51.100.7')


def test_the_controller_writes_only_network_data_secrets(
        admin, host_namespace, as_controller):
    namespace = host_namespace
    core, _, _ = as_controller
    core.create_namespaced_secret(namespace, _secret('vmetal-nd-h1', OURS))
    admin.core.create_namespaced_secret(namespace,
                                        _secret('bmc-credentials'))
    assert f'not {namespace}/bmc-credentials' in _refused(
        core.replace_namespaced_secret, 'bmc-credentials', namespace,
        _secret('bmc-credentials', OURS, 'mine'))
    _refused(core.delete_namespaced_secret, 'bmc-credentials', namespace)
    assert admin.secret(namespace, 'bmc-credentials').data == {
        'password': 'c2VjcmV0'}
    core.delete_namespaced_secret('vmetal-nd-h1', namespace)


def test_the_controller_creates_only_its_own_lease(admin, as_controller):
    _, _, coordination = as_controller
    body = {'metadata': {'name': 'kube-scheduler'},
            'spec': {'holderIdentity': 'replica-a'}}
    assert 'only the Lease vmetal-ipam-controller, not ' \
        'vmetal-system/kube-scheduler' in _refused(
            coordination.create_namespaced_lease, 'vmetal-system', body)
    # Its own Lease: made by a dry run (the namespace is shared by the
    # session's controllers, which campaign for it for real); if one of
    # them made it already, the answer is 409, which admission lets
    # through to the storage (a refusal would have been a 403).
    body['metadata']['name'] = 'vmetal-ipam-controller'
    try:
        coordination.create_namespaced_lease('vmetal-system', body,
                                             dry_run='All')
    except k8s_client.ApiException as exc:
        assert exc.status == 409, exc.body


@pytest.mark.parametrize('changes, why', [
    ({'reportingComponent': 'kubelet', 'source': {'component': 'kubelet'}},
     'only as vmetal-ipam-controller'),
    ({'involvedObject': {'apiVersion': 'v1', 'kind': 'Pod', 'name': 'p'}},
     'not on a Pod'),
], ids=['other-component', 'other-kind'])
def test_the_controller_reports_only_its_own_events(
        host_namespace, as_controller, changes, why):
    core, _, _ = as_controller
    about = {'apiVersion': 'metal3.io/v1alpha1', 'kind': 'BareMetalHost',
             'name': 'h0', 'namespace': host_namespace}
    if 'involvedObject' in changes:
        changes['involvedObject']['namespace'] = host_namespace
    # Its own Event about a host of the namespace goes through.
    core.create_namespaced_event(host_namespace, _event(host_namespace,
                                                        about))
    # And one about a cluster-scoped NodeProvider, in default.
    core.create_namespaced_event('default', _event('default', {
        'apiVersion': 'management.loft.sh/v1', 'kind': 'NodeProvider',
        'name': 'team-a'}, reason='MalformedObjectSkipped', type='Warning'))
    assert why in _refused(core.create_namespaced_event, host_namespace,
                           _event(host_namespace, about, **changes))
