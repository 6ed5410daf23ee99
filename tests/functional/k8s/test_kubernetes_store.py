"""The Kubernetes store against a real kube-apiserver, etcd and
kube-controller-manager (garbage collector)."""

import base64
import json
import time

import netaddr
import pytest

from tests.functional import kube
from vmetal_ironic.lab.observe import wait_for
from vmetal_ironic import exception
from vmetal_ironic import host_network
from vmetal_ironic import owner as owner_mod
from vmetal_ironic import properties as props
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.ipam import errors as ipam_errors
from vmetal_ironic.store import kubernetes as kube_store
from vmetal_ironic.store.kubernetes import kube_names

WORKERS = 8
PER_WORKER = 50


def mac_of(index):
    return f'52:54:00:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}'


def owner_of(namespace, name):
    return f'BareMetalHost/{namespace}/{name}'


def pooled_hosts(admin, namespace, make_store, count):
    """Create hosts ``h0``.. in the pool 192.0.2.0/24, then give each its
    address through a new store.

    :returns: that store.
    """
    for index in range(count):
        admin.create_host(namespace, f'h{index}', mac_of(index),
                          annotations={props.NETWORK_CIDR: '192.0.2.1/24'})
    store = make_store()
    for index in range(count):
        host_network.ensure(store, owner_of(namespace, f'h{index}'),
                            mac_of(index))
    return store


def run_workers(kube_cluster, namespace, owners_and_macs, workers=WORKERS):
    """Split the hosts over ``workers`` processes that start together."""
    chunks = [owners_and_macs[i::workers] for i in range(workers)]
    settings = kube_cluster.settings(namespace=namespace)
    outcomes, _ = kube.run_together(workers, kube.ensure_hosts,
                                    lambda i: (settings, chunks[i]),
                                    timeout=300)
    return [result for chunk, _, _ in outcomes for result in chunk]


def check_outputs_agree(admin, namespace, pool_key, prefixlen, results):
    """The address claims, the host annotations and the Secrets say the
    same thing as the allocators reported."""
    data = admin.pool_data(namespace, pool_key)
    expected = {address: owner for owner, address, error in results
                if error is None}
    assert data == expected
    hosts = {h['metadata']['name']: h for h in admin.list_hosts(namespace)}
    for address, owner in expected.items():
        name = owner.rsplit('/', 1)[1]
        annotations = hosts[name]['metadata']['annotations']
        assert annotations[props.IP_ADDRESS] == f'{address}/{prefixlen}'
        secret_name = kube_names.network_data_secret_name(owner)
        assert hosts[name]['spec']['preprovisioningNetworkDataName'] == (
            secret_name)
    return data


def test_8_processes_allocate_400_distinct_addresses(kube_cluster, admin,
                                                     namespace,
                                                     start_controller):
    cidr = '198.18.0.1/16'
    names = [(f'host-{index:03d}', mac_of(index))
             for index in range(WORKERS * PER_WORKER)]
    admin.create_hosts(namespace, names, {props.NETWORK_CIDR: cidr})
    hosts = [(owner_of(namespace, name), mac) for name, mac in names]
    # A controller judging every host as it changes must never free a
    # live host's address, however it interleaves with the allocations.
    start_controller(reconcile_interval=1)

    results = run_workers(kube_cluster, namespace, hosts)

    errors = [r for r in results if r[2] is not None]
    assert errors == []
    addresses = [address for _, address, _ in results]
    assert len(addresses) == 400
    assert len(set(addresses)) == 400
    data = check_outputs_agree(admin, namespace, '198.18.0.0/16', 16, results)
    assert len(data) == 400
    # A sample Secret holds the document for the host's MAC and address.
    owner, address, _ = results[0]
    secret = admin.secret(namespace,
                          kube_names.network_data_secret_name(owner))
    document = json.loads(base64.b64decode(secret.data['networkData']))
    assert document['networks'][0]['ip_address'] == address
    assert secret.metadata.owner_references[0].kind == 'BareMetalHost'


