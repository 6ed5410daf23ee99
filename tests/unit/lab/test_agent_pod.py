"""The agent pod's pure parts: what it reads from the shipped manifests
and how it turns it into podman options."""

import configparser
import dataclasses
import importlib.machinery
import importlib.util
import json
import os
import pathlib
from unittest import mock

import pytest

from vmetal_ironic.lab import agent_pod
from vmetal_ironic.lab import flow


@pytest.fixture
def spec():
    return agent_pod.container_spec()


def test_the_shipped_deployment_is_read(spec):
    assert (spec.uid, spec.gid) == (1000, 1000)
    assert spec.read_only
    assert spec.drop == ('ALL',)
    assert sorted(spec.add) == ['NET_BIND_SERVICE', 'NET_RAW']
    # no_new_privs on: measured, the agent keeps its two (metal3.rst).
    assert not spec.allow_privilege_escalation
    assert spec.command == ()
    assert spec.args == ('--config-file',
                         '/etc/vmetal-ironic/vmetal-ironic.conf')
    # The pod IP stands for the pod's loopback: it has no cluster network.
    assert ('OS_VMETAL_DHCP_AGENT__METRICS_HOST', '127.0.0.1') in spec.env
    assert spec.mounts == (('vmetal-dhcp-agent', '/etc/vmetal-ironic'),)
    assert spec.tmpfs == (('/tmp', '16m'),)


def test_podman_options_are_exactly_the_security_context(spec):
    assert agent_pod.security_args(spec) == [
        '--user', '1000:1000', '--read-only', '--read-only-tmpfs=false',
        '--cap-drop=all', '--cap-add=net_bind_service', '--cap-add=net_raw',
        '--security-opt', 'no-new-privileges']
    loose = dataclasses.replace(spec, allow_privilege_escalation=True)
    assert 'no-new-privileges' not in agent_pod.security_args(loose)
    wrapped = dataclasses.replace(spec, command=('/bin/sh', '-c', 'x'))
    assert agent_pod.security_args(wrapped)[-2:] == [
        '--entrypoint', '["/bin/sh", "-c", "x"]']


def test_the_shipped_context_needs_no_diagnosis(spec):
    assert agent_pod.diagnose(spec) == ''


def test_a_missing_net_raw_is_named(spec):
    why = agent_pod.diagnose(dataclasses.replace(
        spec, add=('NET_BIND_SERVICE',)))
    assert 'NET_RAW' in why and 'operation not permitted' in why


def test_no_privilege_escalation_is_named_behind_a_shell(spec):
    strict = dataclasses.replace(spec, allow_privilege_escalation=False)
    # The agent as the first program keeps what the runtime gave it.
    assert agent_pod.diagnose(strict) == ''
    why = agent_pod.diagnose(dataclasses.replace(
        strict, command=('/bin/sh', '-c', 'exec "$0" "$@"')))
    assert why.startswith('allowPrivilegeEscalation is false and the '
                          'container runs /bin/sh before the agent')


def test_the_attachment_changes_only_address_and_parent():
    shipped = json.loads(agent_pod._yaml(agent_pod.ATTACHMENT)
                         ['spec']['config'])
    config = agent_pod.attachment_config('192.0.2.3/24', 'br9')
    assert config['ipam']['addresses'] == [{'address': '192.0.2.3/24'}]
    assert config['bridge'] == 'br9'
    for key in set(shipped) - {'ipam', 'bridge'}:
        assert config[key] == shipped[key]
    assert {k: v for k, v in config['ipam'].items() if k != 'addresses'} \
        == {k: v for k, v in shipped['ipam'].items() if k != 'addresses'}


def test_macvlan_attachment_changes_its_master():
    path = agent_pod.MANIFESTS / 'network/macvlan' / \
        'networkattachmentdefinition.yaml'
    config = agent_pod.attachment_config('192.0.2.3/24', 'eth9', path)
    assert config['type'] == 'macvlan' and config['master'] == 'eth9'


