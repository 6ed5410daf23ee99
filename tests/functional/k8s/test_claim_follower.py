"""The store follows the claims (issue 9, "What to build" 3): a host a
Machine claims gets its address, network-data Secret and outputs from a
reconcile pass, with no Ironic involved, as a virtual-media boot on
Metal3's stock hardware types needs (it never calls the DHCP provider).
"""

import base64
import json

from tests.functional import kube
from vmetal_ironic import properties as props
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.ipam_controller import reconciler
from vmetal_ironic.lab.observe import wait_for
from vmetal_ironic.store import kubernetes as kube_store

BMH = ('metal3.io', 'v1alpha1', 'baremetalhosts')
SECRET_KEY = 'networkData'  # noqa: S105 - the Metal3 key name


def mac_of(index):
    return f'52:54:00:00:07:{index:02x}'


def claim_host(admin, namespace, name, machine):
    """What CAPM3 does when a Metal3Machine takes the host."""
    admin.custom.patch_namespaced_custom_object(
        *BMH[:2], namespace, BMH[2], name,
        {'spec': {'consumerRef': {
            'apiVersion': 'infrastructure.cluster.x-k8s.io/v1beta1',
            'kind': 'Metal3Machine', 'name': machine}}},
        _content_type='application/merge-patch+json')


def network_document(admin, namespace, name):
    secret = admin.secret(namespace, name)
    assert secret is not None, f'Secret {name} not written'
    return json.loads(base64.b64decode(secret.data[SECRET_KEY]))


def wait_outputs(admin, namespace, name):
    """The host, once it carries the store's outputs (20 s at most)."""
    def outputs():
        host = admin.get_host(namespace, name)
        annotations = host['metadata'].get('annotations') or {}
        return host if props.IP_ADDRESS in annotations else None
    return wait_for(outputs, timeout=20, what=f'outputs on {name}')


def _versions(admin, namespace):
    """resourceVersion of every object the store writes, by kind/name."""
    versions = {('claim', c['metadata']['name']): c['metadata'][
        'resourceVersion'] for c in admin.claims(namespace)}
    for host in admin.list_hosts(namespace):
        versions[('host', host['metadata']['name'])] = host['metadata'][
            'resourceVersion']
    for secret in admin.core.list_namespaced_secret(namespace).items:
        versions[('secret', secret.metadata.name)] = (
            secret.metadata.resource_version)
    return versions


def test_a_pass_gives_a_claimed_host_its_network_without_ironic(
        admin, namespace, make_store, layered):
    # Properties from every layer: dns-servers on the host, network-cidr
    # from the node type (over the default environment's).
    admin.create_host(namespace, 'good', mac_of(1), labels=layered,
                      annotations={props.DNS_SERVERS: '203.0.113.53'})
    admin.create_host(namespace, 'bad', mac_of(2), labels=layered,
                      annotations={props.NETWORK_CIDR: '192.0.2.300/24'})
    admin.create_host(namespace, 'unclaimed', mac_of(3), labels=layered)
    admin.create_host(namespace, 'detached', mac_of(4), labels=layered,
                      annotations={'baremetalhost.metal3.io/detached': ''})
    for host, machine in (('good', 'worker-0'), ('bad', 'worker-1'),
                          ('detached', 'worker-3')):
        claim_host(admin, namespace, host, machine)
    store = make_store()
    rules = reconciler.Reconciler(store)

    assert rules.run_once() == []

    report = rules.last_follow
    assert report.given == [f'{namespace}/good']
    [(where, message)] = report.rejected
    assert where == f'{namespace}/bad'
    # One line naming the value and the layer it came from.
    assert '192.0.2.300/24' in message
    assert f'BareMetalHost {namespace}/bad annotations' in message
    assert '\n' not in message
    assert (rules.claims_followed,
            rules.claims_rejected) == (1, 1)

    # The Machine holds one address from the node type's pool.
    machine = f'Metal3Machine/{namespace}/worker-0'
    held = [(c['spec']['owner'], c['spec']['address'], c['spec'].get('host'))
            for c in admin.claims(namespace)
            if c['spec']['purpose'] == 'allocation']
    assert held == [(machine, '198.51.100.2', f'{namespace}/good')]
    # Its Secret, keyed networkData, keyed by the boot MAC.
    secret_name = 'vmetal-nd-baremetalhost-good'  # noqa: S105 - a name
    document = network_document(admin, namespace, secret_name)
    assert document['links'][0]['ethernet_mac_address'] == mac_of(1)
    assert document['networks'][0]['ip_address'] == '198.51.100.2'
    assert document['services'] == [{'type': 'dns',
                                      'address': '203.0.113.53'}]
    # The host's outputs and its references to the Secret.
    good = admin.get_host(namespace, 'good')
    annotations = good['metadata']['annotations']
    assert annotations[props.IP_ADDRESS] == '198.51.100.2/24'
    assert annotations[props.GATEWAY] == '198.51.100.1'
    assert good['spec']['preprovisioningNetworkDataName'] == secret_name
    assert good['spec']['networkData']['name'] == secret_name
    # Nothing at all for the bad, the unclaimed and the detached host.
    for name in ('bad', 'unclaimed', 'detached'):
        host = admin.get_host(namespace, name)
        assert props.IP_ADDRESS not in (host['metadata'].get('annotations')
                                        or {})
        assert 'preprovisioningNetworkDataName' not in host['spec']
        assert admin.secret(namespace,
                            f'vmetal-nd-baremetalhost-{name}') is None

    # A second pass changes nothing (the bad host is reported again).
    before = _versions(admin, namespace)
    assert rules.run_once() == []
    assert rules.last_follow.given == []
    assert _versions(admin, namespace) == before
    assert rules.claims_rejected == 2


