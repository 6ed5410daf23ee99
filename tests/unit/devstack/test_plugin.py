"""Run the devstack plugin's phases without devstack.

Each phase runs in a fresh bash, as stack.sh would: devstack's functions
(tests/unit/devstack/fake_functions.sh: real ini helpers, recording
process helpers), then the plugin's settings, then plugin.sh with the
phase arguments. The tests assert the resulting ironic.conf (read back by
oslo.config with Ironic's own options) and the recorded commands.
"""

import shutil
import subprocess

import pytest

from tests.unit.devstack.harness import DEVSTACK
from tests.unit.devstack.harness import HERE
from tests.unit.devstack.harness import read_ini
from tests.unit.devstack.harness import Stack
from tests.unit.devstack.harness import TOP
from vmetal_ironic.conf import opts as vmetal_opts

SCRIPTS = [DEVSTACK / 'plugin.sh', DEVSTACK / 'settings', DEVSTACK / 'lib' / 'vmetal']

AGENT_TYPES = 'vmetal-manual-management,vmetal-ipmi,vmetal-redfish'


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path)
    s.ironic_conf.write_text(
        '[DEFAULT]\n'
        'enabled_hardware_types = ipmi,fake-hardware\n'
        'enabled_network_interfaces = flat,noop\n'
        '[dhcp]\n'
        'dhcp_provider = neutron\n')
    return s


def test_install_develops_the_source_tree(stack):
    stack.ok('stack', 'install')
    assert stack.calls('setup_develop') == [['setup_develop', str(TOP)]]


def test_install_refuses_a_directory_without_the_package(stack, tmp_path):
    result = stack.run('stack', 'install', VMETAL_DIR=str(tmp_path))
    assert result.returncode == 1
    assert (f'VMETAL_DIR={tmp_path} is not a vmetal-ironic source tree (no setup.cfg)'
            in result.stderr)
    assert stack.calls() == []


def test_post_config_enables_the_plugins_in_ironic_conf(stack):
    stack.ok('stack', 'post-config')
    conf = stack.ironic()
    assert conf.enabled_hardware_types == [
        'ipmi', 'fake-hardware', *AGENT_TYPES.split(',')]
    assert conf.enabled_network_interfaces == ['flat', 'noop', 'vmetal']
    assert conf.dhcp.dhcp_provider == 'vmetal'
    assert conf.vmetal.store == 'local'
    assert conf.vmetal.network_cidr == '192.0.2.1/24'
    assert conf.vmetal.network_ip_range is None
    assert conf.vmetal.dns_servers is None
    assert conf.vmetal_local_store.database == str(stack.state_dir / 'vmetal.sqlite')
    # Never the default network interface: with stock hardware types
    # enabled that stops the conductor (see reference/ironic.md).
    assert conf.default_network_interface is None
    assert stack.state_dir.is_dir()


def test_post_config_keeps_ironic_defaults_when_lists_are_unset(stack):
    stack.ironic_conf.write_text('[DEFAULT]\ndebug = True\n')
    stack.ok('stack', 'post-config')
    conf = stack.ironic()
    assert conf.enabled_hardware_types == ['ipmi', 'redfish', *AGENT_TYPES.split(',')]
    assert conf.enabled_network_interfaces == ['flat', 'noop', 'vmetal']


def test_post_config_twice_adds_nothing_twice(stack):
    stack.ok('stack', 'post-config')
    first = stack.ironic_conf.read_text()
    stack.ok('stack', 'post-config')
    assert stack.ironic_conf.read_text() == first


def test_post_config_writes_the_agent_config(stack):
    stack.ok('stack', 'post-config')
    agent = read_ini(stack.vmetal_conf)
    ironic = read_ini(stack.ironic_conf)
    # Conductor and agent must share one store and one set of defaults.
    for section in ('vmetal', 'vmetal_local_store'):
        assert dict(agent[section]) == dict(ironic[section])
    assert dict(agent['vmetal_dhcp_agent']) == {
        'interface': 'lo',
        'server_address': '192.0.2.1',
        'lease_time': '3600',
        'metrics_port': '9608',
    }
    assert dict(agent['vmetal_tftp']) == {
        'enabled': 'False',
        'root': str(stack.tmp / 'tftpboot'),
        'single_port': 'False',
    }
    # Ironic's own TFTP server stays the one clients are sent to.
    assert not ironic.has_section('pxe')