def test_the_configmap_is_mounted_as_shipped():
    files = agent_pod.configmap_files()
    assert list(files) == ['vmetal-ironic.conf']
    assert 'store = kubernetes' in files['vmetal-ironic.conf']


def test_lab_env_leaves_out_how_to_reach_the_api():
    env = agent_pod.lab_env({
        'vmetal': {'store': 'kubernetes', 'address_scope': 'lab-1'},
        'vmetal_kubernetes': {'api_url': 'https://127.0.0.1:6443',
                              'token': 'secret', 'ca_file': '/ca',
                              'namespace': 'vmetal-system'}})
    assert env['OS_VMETAL__ADDRESS_SCOPE'] == 'lab-1'
    assert env['OS_VMETAL_KUBERNETES__NAMESPACE'] == 'vmetal-system'
    assert not [key for key in env if 'TOKEN' in key or 'API_URL' in key
                or 'CA_FILE' in key or key == 'OS_VMETAL__STORE']
    assert env['OS_DEFAULT__DEBUG'] == 'true'


def test_service_account_is_written_as_kubelet_mounts_it(tmp_path):
    ca = tmp_path / 'ca.pem'
    ca.write_text('CA')
    directory, host, port = agent_pod.service_account(
        {'api_url': 'https://127.0.0.1:6443', 'token': 'tok',
         'ca_file': str(ca), 'namespace': 'ns1'}, tmp_path / 'sa')
    assert (host, port) == ('127.0.0.1', 6443)
    assert (directory / 'token').read_text() == 'tok'
    assert (directory / 'ca.crt').read_text() == 'CA'
    assert (directory / 'namespace').read_text() == 'ns1'
    assert (directory / 'token').stat().st_mode & 0o777 == 0o644


def test_service_account_needs_tls_and_a_token(tmp_path):
    with pytest.raises(agent_pod.PodError, match='https api_url'):
        agent_pod.service_account({'api_url': 'http://127.0.0.1:8080',
                                   'token': 'tok', 'ca_file': '/ca'},
                                  tmp_path / 'sa')


def test_lab_agent_says_podman_is_missing(monkeypatch):
    monkeypatch.setattr(agent_pod.shutil, 'which', lambda name: None)
    with pytest.raises(flow.LabError) as info:
        agent_pod.LabAgent({'vmetal': {'store': 'kubernetes'}})
    assert str(info.value) == ('--agent-image: podman is missing; run '
                               'tools/install-deps lab')


def test_lab_agent_refuses_faults_only(monkeypatch):
    monkeypatch.setattr(agent_pod.shutil, 'which', lambda name: '/bin/x')
    # No --store-config: the local store, shared through a directory.
    assert agent_pod.LabAgent(None).pod is None
    with pytest.raises(flow.LabError, match='--faults'):
        agent_pod.LabAgent({'vmetal': {}}, faults=True)


def test_lab_env_points_the_local_store_at_the_mounted_directory():
    env = agent_pod.lab_env({
        'vmetal': {'store': 'local', 'address_scope': 'lab-2'},
        'vmetal_local_store': {'database': '/srv/lab/agent-state/x.db'}})
    assert env['OS_VMETAL__STORE'] == 'local'
    assert env['OS_VMETAL_LOCAL_STORE__DATABASE'] == \
        '/var/lib/vmetal-ironic/vmetal.sqlite'
    assert env['OS_VMETAL__ADDRESS_SCOPE'] == 'lab-2'
    assert float(env['OS_VMETAL_DHCP_AGENT__POLL_INTERVAL']) < 1
    assert not [key for key in env if 'KUBERNETES' in key]


def test_state_directory_belongs_to_the_pods_user(tmp_path, spec):
    mine = dataclasses.replace(spec, uid=os.getuid(), gid=os.getgid())
    database = agent_pod.state_directory(tmp_path / 'state', mine)
    assert database == tmp_path / 'state' / 'vmetal.sqlite'
    assert database.read_bytes() == b''
    for path, mode in ((database.parent, 0o750), (database, 0o640)):
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
        assert info.st_mode & 0o777 == mode
    # Again (a rerun in the same work directory) keeps what is there.
    database.write_bytes(b'SQLite')
    agent_pod.state_directory(tmp_path / 'state', mine)
    assert database.read_bytes() == b'SQLite'