def test_pool_of_exactly_400_and_the_401st_host(kube_cluster, admin,
                                                namespace):
    # 198.18.0.10-198.18.0.255 is 246 addresses, 198.18.1.0-.153 is 154.
    annotations = {props.NETWORK_CIDR: '198.18.0.1/16',
                   props.NETWORK_IP_RANGE: '198.18.0.10-198.18.1.153'}
    names = [(f'host-{index:03d}', mac_of(index)) for index in range(401)]
    admin.create_hosts(namespace, names, annotations)
    hosts = [(owner_of(namespace, name), mac) for name, mac in names]

    results = run_workers(kube_cluster, namespace, hosts)

    errors = [r for r in results if r[2] is not None]
    assert len(errors) == 1
    loser, _, message = errors[0]
    assert message == ('PoolExhausted: pool 198.18.0.0/16 ranges '
                       '198.18.0.10-198.18.1.153: all ranges exhausted; '
                       'no free addresses left')
    data = check_outputs_agree(admin, namespace, '198.18.0.0/16', 16, results)
    assert len(data) == 400
    assert set(data) == {str(netaddr.IPAddress(v)) for v in range(
        int(netaddr.IPAddress('198.18.0.10')),
        int(netaddr.IPAddress('198.18.1.153')) + 1)}
    # Nothing half-written for the loser: no entry, Secret or outputs.
    assert loser not in data.values()
    loser_name = loser.rsplit('/', 1)[1]
    assert admin.secret(namespace,
                        kube_names.network_data_secret_name(loser)) is None
    host = admin.get_host(namespace, loser_name)
    assert props.IP_ADDRESS not in host['metadata']['annotations']
    assert 'preprovisioningNetworkDataName' not in host['spec']


# -- property precedence -------------------------------------------------

def test_host_annotations_win_over_node_type_and_environment(
        admin, namespace, make_store, layered):
    admin.create_host(namespace, 'h', mac_of(1), labels=layered,
                      annotations={props.NETWORK_CIDR: '203.0.113.1/24'})
    store = make_store()
    result = host_network.ensure(store, owner_of(namespace, 'h'), mac_of(1))
    assert result.allocation.address == '203.0.113.2'
    # dns-servers is not set on the host: the node type's value applies.
    assert result.spec.dns_servers == ('198.51.100.53',)


def test_node_type_wins_over_default_environment(admin, namespace,
                                                 make_store, layered):
    admin.create_host(namespace, 'h', mac_of(2), labels=layered)
    store = make_store()
    result = host_network.ensure(store, owner_of(namespace, 'h'), mac_of(2))
    assert result.allocation.address == '198.51.100.2'
    assert result.spec.dns_servers == ('198.51.100.53',)


def test_default_environment_applies_when_nothing_else_does(
        admin, namespace, make_store, layered):
    admin.create_host(namespace, 'h', mac_of(3))     # no node type label
    store = make_store()
    result = host_network.ensure(store, owner_of(namespace, 'h'), mac_of(3))
    assert result.allocation.address == '192.0.2.2'
    assert result.spec.dns_servers == ('192.0.2.53',)
    host = admin.get_host(namespace, 'h')
    assert host['metadata']['annotations'][props.GATEWAY] == '192.0.2.1'
    assert host['metadata']['annotations'][props.DNS_SERVERS] == '192.0.2.53'


def test_two_default_environments_are_a_clear_error(
        admin, namespace, make_store, layered, cluster_objects):
    cluster_objects('networkenvironments', {
        'apiVersion': 'management.loft.sh/v1', 'kind': 'NetworkEnvironment',
        'metadata': {'name': f'env2-{namespace}', 'annotations': {
            'machines.vcluster.com/is-default-environment': 'true'}},
        'spec': {'properties': {props.NETWORK_CIDR: '203.0.113.1/24'}}})
    admin.create_host(namespace, 'h', mac_of(4))
    store = make_store()
    with pytest.raises(exception.InvalidProperty,
                       match='several Network Environments are marked '
                             'default'):
        host_network.ensure(store, owner_of(namespace, 'h'), mac_of(4))
    assert admin.pool_data(namespace, '203.0.113.0/24') == {}


# -- outputs ------------------------------------------------------------

