"""The whole flow as Metal3 runs it, on the Kubernetes store (issue 10, 5).

``vmetal-lab --full --two-networks`` with a node named
``<namespace>~<host>`` on the stock ``redfish`` hardware type and
``[dhcp]dhcp_provider = vmetal`` on a Kubernetes store in the real
kube-apiserver of the test session, in Metal3's topology: the conductor
on a cluster network of its own, vmetal-dhcp-agent bridging it to the
machine's L2 (the isolation facts are read while the flow runs); both
reach the API server through the lab's outward relays (same address and
port inside their namespaces). The local store's full-flow test keeps the
one-L2 topology covered. The node carries no network properties, as
baremetal-operator registers it: they come from the host's node type.

As in Metal3, the host is inspected while nobody claims it (its address
is the BareMetalHost's), then a Metal3Machine claims it
(``spec.consumerRef``, as cluster-api-provider-metal3 does) and the deploy
follows: the Machine takes the address over and owns it. While the
installed OS runs, its address, the host's network-data Secret (key
``networkData``) and its annotations are read through the API, and the
Machine still holds the address after undeploy and cleaning.

Ironic's API is served over TLS, as Metal3 serves it (the lab's default
across two networks), with a certificate from a CA of the run's own:
while the host is inspected, a plain-HTTP request to the API gets no API
answer (cheroot's 400), one checked against that CA does, and the
agent's counters show the ramdisk's calls went to Ironic over TLS only.
The local store's two-network flow (test_lab_full.py) keeps the
plain-HTTP API covered. The agent runs from its image in a pod (``--agent-image``), its CA mounted
where the two-network overlay mounts the Secret ``ironic-cacert``.

The conductor and the agent authenticate as the store's ServiceAccount,
bound by the shipped RBAC only (etc/kubernetes/rbac in ``vmetal-system``,
rbac/host-namespace in the hosts' namespace): a call those roles do not
allow fails the flow.
"""

import base64
import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest
from kubernetes import client as k8s_client

from tests.functional import lab_checks
from tests.functional.k8s.conftest import BMH
from tests.functional.k8s.conftest import node_provider
from tests.functional.k8s.conftest import RESERVATIONS
from vmetal_ironic import owner as owner_mod
from vmetal_ironic import properties as props
from vmetal_ironic.lab import flow
from vmetal_ironic.store.kubernetes import kube_names

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='the lab needs root')

LAB = str(pathlib.Path(sys.executable).parent / 'vmetal-lab')
HOST = 'host-0'
MACHINE = 'worker-0'
POOL = '192.0.2.0/24'
RUN_TIMEOUT = 3000
STORE_NAMESPACE = 'vmetal-system'


def _store_config(path, kube_cluster, namespace, scope, token=None,
                  extra=()):
    """The conductor's and the agent's store: the store's own token, its
    objects in ``vmetal-system`` under an address scope of this test (the
    controller's: its own token, and ``extra`` lines)."""
    settings = kube_cluster.settings(
        token=token or kube_cluster.store_token, reconcile_interval=5,
        follow_claims_namespaces=[namespace])
    lines = ['[vmetal]', 'store = kubernetes', f'address_scope = {scope}',
             '[vmetal_kubernetes]']
    for key, value in settings.items():
        if isinstance(value, list):
            value = ','.join(value)
        lines.append(f'{key} = {value}')
    path.write_text('\n'.join([*lines, *extra]) + '\n')
    return path


def _pool(admin, scope):
    """``{address: owner}`` of the scope's allocations from the pool."""
    return {claim['spec']['address']: claim['spec']['owner']
            for claim in admin.claims(STORE_NAMESPACE)
            if claim['metadata']['labels'].get(kube_names.LABEL_SCOPE)
            == scope and claim['spec'].get('pool') == POOL
            and claim['spec']['purpose'] == 'allocation'}


def forget_run(admin, scope, mac):
    """Delete what a run left in the shared store namespace: its scope's
    claims and records, and the reservation of its MAC (Ironic withdraws
    none after cleaning, and the agent of the next run on this API server
    reads every reservation of the namespace: a stale one holding the
    address the next host is given keeps that host from being served)."""
    for plural in ('addressclaims', 'addressowners'):
        admin.custom.delete_collection_namespaced_custom_object(
            'vmetal-ironic.io', 'v1alpha1', STORE_NAMESPACE, plural,
            label_selector=f'{kube_names.LABEL_SCOPE}={scope}')
    try:
        admin.custom.delete_namespaced_custom_object(
            *RESERVATIONS[:2], STORE_NAMESPACE, RESERVATIONS[2],
            kube_names.reservation_name(mac))
    except k8s_client.ApiException as exc:
        if exc.status != 404:
            raise


def _claim(admin, namespace):
    """What CAPM3 does when a Metal3Machine takes the host."""
    admin.custom.patch_namespaced_custom_object(
        *BMH[:2], namespace, BMH[2], HOST,
        {'spec': {'consumerRef': {
            'apiVersion': 'infrastructure.cluster.x-k8s.io/v1beta1',
            'kind': 'Metal3Machine', 'name': MACHINE,
            'namespace': namespace}}},
        _content_type='application/merge-patch+json')


def _seen_while_os_runs(admin, namespace, scope):
    """The store's view through the API, taken while the OS is up."""
    host = admin.get_host(namespace, HOST)
    secret_name = host['spec'].get('preprovisioningNetworkDataName')
    secret = admin.secret(namespace, secret_name) if secret_name else None
    document = (json.loads(base64.b64decode(secret.data['networkData']))
                if secret is not None else None)
    return {'pool': _pool(admin, scope),
            'annotations': host['metadata'].get('annotations') or {},
            'secret_name': secret_name, 'document': document}


