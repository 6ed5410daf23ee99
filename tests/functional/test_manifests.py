"""Send the shipped Kubernetes manifests to a real kube-apiserver.

Every kustomization of etc/kubernetes is rendered by the real tool
(``kubectl kustomize``, tests/kubectl.py) and applied with ``kubectl apply
--dry-run=server``, so kubectl's schema validation, then the API server's
own validation, defaulting and the CRDs' schemas judge each object;
Multus's NetworkAttachmentDefinition CRD is installed first. The test API
server (1.20) prunes unknown fields of custom resources instead of
rejecting them, so each answer is compared with what was sent: a field
that vanished is reported as the typo it is. Namespaces are applied for
real (dry-run objects cannot live in a dry-run namespace), and so are the
ServiceAccounts and RBAC objects, so that SubjectAccessReviews and the
agent's own token can show what the agent's and Ironic's identities may
do.

The cluster is :class:`tests.functional.kube.KubeCluster` (etcd,
kube-apiserver, kube-controller-manager from tools/build-kube),
which installs the CRDs of :func:`tests.functional.kube.crd_documents`
(baremetal-operator's own for metal3.io) when it starts.
"""

import copy
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request

from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exc
import pytest
import yaml

from tests import kubectl
from tests.functional import kube
from vmetal_ironic import exception
from tests.functional import veth
from vmetal_ironic import reservation
from vmetal_ironic.lab import observe
from vmetal_ironic.store import kubernetes as kube_store

TOP = pathlib.Path(__file__).resolve().parents[2]
KUBE = TOP / 'etc' / 'kubernetes'
NAD_CRD = pathlib.Path(__file__).resolve().parent / 'data' / \
    'networkattachmentdefinition-crd.yaml'
KUSTOMIZATIONS = ['overlays/macvlan', 'overlays/bridge', 'overlays/lab', 'metal3']
READY_TIMEOUT = 30

AGENT = 'system:serviceaccount:vmetal-system:vmetal-dhcp-agent'
METAL3_IRONIC = 'system:serviceaccount:baremetal-operator-system:vmetal-ironic'


@pytest.fixture(scope='module')
def cluster():
    # A control plane of its own (about 5 s to start): this module creates
    # cluster-wide RBAC objects and a CRD that other tests must not see.
    with kube.KubeCluster() as running:
        yield running


def _wait_served(api_client, group, version, plural):
    custom = k8s_client.CustomObjectsApi(api_client)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            custom.list_cluster_custom_object(group, version, plural)
            return
        except k8s_exc.ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope='module')
def api(cluster):
    with cluster.admin_client() as api_client:
        crd = yaml.safe_load(NAD_CRD.read_text())
        k8s_client.ApiextensionsV1Api(api_client).create_custom_resource_definition(crd)
        _wait_served(api_client, 'k8s.cni.cncf.io', 'v1', 'network-attachment-definitions')
        for name in ('vmetal-system', 'baremetal-operator-system'):
            try:
                k8s_client.CoreV1Api(api_client).create_namespace(
                    {'metadata': {'name': name}})
            except k8s_exc.ApiException as exc:
                if exc.status != 409:
                    raise
        yield api_client


def _dropped(sent, got, path=''):
    """Paths of ``sent`` that the API server's answer ``got`` lacks."""
    if isinstance(sent, dict) and isinstance(got, dict):
        out = []
        for key, value in sent.items():
            if key not in got:
                out.append(f'{path}.{key}')
            else:
                out.extend(_dropped(value, got[key], f'{path}.{key}'))
        return out
    if isinstance(sent, list) and isinstance(got, list):
        out = []
        for index, (one, other) in enumerate(zip(sent, got, strict=False)):
            out.extend(_dropped(one, other, f'{path}[{index}]'))
        if len(got) < len(sent):
            out.append(f'{path}[{len(got)}:]')
        return out
    return []


def _is_real(obj):
    return obj['kind'] in ('Namespace', 'ServiceAccount') or obj[
        'apiVersion'].startswith('rbac.authorization.k8s.io/')