def test_outputs_and_idempotence(admin, namespace, make_store):
    admin.create_host(namespace, 'h', mac_of(5), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24',
        props.DNS_SERVERS: '192.0.2.53,198.51.100.53'})
    store = make_store()
    owner = owner_of(namespace, 'h')
    first = host_network.ensure(store, owner, mac_of(5))
    host = admin.get_host(namespace, 'h')
    secret_name = 'vmetal-nd-baremetalhost-h'  # noqa: S105 - a name
    annotations = host['metadata']['annotations']
    assert annotations[props.IP_ADDRESS] == '192.0.2.2/24'
    assert annotations[props.GATEWAY] == '192.0.2.1'
    assert annotations[props.DNS_SERVERS] == '192.0.2.53,198.51.100.53'
    assert host['spec']['networkData'] == {'name': secret_name,
                                           'namespace': namespace}
    assert host['spec']['preprovisioningNetworkDataName'] == secret_name
    assert store.get_network_data(owner) == first.network_data
    assert first.network_data['links'][0]['ethernet_mac_address'] == mac_of(5)

    # A second pass changes nothing, not even the host's resourceVersion.
    second = host_network.ensure(store, owner, mac_of(5))
    assert second.allocation.address == first.allocation.address
    again = admin.get_host(namespace, 'h')
    assert (again['metadata']['resourceVersion']
            == host['metadata']['resourceVersion'])
    assert store.get_allocation(owner).address == '192.0.2.2'
    assert [a.owner for a in store.list_allocations('192.0.2.0/24')] == [owner]


def test_users_network_data_references_are_never_replaced(admin, namespace,
                                                          make_store):
    admin.create_host(namespace, 'h', mac_of(6),
                      annotations={props.NETWORK_CIDR: '192.0.2.1/24'},
                      spec={'networkData': {'name': 'mine'},
                            'preprovisioningNetworkDataName': 'mine-too'})
    store = make_store()
    host_network.ensure(store, owner_of(namespace, 'h'), mac_of(6))
    host = admin.get_host(namespace, 'h')
    assert host['spec']['networkData'] == {'name': 'mine'}
    assert host['spec']['preprovisioningNetworkDataName'] == 'mine-too'
    assert host['metadata']['annotations'][props.IP_ADDRESS] == '192.0.2.2/24'


def test_custom_network_data_is_written_as_is_without_pool_address(
        admin, namespace, make_store):
    document = {
        'links': [{'id': 'eth0', 'type': 'phy',
                   'ethernet_mac_address': mac_of(7)}],
        'networks': [{'id': 'n0', 'link': 'eth0', 'type': 'ipv4',
                      'ip_address': '203.0.113.77',
                      'netmask': '255.255.255.128',
                      'routes': [{'network': '0.0.0.0', 'netmask': '0.0.0.0',
                                  'gateway': '203.0.113.1'}]}],
        'services': []}
    admin.create_host(namespace, 'h', mac_of(7), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24',
        props.NETWORK_DATA: json.dumps(document)})
    store = make_store()
    owner = owner_of(namespace, 'h')
    result = host_network.ensure(store, owner, mac_of(7))
    assert result.allocation is None
    assert admin.pool_data(namespace, '192.0.2.0/24') == {}
    secret = admin.secret(namespace, 'vmetal-nd-baremetalhost-h')
    assert json.loads(base64.b64decode(secret.data['networkData'])) == document
    annotations = admin.get_host(namespace, 'h')['metadata']['annotations']
    assert annotations[props.IP_ADDRESS] == '203.0.113.77/25'
    assert annotations[props.GATEWAY] == '203.0.113.1'


def test_bad_property_names_the_value_and_writes_nothing(admin, namespace,
                                                         make_store):
    admin.create_host(namespace, 'h', mac_of(8),
                      annotations={props.NETWORK_CIDR: '192.0.2.0/24'})
    store = make_store()
    with pytest.raises(ipam_errors.InvalidGateway, match=r"'192\.0\.2\.0/24'") as info:
        host_network.ensure(store, owner_of(namespace, 'h'), mac_of(8))
    # The value and where to fix it (issue 9).
    assert str(info.value).endswith(
        f'(from BareMetalHost {namespace}/h annotations)')
    assert admin.secret(namespace, 'vmetal-nd-baremetalhost-h') is None
    assert store.list_allocations() == []


def test_missing_host_is_not_found(namespace, make_store):
    store = make_store()
    with pytest.raises(exception.NotFound,
                       match=f'BareMetalHost {namespace}/ghost does not'):
        host_network.ensure(store, owner_of(namespace, 'ghost'), mac_of(9))