def test_post_config_agent_tftp_takes_over_ironics(stack):
    stack.ok('stack', 'post-config', VMETAL_TFTP_ENABLED='true')
    assert read_ini(stack.vmetal_conf)['vmetal_tftp']['enabled'] == 'True'
    assert read_ini(stack.ironic_conf)['pxe']['tftp_server'] == '192.0.2.1'


def test_post_config_single_port_tftp_and_http_boot(stack):
    stack.ok('stack', 'post-config', VMETAL_TFTP_ENABLED='true',
             VMETAL_TFTP_SINGLE_PORT='true', VMETAL_HTTP_BOOT_PORT='8069')
    tftp = read_ini(stack.vmetal_conf)['vmetal_tftp']
    assert (tftp['single_port'], tftp['http_port']) == ('True', '8069')
    # Taken out of local.conf again: HTTP is off after re-stacking.
    stack.ok('stack', 'post-config')
    tftp = read_ini(stack.vmetal_conf)['vmetal_tftp']
    assert tftp['single_port'] == 'False'
    assert 'http_port' not in tftp


def test_post_config_power_and_management_lists(stack):
    # Unset: Ironic calculates them from the hardware types; keep unset.
    stack.ok('stack', 'post-config')
    conf = stack.ironic()
    assert conf.enabled_power_interfaces is None
    assert conf.enabled_management_interfaces is None
    # Set: manual-management's interfaces must be in them.
    stack.ironic_conf.write_text(
        '[DEFAULT]\n'
        'enabled_power_interfaces = ipmitool\n'
        'enabled_management_interfaces = ipmitool,fake\n')
    stack.ok('stack', 'post-config')
    conf = stack.ironic()
    assert conf.enabled_power_interfaces == ['ipmitool', 'fake']
    assert conf.enabled_management_interfaces == ['ipmitool', 'fake', 'noop']
    # Not needed without vmetal-manual-management.
    stack.ironic_conf.write_text('[DEFAULT]\nenabled_power_interfaces = ipmitool\n')
    stack.ok('stack', 'post-config', VMETAL_HARDWARE_TYPES='vmetal-ipmi')
    assert stack.ironic().enabled_power_interfaces == ['ipmitool']


def test_post_config_settings_flow_into_the_files(stack):
    stack.ok('stack', 'post-config',
             VMETAL_NETWORK_CIDR='198.51.100.1/25',
             VMETAL_NETWORK_IP_RANGE='198.51.100.10-198.51.100.20',
             VMETAL_DNS_SERVERS='198.51.100.53',
             VMETAL_PROVISION_INTERFACE='lo',
             VMETAL_HARDWARE_TYPES='vmetal-ipmi')
    conf = stack.ironic()
    assert conf.enabled_hardware_types == ['ipmi', 'fake-hardware', 'vmetal-ipmi']
    assert conf.vmetal.network_cidr == '198.51.100.1/25'
    assert conf.vmetal.network_ip_range == '198.51.100.10-198.51.100.20'
    assert conf.vmetal.dns_servers == '198.51.100.53'
    agent = read_ini(stack.vmetal_conf)
    assert agent['vmetal_dhcp_agent']['server_address'] == '198.51.100.1'


def test_post_config_kubernetes_store(stack):
    stack.ok('stack', 'post-config', VMETAL_STORE='kubernetes',
             VMETAL_KUBECONFIG='/etc/vmetal-ironic/kubeconfig',
             VMETAL_KUBERNETES_NAMESPACE='metal3')
    ironic = read_ini(stack.ironic_conf)
    assert ironic['vmetal']['store'] == 'kubernetes'
    assert dict(ironic['vmetal_kubernetes']) == {
        'kubeconfig': '/etc/vmetal-ironic/kubeconfig', 'namespace': 'metal3'}
    assert not ironic.has_section('vmetal_local_store')