def test_local_store_is_a_mounted_directory_not_a_service_account(
        tmp_path):
    pod = agent_pod.AgentPod(
        mock.Mock(prefix='vlabx', workdir=tmp_path), tmp_path / 'pod',
        {'vmetal': {'store': 'local'},
         'vmetal_local_store': {'database': '/srv/state/vmetal.sqlite'}},
        '192.0.2.3/24', spec=agent_pod.container_spec())
    argv, port = pod._files()
    assert port is None
    assert '--volume=/srv/state:/var/lib/vmetal-ironic:rw' in argv
    assert not [arg for arg in argv if 'serviceaccount' in arg
                or 'KUBERNETES_SERVICE' in arg]
    pod.store_sections = {'vmetal': {'store': 'local'}}
    with pytest.raises(agent_pod.PodError, match='database'):
        pod._files()


def _wrapper():
    loader = importlib.machinery.SourceFileLoader('runc_no_ambient',
                                                  str(agent_pod.RUNTIME))
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def test_runtime_wrapper_empties_ambient_and_inheritable(tmp_path,
                                                         monkeypatch):
    wrapper = _wrapper()
    caps = ['CAP_NET_BIND_SERVICE', 'CAP_NET_RAW']
    (tmp_path / 'config.json').write_text(json.dumps({'process': {
        'capabilities': dict.fromkeys((
            'bounding', 'effective', 'permitted', 'inheritable',
            'ambient'), caps)}}))
    called = []
    monkeypatch.setattr(wrapper.os, 'execv',
                        lambda path, argv: called.append(argv))
    wrapper.main(['--root', '/run/runc', 'create', '--bundle',
                  str(tmp_path), 'ctr'])
    process = json.loads((tmp_path / 'config.json').read_text())['process']
    assert process['capabilities']['ambient'] == []
    assert process['capabilities']['inheritable'] == []
    assert process['capabilities']['bounding'] == caps
    assert called == [[wrapper.RUNC, '--root', '/run/runc', 'create',
                       '--bundle', str(tmp_path), 'ctr']]


def test_runtime_wrapper_passes_other_commands_through(monkeypatch):
    wrapper = _wrapper()
    called = []
    monkeypatch.setattr(wrapper.os, 'execv',
                        lambda path, argv: called.append(argv))
    wrapper.main(['delete', '--force', 'ctr'])
    assert called == [[wrapper.RUNC, 'delete', '--force', 'ctr']]


def test_lab_agent_points_ironic_at_the_pod(monkeypatch):
    monkeypatch.setattr(agent_pod.shutil, 'which', lambda name: '/bin/x')
    sections = {'pxe': {'tftp_server': '192.0.2.1'}}
    agent_pod.LabAgent({'vmetal': {}}).configure(sections)
    assert sections['pxe']['tftp_server'] == agent_pod.LabAgent.ADDRESS


def test_the_labs_extra_configuration_becomes_overrides():
    from vmetal_ironic.lab import full_setup
    env = agent_pod.conf_env(full_setup.bridge_conf())
    assert env['OS_VMETAL_BRIDGE__ENABLED'] == 'true'
    assert env['OS_VMETAL_BRIDGE__CALLBACK_ADDRESS'] == \
        full_setup.AGENT_CLUSTER
    assert env['OS_VMETAL_BRIDGE__IRONIC_API_URL'] == (
        f'http://{full_setup.IRONIC_CLUSTER}:{full_setup.API_PORT}')
    assert agent_pod.conf_env('') == {}