# -- automatic release --------------------------------------------------

def test_deleting_a_host_releases_address_and_secret(admin, namespace,
                                                     make_store,
                                                     start_controller):
    pooled_hosts(admin, namespace, make_store, 2)
    start_controller()
    admin.delete_host(namespace, 'h0')

    wait_for(lambda: owner_of(namespace, 'h0') not in admin.pool_data(
        namespace, '192.0.2.0/24').values(), what='address released')
    # The garbage collector deletes the Secret through its ownerReference.
    wait_for(lambda: admin.secret(namespace,
                                  'vmetal-nd-baremetalhost-h0') is None,
             what='Secret garbage-collected')
    assert admin.pool_data(namespace, '192.0.2.0/24') == {
        '192.0.2.3': owner_of(namespace, 'h1')}
    assert admin.secret(namespace, 'vmetal-nd-baremetalhost-h1') is not None


def test_host_deleted_while_stopped_is_released_on_next_start(
        admin, namespace, make_store):
    first = pooled_hosts(admin, namespace, make_store, 3)
    first.close()
    admin.delete_host(namespace, 'h1')

    second = make_store()
    released = second.reconcile()
    assert [(a.owner, a.address) for a in released] == [
        (owner_of(namespace, 'h1'), '192.0.2.3')]
    assert admin.pool_data(namespace, '192.0.2.0/24') == {
        '192.0.2.2': owner_of(namespace, 'h0'),
        '192.0.2.4': owner_of(namespace, 'h2')}
    # Releasing is idempotent, and the freed address is reused lowest first.
    assert second.release(owner_of(namespace, 'h1')) is None
    assert second.reconcile() == []
    admin.create_host(namespace, 'h3', mac_of(3),
                      annotations={props.NETWORK_CIDR: '192.0.2.1/24'})
    result = host_network.ensure(second, owner_of(namespace, 'h3'), mac_of(3))
    assert result.allocation.address == '192.0.2.3'


def test_release_clears_outputs_of_a_live_host(admin, namespace, make_store):
    admin.create_host(namespace, 'h', mac_of(1),
                      annotations={props.NETWORK_CIDR: '192.0.2.1/24'})
    store = make_store()
    owner = owner_of(namespace, 'h')
    host_network.ensure(store, owner, mac_of(1))
    released = store.release(owner)
    assert released.address == '192.0.2.2'
    host = admin.get_host(namespace, 'h')
    assert props.IP_ADDRESS not in host['metadata']['annotations']
    assert 'networkData' not in host['spec']
    assert admin.secret(namespace, 'vmetal-nd-baremetalhost-h') is None
    assert store.release(owner) is None


# -- reservations -------------------------------------------------------

def test_reservations_publish_list_follow_withdraw(admin, namespace,
                                                  make_store):
    store = make_store()
    assert store.list_reservations() == []
    watcher = make_store()
    revision, listed = watcher.reservations_snapshot()
    assert listed == []
    first = reservation_mod.Reservation(mac=mac_of(1), address='192.0.2.2',
                                        prefixlen=24, gateway='192.0.2.1')
    second = reservation_mod.Reservation(mac=mac_of(2), address='192.0.2.3',
                                         prefixlen=24)
    store.publish_reservation(first)
    store.publish_reservation(second)
    version = {o['metadata']['name']: o['metadata']['resourceVersion']
               for o in admin.reservations(namespace)}
    store.publish_reservation(second)        # unchanged: no write
    assert {o['metadata']['name']: o['metadata']['resourceVersion']
            for o in admin.reservations(namespace)} == version
    assert store.list_reservations() == [first, second]
    assert store.withdraw_reservation(mac_of(1)) is True
    assert store.withdraw_reservation(mac_of(1)) is False
    assert store.list_reservations() == [second]

    # The watcher follows from its list: both publishes and the
    # withdrawal, in order, with no second list.
    seen = []
    deadline = time.monotonic() + 30
    while len([c for c in seen if c.changed or c.removed]) < 3:
        assert time.monotonic() < deadline
        seen.extend(c for c in watcher.follow_reservations(revision, 2))
        revision = seen[-1].revision if seen else revision
    steps = [(c.changed.mac if c.changed else None, c.removed)
             for c in seen if c.changed or c.removed]
    assert steps == [(mac_of(1), None), (mac_of(2), None), (None, mac_of(1))]