def test_outputs_cut_short_are_completed_by_the_next_pass(
        admin, namespace, make_store):
    # The address was given (by Ironic or a pass) but the writer stopped
    # before the host's outputs: the next pass completes them, same address.
    admin.create_host(namespace, 'h', mac_of(5), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    claim_host(admin, namespace, 'h', 'worker-5')
    store = make_store()
    held = store.allocate(ipam_pool.parse_pool('192.0.2.1/24'),
                          f'BareMetalHost/{namespace}/h', mac=mac_of(5))
    rules = reconciler.Reconciler(store)
    rules.run_once()
    assert rules.last_follow.given == [f'{namespace}/h']
    host = admin.get_host(namespace, 'h')
    assert host['metadata']['annotations'][props.IP_ADDRESS] == (
        f'{held.address}/24')
    assert [c['spec']['address'] for c in admin.claims(namespace)
            if c['spec']['purpose'] == 'allocation'] == [held.address]


def claim_or_follow(settings, namespace, count, claims, gate):
    """Worker body: claim ``count`` hosts one by one (as Metal3 would) or
    run reconcile passes back to back, once all workers are released."""
    store = kube_store.KubernetesStore(kube.store_conf(settings))
    try:
        gate[0].put(1)
        gate[1].wait(120)
        if claims:
            for index in range(count):
                store.api.custom.patch_namespaced_custom_object(
                    *BMH[:2], namespace, BMH[2], f'h{index}',
                    {'spec': {'consumerRef': {
                        'kind': 'Metal3Machine', 'name': f'm{index}'}}},
                    _content_type='application/merge-patch+json')
            return 0
        rules = reconciler.Reconciler(store)
        for _ in range(6):
            rules.run_once()
        return rules.claims_followed
    finally:
        store.close()


def test_passes_racing_each_other_give_each_machine_one_address(
        kube_cluster, admin, namespace):
    # One process claims hosts while two others run passes back to back
    # (not claimed first and raced after): both passes may give one host
    # its network at once; every Machine ends with one address, no
    # address is on two Machines, each host shows its Machine's.
    count = 12
    for index in range(count):
        admin.create_host(namespace, f'h{index}', mac_of(10 + index),
                          annotations={props.NETWORK_CIDR: '192.0.2.1/24'})
    settings = kube_cluster.settings(namespace=namespace)
    kube.run_together(3, claim_or_follow,
                      lambda i: (settings, namespace, count, i == 0))
    # Claims made after the racing passes' last listing: one more pass.
    store = kube_store.KubernetesStore(kube.store_conf(settings))
    try:
        rules = reconciler.Reconciler(store)
        rules.run_once()
        rules.run_once()
        assert rules.last_follow.given == []
    finally:
        store.close()
    held = [(c['spec']['owner'], c['spec']['address'])
            for c in admin.claims(namespace)
            if c['spec']['purpose'] == 'allocation']
    assert sorted(owner for owner, _ in held) == sorted(
        f'Metal3Machine/{namespace}/m{index}' for index in range(count))
    assert len({address for _, address in held}) == count
    for index in range(count):
        host = admin.get_host(namespace, f'h{index}')
        address = host['metadata']['annotations'][props.IP_ADDRESS]
        assert (f'Metal3Machine/{namespace}/m{index}',
                address.split('/')[0]) in held


def test_a_claim_is_followed_within_seconds_not_one_interval_later(
        admin, namespace, start_controller):
    # No periodic resync (interval 0): only the controller's watches. The
    # host is claimed once they run.
    admin.create_host(namespace, 'h', mac_of(6), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    controller = start_controller(reconcile_interval=0)
    claim_host(admin, namespace, 'h', 'worker-6')
    host = wait_outputs(admin, namespace, 'h')
    assert host['spec']['preprovisioningNetworkDataName'] == (
        'vmetal-nd-baremetalhost-h')
    assert [c['spec']['owner'] for c in admin.claims(namespace)
            if c['spec']['purpose'] == 'allocation'] == [
        f'Metal3Machine/{namespace}/worker-6']
    assert controller.counts['follow.ok'] == 1


def test_followed_hosts_cost_six_requests_each_and_two_per_pass(
        admin, namespace, make_store, layered):
    store = make_store()
    names = ('warm', 'next-1', 'next-2')
    for index, name in enumerate(names):
        admin.create_host(namespace, name, mac_of(20 + index), labels=layered)
    # The warm-up host: the process reads the held addresses once and
    # claims the pool's gateway, as every process does once.
    claim_host(admin, namespace, 'warm', 'machine-warm')
    store.reconcile()
    before = store.api.requests
    store.reconcile()
    idle = store.api.requests - before
    for name in names[1:]:
        claim_host(admin, namespace, name, f'machine-{name}')
    before = store.api.requests
    store.reconcile()
    # Per pass: the node types and environments, listed once. Per host:
    # the host once, the claim and the owner record (two creates and the
    # claim read back), the Secret, the host patch.
    assert store.api.requests - before - idle == 2 + 2 * 6
    for name in names[1:]:
        assert wait_outputs(admin, namespace, name)


def test_the_watch_releases_as_hosts_go_not_one_interval_later(
        admin, namespace, start_controller):
    # No periodic resync (interval 0): the controller gives the three
    # claimed hosts their addresses as it starts; from then on only the
    # events act.
    for index, name in enumerate(('gone', 'let-go', 'detached')):
        admin.create_host(namespace, name, mac_of(30 + index), annotations={
            props.NETWORK_CIDR: '192.0.2.1/24'})
        claim_host(admin, namespace, name, f'machine-{name}')
    controller = start_controller(reconcile_interval=0)

    def holders():
        return {c['spec']['owner'].rsplit('/', 1)[1]: c
                for c in admin.claims(namespace)
                if c['spec']['purpose'] == 'allocation'}

    wait_for(lambda: sorted(holders()) == [
        'machine-detached', 'machine-gone', 'machine-let-go'], timeout=30,
        what='the three claimed hosts followed')
    admin.delete_host(namespace, 'gone')
    # The Machine lets go of a host that is not provisioned.
    admin.custom.patch_namespaced_custom_object(
        *BMH[:2], namespace, BMH[2], 'let-go', {'spec': {'consumerRef': None}},
        _content_type='application/merge-patch+json')
    # Detached, then deleted: its server may still run with the address.
    admin.custom.patch_namespaced_custom_object(
        *BMH[:2], namespace, BMH[2], 'detached',
        {'metadata': {'annotations': {
            'baremetalhost.metal3.io/detached': ''}}},
        _content_type='application/merge-patch+json')
    admin.delete_host(namespace, 'detached')
    wait_for(lambda: sorted(holders()) == ['machine-detached'], timeout=20,
             what='the addresses of the gone and let-go hosts released')
    kept = holders()['machine-detached']
    wait_for(lambda: 'vmetal-ironic.io/retain' in (
        holders()['machine-detached']['metadata'].get('labels') or {}),
        timeout=10, what='the detached host\'s address retained')
    assert kept['spec']['host'] == f'{namespace}/detached'
    assert controller.counts['released'] == 2