@pytest.mark.parametrize(('env', 'message'), [
    ({'VMETAL_NETWORK_CIDR': '192.0.2.0'},
     'VMETAL_NETWORK_CIDR=192.0.2.0: expected <gateway>/<prefix>'),
    ({'VMETAL_STORE': 'etcd'},
     "VMETAL_STORE=etcd: expected 'local' or 'kubernetes'"),
    ({'VMETAL_HTTP_BOOT_PORT': '80a'},
     'VMETAL_HTTP_BOOT_PORT=80a: expected a TCP port'),
    ({'VMETAL_HTTP_BOOT_PORT': '70000'},
     'VMETAL_HTTP_BOOT_PORT=70000: expected a TCP port'),
    ({'VMETAL_STORE': 'kubernetes'},
     'VMETAL_STORE=kubernetes needs VMETAL_KUBECONFIG'),
])
def test_post_config_rejects_bad_settings_before_writing(stack, env, message):
    before = stack.ironic_conf.read_text()
    result = stack.run('stack', 'post-config', **env)
    assert result.returncode == 1
    assert message in result.stderr
    assert stack.ironic_conf.read_text() == before
    assert not stack.vmetal_conf.exists()


def test_post_config_without_ironic_conf_says_why(stack):
    stack.ironic_conf.unlink()
    result = stack.run('stack', 'post-config')
    assert result.returncode == 1
    assert f'IRONIC_CONF_FILE={stack.ironic_conf} does not exist' in result.stderr
    assert 'enable_plugin ironic must come before' in result.stderr