def test_many_reservations_published_in_flight_bad_one_skipped(
        admin, namespace, make_store):
    """A bulk publish keeps several creates in flight on the real API
    server; a body it refuses (``spec.node`` over the CRD's 253
    characters) is skipped and named, the others published; one already
    as wanted is not written, one that differs is replaced."""
    store = make_store()

    def res(index, address=None, node=None):
        return reservation_mod.Reservation(
            mac=mac_of(index), address=address or f'192.0.2.{index + 2}',
            prefixlen=24, node=node or f'n{index}')

    store.publish_reservation(res(0), owner=owner_of(namespace, 'h0'))
    store.publish_reservation(res(1, address='192.0.2.250'))
    before = {o['metadata']['name']: o['metadata']['resourceVersion']
              for o in admin.reservations(namespace)}
    items = [(res(index), owner_of(namespace, f'h{index}'))
             for index in range(40)]
    items[7] = (res(7, node='x' * 300), None)
    published = store.publish_reservations(items)

    assert published.count == 39
    [(mac, reason)] = published.skipped
    assert mac == mac_of(7)
    assert '422' in reason and 'spec.node' in reason
    assert store.list_reservations() == [res(index) for index in range(40)
                                         if index != 7]
    after = {o['metadata']['name']: o['metadata']['resourceVersion']
             for o in admin.reservations(namespace)}
    name = mac_of(0).replace(':', '-')
    assert after[name] == before[name]
    # Labelled with their owners, so a release withdraws them.
    labels = {o['metadata']['name']: o['metadata']['labels']
              for o in admin.reservations(namespace)}
    assert labels[mac_of(3).replace(':', '-')][
        kube_names.LABEL_OWNER] == owner_mod.parse(
        owner_of(namespace, 'h3')).label


def test_node_type_change_is_not_pinned_by_written_annotations(
        admin, namespace, make_store, layered):
    # The store writes dns-servers onto the host as an output; that must
    # not turn into a host property that hides a later node type change.
    admin.create_host(namespace, 'h', mac_of(10), labels=layered)
    store = make_store()
    owner = owner_of(namespace, 'h')
    host_network.ensure(store, owner, mac_of(10))
    provider = admin.custom.get_cluster_custom_object(
        'management.loft.sh', 'v1', 'nodeproviders', f'prov-{namespace}')
    provider['spec']['metal3']['nodeTypes'][0]['properties'][
        props.DNS_SERVERS] = '198.51.100.54'
    admin.custom.replace_cluster_custom_object(
        'management.loft.sh', 'v1', 'nodeproviders', f'prov-{namespace}',
        provider)
    result = host_network.ensure(store, owner, mac_of(10))
    assert result.spec.dns_servers == ('198.51.100.54',)
    annotations = admin.get_host(namespace, 'h')['metadata']['annotations']
    assert annotations[props.DNS_SERVERS] == '198.51.100.54'


def test_vmetal_ipam_reconcile_on_the_kubernetes_store(
        kube_cluster, admin, namespace, make_store, tmp_path, capsys):
    from vmetal_ironic.cmd import ipam as ipam_cmd

    admin.create_host(namespace, 'h', mac_of(11),
                      annotations={props.NETWORK_CIDR: '192.0.2.1/24'})
    host_network.ensure(make_store(), owner_of(namespace, 'h'), mac_of(11))
    admin.delete_host(namespace, 'h')
    settings = kube_cluster.settings(namespace=namespace)
    config = tmp_path / 'vmetal.conf'
    config.write_text('[vmetal]\nstore = kubernetes\n[vmetal_kubernetes]\n'
                      + ''.join(f'{key} = {value}\n'
                                for key, value in settings.items()))
    # Loaded through the vmetal_ironic.stores entry point, like Ironic does.
    assert ipam_cmd.main(['--config-file', str(config), 'reconcile']) == 0
    out = capsys.readouterr().out
    assert '192.0.2.2' in out and owner_of(namespace, 'h') in out
    assert ipam_cmd.main(['--config-file', str(config), 'reconcile']) == 0
    assert 'nothing to release' in capsys.readouterr().out
    assert admin.pool_data(namespace, '192.0.2.0/24') == {}


