"""The agent pod's pure parts: what it reads from the shipped manifests
and how it turns it into podman options."""

import dataclasses
import importlib.machinery
import importlib.util
import json

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


def test_lab_agent_needs_the_kubernetes_store(monkeypatch):
    monkeypatch.setattr(agent_pod.shutil, 'which', lambda name: '/bin/x')
    with pytest.raises(flow.LabError, match='--store-config'):
        agent_pod.LabAgent(None)
    with pytest.raises(flow.LabError, match='--faults'):
        agent_pod.LabAgent({'vmetal': {}}, faults=True)


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