def _apply(cluster, objects, validate=True):
    """``kubectl apply``: Namespaces, ServiceAccounts and RBAC for real,
    everything else as a server-side dry run.

    :returns: ``{object id: problems}`` for objects the server changed.
    :raises tests.kubectl.KubectlError: kubectl or the server refused one.
    """
    real = [obj for obj in objects if _is_real(obj)]
    dry = [obj for obj in objects if not _is_real(obj)]
    problems = {}
    for batch, dry_run in ((real, False), (dry, True)):
        if not batch:
            continue
        answers = kubectl.apply(batch, cluster.kubeconfig, dry_run=dry_run,
                                validate=validate)
        assert len(answers) == len(batch)
        for obj, answer in zip(batch, answers, strict=True):
            assert (answer['kind'], answer['metadata']['name']) == (
                obj['kind'], obj['metadata']['name'])
            lost = _dropped(obj, answer)
            if lost:
                problems[kubectl.object_id(obj)] = lost
    return problems


def _render(name):
    return kubectl.render(KUBE / name)


@pytest.mark.parametrize('name', KUSTOMIZATIONS)
def test_kustomization_is_accepted_unchanged(api, cluster, name):
    objects = _render(name)
    assert objects
    assert _apply(cluster, objects) == {}


def test_a_typo_is_caught(api, cluster):
    """The checks above can fail: kubectl refuses an unknown field, of a
    built-in kind or of a custom resource, and with kubectl's validation
    off a field the server prunes is still reported."""
    objects = _render('overlays/macvlan')
    deployment = copy.deepcopy(next(o for o in objects if o['kind'] == 'Deployment'))
    container = deployment['spec']['template']['spec']['containers'][0]
    container['readinesProbe'] = container.pop('readinessProbe')
    # kubectl's own schema names the field; the API server's strict field
    # validation (1.25 and newer) names its path.
    with pytest.raises(kubectl.KubectlError, match=r'unknown field "(spec\.template'
                       r'\.spec\.containers\[0\]\.)?readinesProbe"'):
        _apply(cluster, [deployment])
    nad = copy.deepcopy(next(o for o in objects
                             if o['kind'] == 'NetworkAttachmentDefinition'))
    nad['spec']['confg'] = nad['spec'].pop('config')
    with pytest.raises(kubectl.KubectlError, match=r'unknown field "(spec\.)?confg"'):
        _apply(cluster, [nad])
    assert _apply(cluster, [nad], validate=False) == {
        kubectl.object_id(nad): ['.spec.confg']}


def test_an_invalid_value_is_rejected(api, cluster):
    objects = _render('agent')
    deployment = copy.deepcopy(next(o for o in objects if o['kind'] == 'Deployment'))
    deployment['spec']['template']['metadata']['labels'] = {'other': 'labels'}
    with pytest.raises(kubectl.KubectlError, match=r'selector.*does not match'):
        _apply(cluster, [deployment])


def _allowed(api, user, verb, resource, namespace=None, group='', name=None):
    review = k8s_client.AuthorizationV1Api(api).create_subject_access_review({
        'apiVersion': 'authorization.k8s.io/v1', 'kind': 'SubjectAccessReview',
        'spec': {'user': user, 'groups': ['system:serviceaccounts'],
                 'resourceAttributes': {
                     'verb': verb, 'resource': resource, 'group': group,
                     'namespace': namespace, 'name': name}}})
    return review.status.allowed


def test_agent_identity_reads_reservations_and_holds_inspection_leases(
        api, cluster):
    _apply(cluster, _render('overlays/macvlan'))
    for verb in ('get', 'list', 'watch'):
        assert _allowed(api, AGENT, verb, 'dhcpreservations', 'vmetal-system',
                        group='vmetal-ironic.io')
    for verb in ('create', 'patch', 'update', 'delete'):
        assert not _allowed(api, AGENT, verb, 'dhcpreservations',
                            'vmetal-system', group='vmetal-ironic.io')
    # The shared inspection range: leases are AddressClaims bound by
    # AddressOwner records, in the store's namespace only.
    for verb in ('get', 'list', 'watch', 'create', 'patch', 'delete'):
        assert _allowed(api, AGENT, verb, 'addressclaims', 'vmetal-system',
                        group='vmetal-ironic.io')
        assert not _allowed(api, AGENT, verb, 'addressclaims', 'default',
                            group='vmetal-ironic.io')
    for verb in ('get', 'create', 'patch', 'delete'):
        assert _allowed(api, AGENT, verb, 'addressowners', 'vmetal-system',
                        group='vmetal-ironic.io')
    for verb in ('list', 'watch', 'update'):
        assert not _allowed(api, AGENT, verb, 'addressowners',
                            'vmetal-system', group='vmetal-ironic.io')
    assert not _allowed(api, AGENT, 'update', 'addressclaims',
                        'vmetal-system', group='vmetal-ironic.io')
    assert not _allowed(api, AGENT, 'get', 'secrets', 'vmetal-system')
    assert not _allowed(api, AGENT, 'get', 'configmaps', 'kube-system')