def test_owner_without_host_object(admin, namespace, make_store):
    # Ironic nodes outside Metal3 are owners "Node/<uuid>": no host to read
    # or annotate; the Secret lives in the store's namespace.
    store = make_store()
    owner = 'Node/1be26c0b-03f2-4d2e-ae87-c02d7f33c123'
    result = host_network.ensure(store, owner, mac_of(12),
                                 layers=[{props.NETWORK_CIDR: '192.0.2.1/24'}])
    assert result.allocation.address == '192.0.2.2'
    assert store.get_network_data(owner) == result.network_data
    secret_name = kube_names.network_data_secret_name(owner)
    assert admin.secret(namespace, secret_name) is not None
    assert store.reconcile() == []          # kinds without objects stay
    assert store.release(owner).address == '192.0.2.2'
    assert admin.secret(namespace, secret_name) is None
    assert store.get_network_data(owner) is None


def test_store_connects_through_a_kubeconfig(kube_cluster, admin, namespace):
    settings = {'kubeconfig': str(kube_cluster.workdir / 'kubeconfig'),
                'namespace': namespace}
    store = kube_store.KubernetesStore(kube.store_conf(settings))
    try:
        admin.create_host(namespace, 'h', mac_of(13),
                          annotations={props.NETWORK_CIDR: '192.0.2.1/24'})
        result = host_network.ensure(store, owner_of(namespace, 'h'), mac_of(13))
        assert result.allocation.address == '192.0.2.2'
        assert store.api.host == kube_cluster.url
    finally:
        store.close()


def test_unusable_kubeconfig_is_a_one_line_deployment_error(tmp_path):
    missing = tmp_path / 'nope.yaml'
    with pytest.raises(exception.DeploymentError,
                       match=r'\[vmetal_kubernetes\]kubeconfig .*nope.yaml'):
        kube_store.KubernetesStore(kube.store_conf(
            {'kubeconfig': str(missing)}))


def test_wrong_token_is_a_deployment_error(kube_cluster, namespace,
                                           make_store):
    store = make_store(token='not-a-token',  # noqa: S106 - a wrong one
                       verify_ssl=False)
    with pytest.raises(exception.DeploymentError,
                       match=r'refused to list addressclaims.* .*401 Unauthorized'):
        store.list_allocations()


def test_ensure_completes_a_save_cut_short_after_the_secret(admin, namespace,
                                                            make_store):
    # The state an outage between the Secret write and the host patch
    # leaves: the Secret is current, the host has none of the outputs.
    store = make_store()
    admin.create_host(namespace, 'cut', mac_of(7), annotations={
        props.NETWORK_CIDR: '192.0.2.1/24'})
    owner = f'BareMetalHost/{namespace}/cut'
    first = host_network.ensure(store, owner, mac_of(7))
    admin.custom.patch_namespaced_custom_object(
        'metal3.io', 'v1alpha1', namespace, 'baremetalhosts', 'cut',
        {'metadata': {'annotations': {props.IP_ADDRESS: None,
                                      props.GATEWAY: None}}})
    assert props.IP_ADDRESS not in admin.get_host(namespace, 'cut')[
        'metadata']['annotations']
    again = host_network.ensure(store, owner, mac_of(7))
    assert again.allocation.address == first.allocation.address
    annotations = admin.get_host(namespace, 'cut')['metadata']['annotations']
    assert annotations[props.IP_ADDRESS] == f'{first.allocation.address}/24'
    assert annotations[props.GATEWAY] == '192.0.2.1'


def test_17_ntp_servers_survive_the_schema_and_a_republish_writes_nothing(
        admin, namespace, make_store):
    store = make_store()
    with_ntp = reservation_mod.Reservation(
        mac=mac_of(3), address='192.0.2.4', prefixlen=24,
        ntp_servers=('192.0.2.123',))
    store.publish_reservation(with_ntp)
    [stored] = admin.reservations(namespace)
    assert stored['spec']['ntp_servers'] == ['192.0.2.123']
    assert store.list_reservations() == [with_ntp]
    store.publish_reservation(with_ntp)
    [again] = admin.reservations(namespace)
    assert again['metadata']['resourceVersion'] == (
        stored['metadata']['resourceVersion'])
