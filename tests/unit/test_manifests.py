"""The Kubernetes manifests (etc/kubernetes), the Metal3 Ironic snippet and
the agent's Containerfile, checked without a cluster.

Every object is rendered by ``kubectl kustomize`` (tests/kubectl.py),
checked strictly against the Kubernetes schema (tests/openapi.py: unknown
fields, types, required fields) and against each other: the attachment
the pod asks for exists, the probes hit the port the agent serves, the
agent's configuration uses real options. tests/functional/test_manifests.py
sends the same objects to a real kube-apiserver.
"""

import configparser
import json
import pathlib
import re

import pytest
import yaml

from tests import kubectl
from tests import openapi
from vmetal_ironic.conf import opts as vmetal_opts

TOP = pathlib.Path(__file__).resolve().parents[2]
KUBE = TOP / 'etc' / 'kubernetes'
NAD_CRD = TOP / 'tests' / 'functional' / 'data' / 'networkattachmentdefinition-crd.yaml'
CONTAINERFILE = TOP / 'etc' / 'container' / 'Containerfile'
METAL3 = KUBE / 'metal3'

OWN_DIRS = ['agent', 'controller', 'network/macvlan', 'network/bridge',
            'metal3', 'bridge']
OVERLAYS = ['overlays/macvlan', 'overlays/bridge', 'overlays/lab',
            'overlays/two-networks']
NETWORKS = ['macvlan', 'bridge']


def _render(name):
    return kubectl.render(KUBE / name)


def _one(objects, kind, name=None):
    found = [o for o in objects if o['kind'] == kind
             and (name is None or o['metadata']['name'] == name)]
    assert len(found) == 1, (kind, name, [kubectl.object_id(o) for o in objects])
    return found[0]


def _ini(text):
    parser = configparser.ConfigParser(interpolation=None, default_section='\0')
    parser.optionxform = str
    parser.read_string(text)
    return parser


def _vmetal_group_options(group):
    known = dict(vmetal_opts.list_opts())
    if group not in known:
        # Defined by a branch not merged into this one yet.
        pytest.xfail(f'option group [{group}] is not defined on this branch')
    return {opt.dest for opt in known[group]}


def _ironic_group_options(group):
    from ironic.conf import opts as ironic_opts

    return {opt.dest for name, options in ironic_opts.list_opts() if name == group
            for opt in options}


def _check_sections(parser, allowed_ironic=()):
    for section in parser.sections():
        if section in allowed_ironic:
            names = _ironic_group_options(section)
        else:
            names = _vmetal_group_options(section)
        unknown = set(parser[section]) - names
        assert not unknown, f'[{section}] has no options {sorted(unknown)}'


@pytest.fixture(scope='module')
def agent():
    return _render('agent')


@pytest.fixture(scope='module')
def deployment(agent):
    return _one(agent, 'Deployment', 'vmetal-dhcp-agent')


@pytest.fixture(scope='module')
def container(deployment):
    [container] = deployment['spec']['template']['spec']['containers']
    return container


@pytest.fixture(scope='module')
def agent_conf(agent):
    configmap = _one(agent, 'ConfigMap', 'vmetal-dhcp-agent')
    return _ini(configmap['data']['vmetal-ironic.conf'])


@pytest.fixture(scope='module')
def nad_crd():
    return yaml.safe_load(NAD_CRD.read_text())


@pytest.mark.parametrize('name', OWN_DIRS)
def test_objects_are_valid_kubernetes_objects(name, nad_crd):
    objects = _render(name)
    assert objects
    for obj in objects:
        if openapi.is_builtin(obj):
            assert openapi.problems(obj) == []
        else:
            assert openapi.crd_problems(obj, nad_crd) == []


def test_schema_check_catches_typos(deployment):
    """The checks above can fail: a misspelt field is reported."""
    import copy
    broken = copy.deepcopy(deployment)
    spec = broken['spec']['template']['spec']['containers'][0]
    spec['readinesProbe'] = spec.pop('readinessProbe')
    assert openapi.problems(broken) == [
        'Deployment vmetal-dhcp-agent.spec.template.spec.containers[0]'
        '.readinesProbe: unknown field of V1Container']