def test_a_pod_made_early_starts_on_the_labs_store(monkeypatch, tmp_path):
    # With two networks the pod is made with the topology, before Ironic
    # is configured: the store it starts on is the lab's by then.
    monkeypatch.setattr(agent_pod.shutil, 'which', lambda name: '/bin/x')
    monkeypatch.setattr(agent_pod.agent_image, 'build',
                        lambda log: ('img', 0.0, True))
    monkeypatch.setattr(agent_pod.agent_image, 'image_size', lambda n: 1)
    seen = {}
    monkeypatch.setattr(agent_pod.AgentPod, 'make',
                        lambda pod, image: pod.netns)

    def start(pod, image, extra_conf='', relay=True):
        seen.update(sections=pod.store_sections, relay=relay,
                    extra=extra_conf)
        pod.attached = {'type': 'bridge'}
        return 'process'

    monkeypatch.setattr(agent_pod.AgentPod, 'start', start)
    lab = mock.Mock(workdir=tmp_path, store_sections=None, agent_extra='')
    lab.topology.prefix, lab.topology.workdir = 'vlabz', tmp_path
    agent = agent_pod.LabAgent(None)
    lab.agent_ns = agent.make_pod(lab)
    assert lab.agent_ns == 'vlabza'
    assert agent.address == flow.SERVER
    sections = {'pxe': {}}
    agent.configure(sections)
    assert sections['pxe']['tftp_server'] == flow.SERVER
    lab.store_sections = {'vmetal': {'store': 'local'}}
    lab.agent_extra = '[vmetal_bridge]\nenabled = true\n'
    agent.start(lab)
    assert seen == {'sections': lab.store_sections, 'relay': False,
                    'extra': lab.agent_extra}
    assert lab.agent == 'process'


def test_callback_tls_is_mounted_where_the_overlay_mounts_its_secret(
        tmp_path, monkeypatch):
    from vmetal_ironic.lab import full_setup
    from vmetal_ironic.lab import tls
    chowned = {}
    monkeypatch.setattr(agent_pod.os, 'chown',
                        lambda path, uid, gid: chowned.update(
                            {pathlib.Path(path).name: (uid, gid)}))
    spec = agent_pod.container_spec()
    issued = tls.issue(tmp_path / 'tls', ['198.51.100.2'], label='callback')
    text, volumes = agent_pod.callback_tls_secret(
        full_setup.bridge_conf(issued), tmp_path / 'secret', spec)
    env = agent_pod.conf_env(text)
    assert env['OS_VMETAL_BRIDGE__CALLBACK_CERT_FILE'] == \
        '/etc/vmetal-callback-tls/tls.crt'
    assert env['OS_VMETAL_BRIDGE__CALLBACK_KEY_FILE'] == \
        '/etc/vmetal-callback-tls/tls.key'
    assert volumes == [
        f'--volume={tmp_path / "secret"}:/etc/vmetal-callback-tls:ro']
    assert (tmp_path / 'secret' / 'tls.key').read_bytes() == \
        issued.key_file.read_bytes()
    assert chowned['tls.key'] == (spec.uid, spec.gid)
    # The overlay's own paths, so that the lab mounts what a cluster does.
    patch = agent_pod._yaml(agent_pod.MANIFESTS / 'overlays' / 'two-networks'
                            / 'agent-bridge-patch.yaml')
    container = patch['spec']['template']['spec']['containers'][0]
    values = {item['name']: item.get('value') for item in container['env']}
    assert values['OS_VMETAL_BRIDGE__CALLBACK_KEY_FILE'] == \
        env['OS_VMETAL_BRIDGE__CALLBACK_KEY_FILE']


