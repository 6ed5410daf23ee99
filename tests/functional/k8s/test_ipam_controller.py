"""vmetal-ipam-controller on a real API server: one replica leads through
the Lease and a standby takes over when it dies (the real command, killed
with SIGKILL); what it does is said on the host (Events, the verdict
annotation); it runs with the shipped controller RBAC, and that RBAC is
checked by SubjectAccessReviews for the three identities."""

import time

import pytest
from kubernetes import client as k8s_client

from tests.functional import kube
from tests.functional.k8s import controller_process as process
from tests.functional.k8s import test_claim_follower as follower
from vmetal_ironic import properties as props
from vmetal_ironic.ipam_controller import events
from vmetal_ironic.ipam_controller import leader
from vmetal_ironic.lab.observe import wait_for

CONTROLLER_SA = 'system:serviceaccount:vmetal-system:vmetal-ipam-controller'
AGENT_SA = 'system:serviceaccount:vmetal-system:vmetal-dhcp-agent'
def events_of(admin, namespace, name):
    found = admin.core.list_namespaced_event(
        namespace, field_selector=f'involvedObject.name={name}').items
    return sorted((e.reason, e.type, e.message) for e in found)


def test_the_host_says_what_happened(admin, namespace, start_controller):
    admin.create_host(namespace, 'good', '52:54:00:00:09:01', annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    admin.create_host(namespace, 'bad', '52:54:00:00:09:02', annotations={
        props.NETWORK_CIDR: '192.0.2.300/24'})
    start_controller()
    follower.claim_host(admin, namespace, 'good', 'worker-1')
    follower.claim_host(admin, namespace, 'bad', 'worker-2')

    def verdict(name):
        return (admin.get_host(namespace, name)['metadata'].get(
            'annotations') or {}).get(events.VERDICT_ANNOTATION)

    wait_for(lambda: verdict('good') and verdict('bad'), timeout=30,
             what='both hosts judged')
    assert verdict('good') == (
        f'AddressAllocated: 192.0.2.2 allocated to '
        f'Metal3Machine/{namespace}/worker-1')
    assert events_of(admin, namespace, 'good') == [
        (events.ALLOCATED, 'Normal',
         f'192.0.2.2 allocated to Metal3Machine/{namespace}/worker-1')]
    [(reason, kind, message)] = events_of(admin, namespace, 'bad')
    assert (reason, kind) == (events.REFUSED, 'Warning')
    # The value and the layer it came from.
    assert "'192.0.2.300/24'" in message
    assert f'BareMetalHost {namespace}/bad annotations' in message
    assert verdict('bad') == f'{events.REFUSED}: {message}'

    admin.custom.patch_namespaced_custom_object(
        *follower.BMH[:2], namespace, follower.BMH[2], 'good',
        {'spec': {'consumerRef': None}},
        _content_type='application/merge-patch+json')
    wait_for(lambda: verdict('good').startswith(events.RELEASED),
             timeout=20, what='the release said on the host')
    assert [r for r, _, _ in events_of(admin, namespace, 'good')] == [
        events.ALLOCATED, events.RELEASED]


def test_the_controller_runs_with_its_shipped_role_only(
        admin, host_namespace, controller_rbac, start_controller):
    # The watches, the Lease, the Secret written without reading it, the
    # host patch, the Events: all as the controller's ServiceAccount.
    admin.create_host(host_namespace, 'h', '52:54:00:00:02:20',
                      annotations={props.NETWORK_CIDR: '198.18.0.1/24'})
    controller = start_controller(
        namespace='vmetal-system', as_user=CONTROLLER_SA,
        follow_claims_namespaces=[host_namespace], reconcile_interval=0)
    follower.claim_host(admin, host_namespace, 'h', 'worker-20')
    host = follower.wait_outputs(admin, host_namespace, 'h')
    assert host['spec']['preprovisioningNetworkDataName'] == (
        'vmetal-nd-baremetalhost-h')
    wait_for(lambda: controller.reporter.events, timeout=10,
             what='the Event written')
    assert controller.reporter.failures == 0
    assert controller.counts['follow.failed'] == 0
    assert controller.counts['refused'] == 0
    assert controller.store.get_allocation(
        f'Metal3Machine/{host_namespace}/worker-20') is not None


def allowed(admin, user, verb, resource, group='', namespace=None,
            name=None):
    review = k8s_client.AuthorizationV1Api(
        admin.client).create_subject_access_review({
            'apiVersion': 'authorization.k8s.io/v1',
            'kind': 'SubjectAccessReview',
            'spec': {'user': user, 'groups': ['system:serviceaccounts'],
                     'resourceAttributes': {
                         'verb': verb, 'resource': resource, 'group': group,
                         'namespace': namespace, 'name': name}}})
    return review.status.allowed


@pytest.mark.parametrize('user, verb, resource, group, namespace, name, ok', [
    # The controller: its own Lease only, no Secret read anywhere, no
    # BareMetalHost deleted, its claims and records.
    (CONTROLLER_SA, 'update', 'leases', 'coordination.k8s.io',
     'vmetal-system', leader.NAME, True),
    (CONTROLLER_SA, 'update', 'leases', 'coordination.k8s.io',
     'vmetal-system', 'kube-scheduler', False),
    (CONTROLLER_SA, 'delete', 'leases', 'coordination.k8s.io',
     'vmetal-system', leader.NAME, False),
    (CONTROLLER_SA, 'get', 'secrets', '', 'metal3', 'bmc-credentials', False),
    (CONTROLLER_SA, 'delete', 'baremetalhosts', 'metal3.io', 'metal3', 'h',
     False),
    (CONTROLLER_SA, 'watch', 'addressclaims', 'vmetal-ironic.io',
     'vmetal-system', None, True),
    (CONTROLLER_SA, 'create', 'events', '', 'metal3', None, True),
    # The conductors' store identity: no Lease, no Secret read, no watch
    # of the hosts (the controller follows them).
    (kube.STORE_SA, 'watch', 'baremetalhosts', 'metal3.io', 'metal3', None,
     False),
    (kube.STORE_SA, 'update', 'leases', 'coordination.k8s.io',
     'vmetal-system', leader.NAME, False),
    (kube.STORE_SA, 'get', 'secrets', '', 'metal3', 'bmc-credentials', False),
    # The L2-facing agent: reads reservations, writes no host and no
    # reservation, no Lease.
    (AGENT_SA, 'watch', 'dhcpreservations', 'vmetal-ironic.io',
     'vmetal-system', None, True),
    (AGENT_SA, 'create', 'dhcpreservations', 'vmetal-ironic.io',
     'vmetal-system', None, False),
    (AGENT_SA, 'patch', 'baremetalhosts', 'metal3.io', 'metal3', 'h', False),
    (AGENT_SA, 'update', 'leases', 'coordination.k8s.io', 'vmetal-system',
     leader.NAME, False),
])
def test_least_privilege_by_subject_access_review(
        admin, controller_rbac, user, verb, resource, group, namespace, name,
        ok):
    assert allowed(admin, user, verb, resource, group, namespace, name) is ok


def test_a_standby_takes_over_within_the_lease_duration(
        kube_cluster, admin, namespace, tmp_path):
    admin.create_host(namespace, 'h', '52:54:00:00:09:11', annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    coordination = k8s_client.CoordinationV1Api(admin.client)

    def holder():
        try:
            lease = coordination.read_namespaced_lease(leader.NAME, namespace)
        except k8s_client.ApiException:
            return None
        return lease.spec.holder_identity

    settings = kube_cluster.settings(namespace=namespace,
                                     reconcile_interval=0)
    first = process.ControllerProcess(settings, tmp_path, 'first')
    second = None
    try:
        # The interpreter starting and importing counts too.
        wait_for(lambda: holder() == 'first', timeout=60,
                 what='the first replica leading')
        second = process.ControllerProcess(settings, tmp_path, 'second')
        # Once the standby runs its loop (the interpreter's start is not
        # the takeover's), and has looked a few times.
        wait_for(lambda: b'campaigns' in second.log.read_bytes(),
                 timeout=60, what='the standby campaigning')
        time.sleep(2)
        assert holder() == 'first'
        # Each replica says whether it leads.
        assert first.metrics()[('vmetal_ipam_controller_leading',)] == 1
        assert second.metrics()[('vmetal_ipam_controller_leading',)] == 0
        first.kill()
        killed = time.monotonic()
        wait_for(lambda: holder() == 'second', timeout=15,
                 what='the standby taking over')
        # Within the lease duration (4 s), one look (0.5 s) and one
        # request (at most renew_deadline / 2), plus reading it here.
        assert time.monotonic() - killed < 4 + 0.5 + 1.5 + 2
        # And it works: a claim is followed.
        follower.claim_host(admin, namespace, 'h', 'worker-9')
        follower.wait_outputs(admin, namespace, 'h')
        after = second.metrics()
        assert after[('vmetal_ipam_controller_leading',)] == 1
        assert after[('vmetal_ipam_controller_leadership_changes_total',
                      'started')] == 1
        # The first replica's Lease taken over: one transition.
        assert after[('vmetal_ipam_controller_lease_transitions',)] >= 1
        # A clean stop gives the Lease up.
        assert second.stop() == 0
        assert holder() is None
    finally:
        for replica in (first, second):
            if replica is not None:
                replica.stop()


def test_the_controller_process_serves_its_metrics(
        kube_cluster, admin, namespace, tmp_path):
    """The real command with its endpoint on: one host given its network,
    one with a consumerRef no Machine can have (BMO's schema lets any
    string through) skipped, counted and said on that host, the queue
    drained."""
    admin.create_host(namespace, 'good', '52:54:00:00:09:21', annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    admin.create_host(namespace, 'bad', '52:54:00:00:09:22', annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'}, spec={'consumerRef': {
            'kind': 'Metal3Machine', 'name': 'worker/../other'}})
    replica = process.ControllerProcess(kube_cluster.settings(
        namespace=namespace, reconcile_interval=0), tmp_path, 'scraped')
    try:
        # The interpreter starting and importing counts too.
        wait_for(lambda: replica.metrics().get(
            ('vmetal_ipam_controller_leading',)), timeout=60,
            what='the replica leading')
        follower.claim_host(admin, namespace, 'good', 'worker-21')
        follower.wait_outputs(admin, namespace, 'good')

        def settled():
            found = replica.metrics()
            return found if found.get(
                ('vmetal_ipam_controller_queue_depth',)) == 0 and found.get(
                ('vmetal_ipam_controller_verdicts_total', 'allocated')
            ) else None

        found = wait_for(settled, timeout=30, what='the queue drained')
        assert found[('vmetal_ipam_controller_steps_total', 'ok',
                      'follow')] >= 1
        assert found.get(('vmetal_ipam_controller_steps_total', 'failed',
                          'follow'), 0) == 0
        assert found[('vmetal_ipam_controller_skipped_objects_total',
                      'BareMetalHost', 'consumer_ref')] >= 1
        assert found[('vmetal_ipam_controller_reconcile_seconds_count',
                      'host')] >= 2
        assert found[('vmetal_ipam_controller_events_total',
                      'written')] >= 2
        [(reason, kind, message)] = events_of(admin, namespace, 'bad')
        assert (reason, kind) == (events.SKIPPED, 'Warning')
        assert message == (f"BareMetalHost {namespace}/bad spec.consumerRef."
                           "name 'worker/../other' is not an object name")
        assert 'networkData' not in admin.get_host(namespace, 'bad')['spec']
        # A clean stop, the endpoint's thread included.
        assert replica.stop() == 0
    finally:
        replica.stop()


def test_a_node_type_with_a_bad_selector_is_said_on_its_node_provider(
        admin, namespace, cluster_objects, start_controller):
    """One team's malformed selector (the CRD lets any operator string
    through): a Warning on that NodeProvider, counted, and a host of
    another node type still gets its network."""
    bad = node_provider_with(namespace, 'bad', {'matchExpressions': [
        {'key': 'tier', 'operator': 'Near', 'values': ['x']}]})
    good = node_provider_with(namespace, 'good', {'matchLabels': {
        'tier': namespace}})
    cluster_objects('nodeproviders', bad)
    cluster_objects('nodeproviders', good)
    admin.create_host(namespace, 'h', '52:54:00:00:09:31',
                      labels={'tier': namespace})
    controller = start_controller()
    follower.claim_host(admin, namespace, 'h', 'worker-31')
    host = follower.wait_outputs(admin, namespace, 'h')
    assert host['metadata']['annotations'][props.IP_ADDRESS].startswith(
        '198.51.100.')

    def warned():
        return events_of(admin, 'default', bad['metadata']['name'])

    [(reason, kind, message)] = wait_for(warned, timeout=20,
                                         what='the Warning on the provider')
    assert (reason, kind) == (events.SKIPPED, 'Warning')
    assert f"NodeProvider {bad['metadata']['name']} node type 'small'" in (
        message)
    assert "'Near'" in message
    assert controller.metrics.registry.get_sample_value(
        'vmetal_ipam_controller_skipped_objects_total',
        {'kind': 'NodeProvider', 'reason': 'selector'}) >= 1
    assert events_of(admin, 'default', good['metadata']['name']) == []


def node_provider_with(namespace, which, selector):
    return {'apiVersion': 'management.loft.sh/v1', 'kind': 'NodeProvider',
            'metadata': {'name': f'{which}-{namespace}'},
            'spec': {'metal3': {'nodeTypes': [{
                'name': 'small', 'bareMetalHosts': {'selector': selector},
                'properties': {props.NETWORK_CIDR: '198.51.100.1/24'}}]}}}