@pytest.mark.parametrize('name', OVERLAYS)
def test_overlays_compose_everything_once(name):
    for needed in ('rbac', 'crds'):
        if not (KUBE / needed).is_dir():
            pytest.xfail(f'etc/kubernetes/{needed} comes from the k8s branch')
    objects = _render(name)  # raises on a duplicate object
    kinds = {o['kind'] for o in objects}
    assert {'Namespace', 'Deployment', 'NetworkAttachmentDefinition', 'ConfigMap',
            'ServiceAccount', 'Role', 'RoleBinding', 'ClusterRole'} <= kinds
    crds = {o['spec']['group'] for o in objects
            if o['kind'] == 'CustomResourceDefinition'}
    # The store's own objects are part of every installation; the trimmed
    # upstream CRDs only of the lab.
    assert 'vmetal-ironic.io' in crds
    assert (crds - {'vmetal-ironic.io'} != set()) == (name == 'overlays/lab')
    # The namespace is created before what lives in it.
    order = [o['kind'] for o in objects]
    assert order.index('Namespace') < order.index('Deployment')
    namespaces = {o['metadata']['name'] for o in objects if o['kind'] == 'Namespace'}
    for obj in objects:
        namespace = obj['metadata'].get('namespace')
        assert namespace is None or namespace in namespaces, kubectl.object_id(obj)


@pytest.mark.parametrize('network', NETWORKS)
def test_attachment_matches_the_pod(network, deployment, agent_conf):
    nad = _one(_render(f'network/{network}'), 'NetworkAttachmentDefinition')
    config = json.loads(nad['spec']['config'])
    assert config['type'] == network
    assert config['name'] == nad['metadata']['name']
    assert config['ipam']['type'] == 'static'
    [address] = config['ipam']['addresses']
    assert re.fullmatch(r'\d+\.\d+\.\d+\.\d+/\d+', address['address'])
    annotation = deployment['spec']['template']['metadata']['annotations'][
        'k8s.v1.cni.cncf.io/networks']
    [attachment] = json.loads(annotation)
    assert attachment['name'] == nad['metadata']['name']
    assert nad['metadata']['namespace'] == deployment['metadata']['namespace']
    # The agent answers on the interface Multus creates.
    assert agent_conf['vmetal_dhcp_agent']['interface'] == attachment['interface']


def test_pod_runs_with_two_capabilities_as_non_root(deployment, container):
    pod = deployment['spec']['template']['spec']
    assert not pod.get('hostNetwork')
    assert pod['securityContext']['runAsNonRoot'] is True
    assert pod['securityContext']['runAsUser'] != 0
    context = container['securityContext']
    assert context['capabilities'] == {
        'drop': ['ALL'], 'add': ['NET_BIND_SERVICE', 'NET_RAW']}
    assert not context.get('privileged')
    assert context['readOnlyRootFilesystem'] is True
    # A single agent owns the static address: never two pods at once.
    assert deployment['spec']['replicas'] == 1
    assert deployment['spec']['strategy'] == {'type': 'Recreate'}


def test_probes_and_service_use_the_metrics_port(agent, container, agent_conf):
    ports = {p['name']: p for p in container['ports']}
    metrics_port = int(agent_conf['vmetal_dhcp_agent']['metrics_port'])
    assert ports['metrics']['containerPort'] == metrics_port
    assert ports['dhcp'] == {'name': 'dhcp', 'containerPort': 67, 'protocol': 'UDP'}
    for probe in ('readinessProbe', 'livenessProbe'):
        assert container[probe]['httpGet'] == {'path': '/metrics', 'port': 'metrics'}
    service = _one(agent, 'Service')
    assert service['spec']['ports'][0]['targetPort'] == 'metrics'
    labels = _one(agent, 'Deployment')['spec']['template']['metadata']['labels']
    assert service['spec']['selector'].items() <= labels.items()


def test_agent_configuration_uses_real_options(agent_conf, container):
    _check_sections(agent_conf)
    # The environment override must name a real option too.
    for env in container['env']:
        group, option = env['name'].removeprefix('OS_').lower().split('__')
        assert option in _vmetal_group_options(group), env['name']


def test_agent_identity_reads_and_holds_only_inspection_leases(agent,
                                                               deployment):
    account = deployment['spec']['template']['spec']['serviceAccountName']
    _one(agent, 'ServiceAccount', account)
    role = _one(agent, 'Role')
    verbs = {resource: set(rule['verbs']) for rule in role['rules']
             for resource in rule['resources']}
    # Reservations read-only; writes only for the shared inspection range
    # (AddressClaims and their AddressOwner records), never update (a
    # renewal is a patch with a resourceVersion).
    assert verbs == {
        'dhcpreservations': {'get', 'list', 'watch'},
        'addressclaims': {'get', 'list', 'watch', 'create', 'patch',
                          'delete'},
        'addressowners': {'get', 'create', 'patch', 'delete'}}
    assert all(rule['apiGroups'] == ['vmetal-ironic.io']
               for rule in role['rules'])
    binding = _one(agent, 'RoleBinding')
    assert binding['roleRef']['name'] == role['metadata']['name']
    assert binding['subjects'] == [{
        'kind': 'ServiceAccount', 'name': account,
        'namespace': deployment['metadata']['namespace']}]