def test_extra_starts_the_agent_instead_of_dnsmasq(stack):
    stack.ok('stack', 'post-config')
    stack.ok('stack', 'extra', VMETAL_AGENT_USER='nobody')
    # Ironic's dnsmasq is stopped before the agent starts.
    assert stack.calls('stop_process') == [['stop_process', 'ironic-dnsmasq']]
    assert ['sudo', 'ip', 'addr', 'replace', '192.0.2.1/24', 'dev', 'lo'] in stack.calls('sudo')
    [run] = stack.calls('run_process')
    assert run[1] == 'vmetal-dhcp-agent'
    assert run[3:] == ['', 'root']
    gid = subprocess.run(['id', '-g', 'nobody'], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert run[2].split() == [
        shutil.which('setpriv'), '--reuid=nobody', f'--regid={gid}', '--init-groups',
        '--inh-caps=+net_bind_service,+net_raw',
        '--ambient-caps=+net_bind_service,+net_raw', '--',
        '/opt/stack/bin/vmetal-dhcp-agent', '--config-file', str(stack.vmetal_conf)]
    order = [row[0] for row in stack.calls() if row[0] in ('stop_process', 'run_process')]
    assert order == ['stop_process', 'run_process']


def test_extra_as_root_runs_the_agent_directly(stack):
    stack.ok('stack', 'post-config')
    stack.ok('stack', 'extra', VMETAL_AGENT_USER='root', VMETAL_CONFIGURE_INTERFACE='False')
    [run] = stack.calls('run_process')
    assert run[2] == f'/opt/stack/bin/vmetal-dhcp-agent --config-file {stack.vmetal_conf}'
    assert not [c for c in stack.calls('sudo') if c[1] == 'ip']


def _run_script(stack, body):
    """Run bash ``body`` after devstack's functions and the settings."""
    return subprocess.run(
        ['bash', '-c',
         'set -o errexit -o nounset; source "$FAKE_DIR/fake_functions.sh"; '
         'source "$PLUGIN_DIR/settings"; ' + body],
        env=stack.env, capture_output=True, text=True, timeout=60, check=False)


def test_extra_without_the_agent_service_starts_nothing(stack):
    # settings enables both services; local.conf may disable one later.
    result = _run_script(
        stack,
        'ENABLED_SERVICES=ir-api,ir-cond,vmetal; '
        'source "$PLUGIN_DIR/plugin.sh" stack post-config; '
        'source "$PLUGIN_DIR/plugin.sh" stack extra')
    assert result.returncode == 0, result.stderr
    assert stack.calls('run_process') == []
    assert not stack.vmetal_conf.exists()
    assert stack.ironic().dhcp.dhcp_provider == 'vmetal'


def test_extra_refuses_a_missing_interface(stack):
    stack.ok('stack', 'post-config')
    result = stack.run('stack', 'extra', VMETAL_PROVISION_INTERFACE='vdepnope0')
    assert result.returncode == 1
    assert 'VMETAL_PROVISION_INTERFACE=vdepnope0: no such network interface' in result.stderr
    assert stack.calls('run_process') == []


def test_extra_refuses_when_ironic_uses_another_dhcp_provider(stack):
    stack.ok('stack', 'post-config')
    stack.ok('stack', 'post-config')
    text = stack.ironic_conf.read_text().replace(
        'dhcp_provider = vmetal', 'dhcp_provider = dnsmasq')
    stack.ironic_conf.write_text(text)
    result = stack.run('stack', 'extra')
    assert result.returncode == 1
    assert "[dhcp]dhcp_provider in" in result.stderr
    assert "is 'dnsmasq', not 'vmetal'" in result.stderr
    assert stack.calls('run_process') == []


def test_unstack_stops_the_agent(stack):
    stack.ok('unstack')
    assert stack.calls('stop_process') == [['stop_process', 'vmetal-dhcp-agent']]


def test_clean_removes_state_and_config(stack):
    stack.ok('stack', 'post-config')
    (stack.state_dir / 'vmetal.sqlite').write_bytes(b'x')
    stack.ok('unstack')
    stack.ok('clean')
    assert not stack.state_dir.exists()
    assert not stack.conf_dir.exists()
    # ironic.conf belongs to the ironic plugin, which cleans it itself.
    assert stack.ironic_conf.exists()


def test_nothing_runs_when_vmetal_is_disabled(stack):
    result = _run_script(
        stack,
        'ENABLED_SERVICES=ir-api,ir-cond; '
        'for p in "stack install" "stack post-config" "stack extra" unstack clean; do '
        '  source "$PLUGIN_DIR/plugin.sh" $p; done')
    assert result.returncode == 0, result.stderr
    assert stack.calls() == []
    assert 'vmetal' not in stack.ironic_conf.read_text()


@pytest.mark.parametrize('group', ['vmetal', 'vmetal_local_store', 'vmetal_ironic',
                                   'vmetal_dhcp_agent', 'vmetal_tftp'])
def test_every_written_option_exists(stack, group):
    """What the plugin writes must be real options of the package."""
    stack.ok('stack', 'post-config', VMETAL_DNS_SERVERS='192.0.2.53')
    known = dict(vmetal_opts.list_opts())
    if group not in known:
        # The group is added by a branch not merged into this one yet.
        pytest.xfail(f'option group [{group}] is not defined on this branch')
    names = {opt.dest for opt in known[group]}
    written = set()
    for path in (stack.ironic_conf, stack.vmetal_conf):
        parser = read_ini(path)
        if parser.has_section(group):
            written |= set(parser[group])
    assert written, f'nothing written to [{group}]'
    assert written <= names, f'unknown options in [{group}]: {sorted(written - names)}'


def test_shellcheck_is_clean():
    shellcheck = shutil.which('shellcheck')
    assert shellcheck, 'shellcheck missing: tools/install-deps installs it (bindep.txt)'
    result = subprocess.run(
        [shellcheck, '--shell=bash', '--external-sources', '--severity=style',
         *[str(p.relative_to(TOP)) for p in SCRIPTS],
         str((HERE / 'fake_functions.sh').relative_to(TOP))],
        cwd=TOP, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