def test_metal3_ironic_gets_the_store_permissions(api, cluster):
    _apply(cluster, _render('overlays/macvlan'))
    _apply(cluster, _render('metal3'))
    assert _allowed(api, METAL3_IRONIC, 'create', 'addressclaims',
                    'vmetal-system', group='vmetal-ironic.io')
    assert _allowed(api, METAL3_IRONIC, 'patch', 'baremetalhosts', 'metal3',
                    group='metal3.io')
    # Following the claims is vmetal-ipam-controller's, not the store's.
    assert not _allowed(api, METAL3_IRONIC, 'watch', 'baremetalhosts',
                        'metal3', group='metal3.io')
    assert not _allowed(api, METAL3_IRONIC, 'create', 'addressclaims',
                        'kube-system', group='vmetal-ironic.io')
    # No Secret may be read anywhere, BMC credentials included.
    assert not _allowed(api, METAL3_IRONIC, 'get', 'secrets', 'metal3')
    assert not _allowed(api, METAL3_IRONIC, 'get', 'secrets', 'vmetal-system')


def _token_for(api, namespace, account):
    """A real ServiceAccount token (TokenRequest API) for ``account``."""
    answer = k8s_client.CoreV1Api(api).create_namespaced_service_account_token(
        account, namespace, {'spec': {'expirationSeconds': 600}})
    return answer.status.token


def test_agent_identity_runs_the_agents_store_calls(api, cluster):
    """The shipped Role is enough for what the agent does, and no more:
    the store calls of vmetal-dhcp-agent, made with the agent's own token."""
    _apply(cluster, _render('overlays/macvlan'))
    admin = kube_store.KubernetesStore(kube.store_conf(cluster.settings()))
    agent = kube_store.KubernetesStore(kube.store_conf(cluster.settings(
        token=_token_for(api, 'vmetal-system', 'vmetal-dhcp-agent'),
        max_retries=0)))
    try:
        res = reservation.Reservation(
            mac='52:54:00:00:0d:01', address='198.51.100.20', prefixlen=24,
            gateway='198.51.100.1', dns_servers=(), hostname='vdep-0',
            node='vdep-node', lease_time=600)
        admin.publish_reservation(res)
        # What the agent's feed does: list, then follow from the list.
        revision, listed = agent.reservations_snapshot()
        assert [r.mac for r in listed] == [res.mac]
        # The watch is allowed (a Forbidden would raise) and sees only ours.
        changes = list(agent.follow_reservations(revision, 1))
        assert all(c.changed is None or c.changed.mac == res.mac
                   for c in changes)
        with pytest.raises(exception.VmetalError, match='refused'):
            agent.withdraw_reservation(res.mac)
        assert [r.mac for r in admin.list_reservations()] == [res.mac]
    finally:
        admin.close()
        agent.close()


# --- the agent as the manifests configure it -------------------------------

AGENT_ADDRESS = '198.51.100.3'
CLIENT_MAC = '52:54:00:00:0d:02'
CLIENT_ADDRESS = '198.51.100.42'


@pytest.fixture
def link():
    """A veth pair: the agent's end in this namespace (standing in for the
    pod's net1), the machine's end in a namespace of its own."""
    with veth.machine_link('m', CLIENT_MAC, f'{AGENT_ADDRESS}/24') as names:
        yield names