def _containerfile():
    text = CONTAINERFILE.read_text().replace('\\\n', ' ')
    final = text[text.rindex('\nFROM '):]
    return final


def test_containerfile_matches_the_deployment(deployment, container, agent_conf):
    final = _containerfile()
    entrypoint = json.loads(re.search(r'^ENTRYPOINT (.+)$', final, re.M).group(1))
    command = json.loads(re.search(r'^CMD (.+)$', final, re.M).group(1))
    # The console script of the contract (setup.cfg).
    assert entrypoint == ['/opt/vmetal/bin/vmetal-dhcp-agent']
    assert command == container['args']
    config_path = pathlib.PurePosixPath(command[1])
    [mount] = [m for m in container['volumeMounts'] if m['name'] == 'config']
    assert str(config_path.parent) == mount['mountPath']
    configmap_keys = {'vmetal-ironic.conf'}
    assert config_path.name in configmap_keys
    user = re.search(r'^USER (\d+):(\d+)$', final, re.M)
    pod = deployment['spec']['template']['spec']['securityContext']
    assert (int(user.group(1)), int(user.group(2))) == (pod['runAsUser'], pod['runAsGroup'])
    caps = re.search(r'setcap (\S+)\+ep', final).group(1).split(',')
    assert sorted(c.removeprefix('cap_').upper() for c in caps) == sorted(
        container['securityContext']['capabilities']['add'])
    exposed = set(re.search(r'^EXPOSE (.+)$', final, re.M).group(1).split())
    assert exposed == {f'{p["containerPort"]}/{p["protocol"].lower()}'
                       for p in container['ports']}
    # The TFTP root the ConfigMap names is what the "ipxe" package installs.
    assert agent_conf['vmetal_tftp']['root'] == '/usr/lib/ipxe'
    assert re.search(r'apt-get install [^\n]* ipxe ', final)


def test_metal3_snippet_and_env_agree():
    conf = _ini(re.sub(r'(?m)^#.*$', '', (METAL3 / 'ironic-vmetal.conf').read_text()))
    from_conf = {f'OS_{section.upper()}__{key.upper()}': value
                 for section in conf.sections() for key, value in conf[section].items()}
    lines = (METAL3 / 'ironic-vmetal.env').read_text().split()
    assert dict(line.split('=', 1) for line in lines) == from_conf
    assert conf['dhcp']['dhcp_provider'] == 'vmetal'
    _check_sections(conf, allowed_ironic=('DEFAULT', 'dhcp', 'pxe'))


@pytest.mark.parametrize('network', NETWORKS)
def test_metal3_tftp_server_is_the_agent(network):
    conf = _ini((METAL3 / 'ironic-vmetal.conf').read_text())
    nad = _one(_render(f'network/{network}'), 'NetworkAttachmentDefinition')
    [address] = json.loads(nad['spec']['config'])['ipam']['addresses']
    assert conf['pxe']['tftp_server'] == address['address'].split('/')[0]


def test_metal3_rbac_binds_the_shared_roles():
    objects = _render('metal3')
    account = _one(objects, 'ServiceAccount')
    assert account['metadata'] == {
        'name': 'vmetal-ironic', 'namespace': 'baremetal-operator-system',
        'labels': {'app.kubernetes.io/part-of': 'vmetal-ironic'}}
    objects = [o for o in objects if o['kind'] != 'ServiceAccount']
    # Its own ServiceAccount, never the namespace's "default".
    for obj in objects:
        assert obj['roleRef']['name'] in ('vmetal-ironic',
                                          'vmetal-ironic-network-data')
        assert obj['subjects'] == [{'kind': 'ServiceAccount',
                                    'name': 'vmetal-ironic',
                                    'namespace': 'baremetal-operator-system'}]
    patch = yaml.safe_load((METAL3 / 'serviceaccount-patch.yaml').read_text())
    assert patch['spec']['template']['spec']['serviceAccountName'] == (
        'vmetal-ironic')
    rbac = KUBE / 'rbac'
    shipped = kubectl.render(rbac)
    roles = {(o['kind'], o['metadata']['name']) for o in shipped}
    for obj in objects:
        assert (obj['roleRef']['kind'], obj['roleRef']['name']) in roles
    # No identity of the store may read a Secret, and none writes them
    # cluster-wide.
    for role in shipped:
        if role['kind'] not in ('Role', 'ClusterRole'):
            continue
        for rule in role['rules']:
            if 'secrets' in rule['resources']:
                assert role['metadata']['name'] == 'vmetal-ironic-network-data'
                assert set(rule['verbs']) == {'create', 'update', 'delete'}
    bindings = [o for o in shipped + kubectl.render(rbac / 'host-namespace')
                if o['kind'] == 'ClusterRoleBinding']
    assert all(b['roleRef']['name'] == 'vmetal-ironic' for b in bindings)