def test_metal3_host_deploys_on_the_kubernetes_store(
        tmp_path, kube_cluster, admin, host_namespace, cluster_objects,
        controller_rbac):
    namespace = host_namespace
    scope = f'm3{os.urandom(3).hex()}'
    cluster_objects('nodeproviders', node_provider(namespace, 'lab', {
        props.NETWORK_CIDR: f'{flow.SERVER}/{flow.PREFIX}',
        props.NETWORK_IP_RANGE: flow.IP_RANGE,
        props.DNS_SERVERS: flow.SERVER}))
    # The default environment's network must lose to the node type's.
    cluster_objects('networkenvironments', {
        'apiVersion': 'management.loft.sh/v1', 'kind': 'NetworkEnvironment',
        'metadata': {'name': f'env-{namespace}', 'annotations': {
            'machines.vcluster.com/is-default-environment': 'true'}},
        'spec': {'providerRef': f'prov-{namespace}', 'properties': {
            props.NETWORK_CIDR: '198.51.100.1/24'}}})
    mac = flow.random_mac()
    admin.create_host(namespace, HOST, mac, labels={'tier': namespace})
    config = _store_config(tmp_path / 'store.conf', kube_cluster, namespace,
                           scope)
    # The lab starts vmetal-ipam-controller beside Ironic, as its own
    # ServiceAccount with the shipped controller roles.
    controller = _store_config(
        tmp_path / 'controller.conf', kube_cluster, namespace, scope,
        token=kube_cluster.controller_token,
        extra=['[vmetal_ipam_controller]', 'lease_duration = 4',
               'renew_deadline = 3', 'retry_period = 0.5'])
    workdir = tmp_path / 'lab'

    proc = subprocess.Popen(
        [LAB, '--full', '--two-networks', '--agent-image', '--json',
         '--workdir', str(workdir),
         '--store-config', str(config), '--controller-config',
         str(controller), '--node-name', f'{namespace}~{HOST}',
         '--mac', mac], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    # A run that hangs is stopped (SIGTERM: the lab still cleans up).
    timer = threading.Timer(RUN_TIMEOUT, proc.terminate)
    timer.start()
    lines, seen, at_inspection, isolation, api = [], None, None, None, None
    try:
        for line in proc.stdout:
            lines.append(line)
            if 'ok ' in line and '. inspected:' in line:
                at_inspection = _pool(admin, scope)
                prefix = lab_checks.run_prefix(''.join(lines))
                isolation = lab_checks.two_network_facts(prefix)
                api = lab_checks.ironic_api_facts(
                    prefix, workdir / 'tls' / 'ironic-ca.pem')
                _claim(admin, namespace)
            elif 'ok ' in line and '. installed OS:' in line:
                seen = _seen_while_os_runs(admin, namespace, scope)
        err = proc.stderr.read()
        proc.wait(120)
        after_cleaning = _pool(admin, scope)
    finally:
        timer.cancel()
        lab_checks.stop_if_running(proc, 120)
        forget_run(admin, scope, mac)
    output = ''.join(lines) + err
    assert proc.returncode == 0, output
    summary = json.loads(lines[-1])
    address = summary['allocated_address']
    assert summary['ok'] is True
    assert summary['os_address'] == address
    assert summary['os_address_source'] == 'static'
    assert summary['node'] == f'{namespace}~{HOST}'
    assert summary['topology'] == 'two-networks'
    assert summary['ironic_api'] == 'https'
    assert summary['agent'] == 'image'
    # Inspection went through the agent: Ironic had no way to the L2.
    assert isolation is not None, output
    assert '192.0.2.' not in isolation['ironic_addresses'], isolation
    assert 'default' not in isolation['ironic_routes'], isolation
    assert isolation['route_to_l2'] != 0, isolation
    assert isolation['agent_ip_forward'] == '0', isolation
    # Lookup, heartbeats and inspection data reached Ironic over TLS,
    # checked against the run's CA; Ironic answers nothing in plain HTTP.
    assert api is not None, output
    lab_checks.assert_ironic_api(api, 'https')
    # What crossed the bridge, from the summary: a later ramdisk boot
    # came from the pod's copies, and the ramdisk's calls went over TLS.
    lab_checks.assert_warm_boots(summary)
    connections = summary['bridge']['upstream_connections']['api']
    assert connections['https'] >= 1 and connections['http'] == 0

    host_owner = str(owner_mod.for_host(namespace, HOST))
    machine = f'Metal3Machine/{namespace}/{MACHINE}'
    # Inspected unclaimed: the host held the address, from the node
    # type's pool; the Machine took it over and the OS runs with it.
    assert at_inspection == {address: host_owner}, output
    assert seen is not None, output
    assert seen['pool'] == {address: machine}
    annotations = seen['annotations']
    assert annotations[props.IP_ADDRESS] == f'{address}/{flow.PREFIX}'
    assert annotations[props.GATEWAY] == flow.SERVER
    assert seen['secret_name'] == kube_names.network_data_secret_name(
        host_owner)
    network = seen['document']['networks'][0]
    assert network['ip_address'] == address
    assert network['routes'][0]['gateway'] == flow.SERVER
    assert seen['document']['links'][0]['ethernet_mac_address'] == mac
    assert [s['address'] for s in seen['document']['services']] == [
        flow.SERVER]
    # Undeploy and cleaning leave the address with the Machine.
    assert after_cleaning == {address: machine}
    prefix = lab_checks.run_prefix(output)
    assert lab_checks.full_lab_leftovers(prefix) == set()
    # The agent's pod (its infra and agent containers) is gone too.
    from tests.functional.k8s import test_agent_image
    assert not [name for name in test_agent_image._podman_names()
                if name.startswith(prefix)]