def _wait_ready(url, proc, log, timeout=30):
    """What the Deployment's readinessProbe does: GET /metrics until 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f'vmetal-dhcp-agent exited {proc.returncode}: '
                        f'{log.read_text()[-2000:]}')
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return answer.read().decode()
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f'agent not ready in {timeout}s: {log.read_text()[-2000:]}')


def test_agent_serves_with_the_configmap(api, cluster, link, tmp_path):
    """vmetal-dhcp-agent started with the shipped ConfigMap and the
    Deployment's environment, reading the Kubernetes store with its own
    ServiceAccount token, answers a machine's DHCP with the reserved address,
    serves the bootloaders over TFTP, and passes its readiness probe.

    Standing in for the pod: the interface (``net1`` there) and the API
    credentials (in-cluster there) come from OS_* variables.
    """
    objects = _render('overlays/macvlan')
    _apply(cluster, objects)
    configmap = next(o for o in objects if o['kind'] == 'ConfigMap'
                     and o['metadata']['name'] == 'vmetal-dhcp-agent')
    deployment = next(o for o in objects if o['kind'] == 'Deployment')
    [container] = deployment['spec']['template']['spec']['containers']
    conf_file = tmp_path / 'vmetal-ironic.conf'
    conf_file.write_text(configmap['data']['vmetal-ironic.conf'])

    admin = kube_store.KubernetesStore(kube.store_conf(cluster.settings()))
    try:
        admin.publish_reservation(reservation.Reservation(
            mac=CLIENT_MAC, address=CLIENT_ADDRESS, prefixlen=24,
            gateway='198.51.100.1', dns_servers=(), hostname='vdep-1',
            node='vdep-node-1', lease_time=600))
    finally:
        admin.close()

    env = dict(os.environ)
    # The Deployment's env: the metrics address is the pod IP.
    [metrics_env] = container['env']
    assert metrics_env['name'] == 'OS_VMETAL_DHCP_AGENT__METRICS_HOST'
    env[metrics_env['name']] = AGENT_ADDRESS
    env.update({
        'OS_VMETAL_DHCP_AGENT__INTERFACE': link['agent'],
        'OS_VMETAL_KUBERNETES__API_URL': cluster.url,
        'OS_VMETAL_KUBERNETES__CA_FILE': cluster.ca_file,
        'OS_VMETAL_KUBERNETES__TOKEN': _token_for(
            api, 'vmetal-system', deployment['spec']['template']['spec'][
                'serviceAccountName']),
    })
    log = tmp_path / 'agent.log'
    with log.open('wb') as out:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'vmetal_ironic.cmd.dhcp_agent', *container['args'][:1],
             str(conf_file)], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        port = next(p['containerPort'] for p in container['ports']
                    if p['name'] == 'metrics')
        probe = container['readinessProbe']['httpGet']
        _wait_ready(f'http://{AGENT_ADDRESS}:{port}{probe["path"]}', proc, log)

        veth.lease(link, CLIENT_ADDRESS, log.read_text()[-2000:])
        # Both bootloaders of the image's TFTP root, one through the
        # /boot symlink that [vmetal_tftp]link_dirs allows.
        for name in ('undionly.kpxe', 'ipxe.efi'):
            target = tmp_path / name
            tftp = subprocess.run(
                ['ip', 'netns', 'exec', link['ns'], 'tftp', '-m', 'binary',
                 AGENT_ADDRESS, '-c', 'get', name, str(target)],
                capture_output=True, text=True, timeout=60, check=False)
            assert target.exists(), tftp.stdout + tftp.stderr + log.read_text()[-2000:]
            assert target.read_bytes() == (pathlib.Path('/usr/lib/ipxe') / name).read_bytes()

        # A transfer is counted when its last ACK arrives, which tftp-hpa
        # sends once it holds the file: the count may come a moment later.
        def both_served():
            text = _wait_ready(f'http://{AGENT_ADDRESS}:{port}/metrics', proc, log)
            served = re.search(r'^vmetal_tftp_transfers_total\{result="served"\} 2\.0$',
                               text, re.M)
            return text if served else None
        metrics = observe.wait_for(both_served, 10)
        assert metrics is not None, log.read_text()[-2000:]
        assert re.search(r'^vmetal_dhcp_replies_total\{type="ACK"\} 1\.0$', metrics, re.M)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