def test_metal3_patch_removes_ironics_dnsmasq():
    patch = yaml.safe_load((METAL3 / 'remove-dnsmasq-patch.yaml').read_text())
    assert (patch['kind'], patch['metadata']['name']) == ('Deployment', 'ironic')
    assert patch['spec']['template']['spec']['containers'] == [
        {'name': 'ironic-dnsmasq', '$patch': 'delete'}]


def test_render_reports_what_kustomize_refuses(tmp_path):
    (tmp_path / 'kustomization.yaml').write_text(
        'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n'
        'resources: [a.yaml, b.yaml]\n')
    (tmp_path / 'a.yaml').write_text('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n')
    (tmp_path / 'b.yaml').write_text('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n')
    with pytest.raises(kubectl.KubectlError, match='already registered id'):
        kubectl.render(tmp_path)
    (tmp_path / 'b.yaml').unlink()
    with pytest.raises(kubectl.KubectlError, match=r'b\.yaml'):
        kubectl.render(tmp_path)


def test_two_networks_overlay_turns_the_bridge_on(agent_conf):
    """The base ships the bridge off with its upstreams named; the overlay
    enables it, listens for callbacks on the pod IP (eth0, never net1) and
    advertises the callback Service, whose port is the container's."""
    bridge = agent_conf['vmetal_bridge']
    assert bridge['enabled'] == 'false'
    assert set(bridge) <= _vmetal_group_options('vmetal_bridge')
    objects = _render('overlays/two-networks')
    [container] = _one(objects, 'Deployment')['spec']['template']['spec'][
        'containers']
    env = {e['name']: e for e in container['env']}
    assert env['OS_VMETAL_BRIDGE__ENABLED']['value'] == 'true'
    assert env['OS_VMETAL_BRIDGE__CALLBACK_ADDRESS']['valueFrom'] == {
        'fieldRef': {'fieldPath': 'status.podIP'}}
    service = _one(objects, 'Service', 'vmetal-dhcp-agent-callback')
    [port] = service['spec']['ports']
    ports = {p['name']: p['containerPort'] for p in container['ports']}
    assert ports[port['targetPort']] == port['port'] == 8081
    url = env['OS_VMETAL_BRIDGE__CALLBACK_ADVERTISE_URL']['value']
    assert url == (f'https://{service["metadata"]["name"]}.'
                   f'{service["metadata"]["namespace"]}.svc:8081')
    mounts = {m['mountPath'] for m in container['volumeMounts']}
    assert bridge['ca_file'].rsplit('/', 1)[0] in mounts
    # The callback listener serves TLS from a mounted kubernetes.io/tls
    # Secret, so that Ironic can keep require_tls.
    for name, key in (('CERT', 'tls.crt'), ('KEY', 'tls.key')):
        path = env[f'OS_VMETAL_BRIDGE__CALLBACK_{name}_FILE']['value']
        assert path.rsplit('/', 1)[1] == key
        assert path.rsplit('/', 1)[0] in mounts
    # The HTTP root's copies live on an emptyDir larger than their
    # default budget.
    cache_dir = env['OS_VMETAL_BRIDGE__CACHE_DIR']['value']
    [mount] = [m for m in container['volumeMounts']
               if m['mountPath'] == cache_dir]
    [volume] = [v for v in _one(objects, 'Deployment')['spec']['template'][
        'spec']['volumes'] if v['name'] == mount['name']]
    limit = volume['emptyDir']['sizeLimit']
    assert limit.endswith('Gi')
    [budget] = [opt.default for opt in dict(vmetal_opts.list_opts())[
        'vmetal_bridge'] if opt.dest == 'cache_max_bytes']
    assert int(limit[:-2]) * 2**30 > budget