def test_bridge_cache_is_mounted_where_the_overlay_mounts_its_emptydir(
        tmp_path, monkeypatch):
    """With --agent-image the copies go to a directory the pod's uid
    writes (its root filesystem is read-only), mounted read-write where
    the two-networks overlay mounts its emptyDir."""
    from vmetal_ironic.lab import full_setup
    chowned = {}
    monkeypatch.setattr(agent_pod.os, 'chown',
                        lambda path, uid, gid: chowned.update(
                            {pathlib.Path(path).name: (uid, gid)}))
    spec = agent_pod.container_spec()
    extra = full_setup.bridge_conf(cache_dir=tmp_path / 'bridge-cache',
                                   cache_max_bytes=123456789)
    pod = agent_pod.AgentPod(
        mock.Mock(prefix='vlabx', workdir=tmp_path), tmp_path / 'pod',
        {'vmetal': {'store': 'local'},
         'vmetal_local_store': {'database': '/srv/state/vmetal.sqlite'}},
        '192.0.2.3/24', spec=spec)
    argv, _port = pod._files(extra)
    assert (f'--volume={tmp_path / "pod" / "bridge-cache"}:'
            '/var/cache/vmetal-bridge:rw') in argv
    assert '--env=OS_VMETAL_BRIDGE__CACHE_DIR=/var/cache/vmetal-bridge' \
        in argv
    assert '--env=OS_VMETAL_BRIDGE__CACHE_MAX_BYTES=123456789' in argv
    cache = tmp_path / 'pod' / 'bridge-cache'
    assert chowned['bridge-cache'] == (spec.uid, spec.gid)
    assert cache.stat().st_mode & 0o777 == 0o750
    # The overlay's own path, so that the lab mounts what a cluster does.
    patch = agent_pod._yaml(agent_pod.MANIFESTS / 'overlays' / 'two-networks'
                            / 'agent-bridge-patch.yaml')
    container = patch['spec']['template']['spec']['containers'][0]
    values = {item['name']: item.get('value') for item in container['env']}
    assert values['OS_VMETAL_BRIDGE__CACHE_DIR'] == \
        agent_pod.BRIDGE_CACHE_DIR
    mounts = {mount['name']: mount['mountPath']
              for mount in container['volumeMounts']}
    assert mounts['bridge-cache'] == agent_pod.BRIDGE_CACHE_DIR
    # Without cache_dir nothing is mounted.
    plain = full_setup.bridge_conf()
    assert agent_pod.bridge_cache_volume(plain, tmp_path / 'x', spec) == (
        plain, [])


def test_ironics_ca_is_mounted_where_the_overlay_mounts_its_secret(
        tmp_path, monkeypatch):
    from vmetal_ironic.lab import full_setup
    monkeypatch.setattr(agent_pod.os, 'chown', lambda path, uid, gid: None)
    spec = agent_pod.container_spec()
    ca_file = tmp_path / 'ironic-ca.pem'
    ca_file.write_text('the CA\n')
    text, volumes = agent_pod.ironic_ca_secret(
        full_setup.bridge_conf(api_ca=ca_file), tmp_path / 'secret', spec)
    env = agent_pod.conf_env(text)
    assert env['OS_VMETAL_BRIDGE__CA_FILE'] == '/etc/ironic-ca/ca.crt'
    assert volumes == [f'--volume={tmp_path / "secret"}:/etc/ironic-ca:ro']
    assert (tmp_path / 'secret' / 'ca.crt').read_text() == 'the CA\n'
    # The overlay's mount of ironic-cacert and the ConfigMap's ca_file.
    patch = agent_pod._yaml(agent_pod.MANIFESTS / 'overlays' / 'two-networks'
                            / 'agent-bridge-patch.yaml')
    container = patch['spec']['template']['spec']['containers'][0]
    mounts = {mount['name']: mount['mountPath']
              for mount in container['volumeMounts']}
    assert mounts['ironic-ca'] == agent_pod.IRONIC_CA_DIR
    shipped = configparser.ConfigParser(interpolation=None)
    shipped.read_string(agent_pod.configmap_files()['vmetal-ironic.conf'])
    assert shipped['vmetal_bridge']['ca_file'] == \
        env['OS_VMETAL_BRIDGE__CA_FILE']
    # Plain HTTP to Ironic: no CA, nothing mounted.
    plain = full_setup.bridge_conf()
    assert agent_pod.ironic_ca_secret(plain, tmp_path / 'none', spec) == (
        plain, [])


def test_no_callback_certificate_mounts_nothing(tmp_path, spec):
    from vmetal_ironic.lab import full_setup
    text = full_setup.bridge_conf()
    assert agent_pod.callback_tls_secret(text, tmp_path, spec) == (text, [])
    assert agent_pod.callback_tls_secret('', tmp_path, spec) == ('', [])
