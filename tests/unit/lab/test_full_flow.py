"""The full lab flow's pure parts: configuration, parsing, reporting."""

import configparser
import io
import ssl
from xml.etree import ElementTree

from ironic.conf import agent as ironic_agent_conf
import pytest

from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.lab import bridge_counters
from vmetal_ironic.lab import debian
from vmetal_ironic.lab import flow
from vmetal_ironic.lab import full_flow
from vmetal_ironic.lab import full_setup
from vmetal_ironic.lab import ironic as lab_ironic
from vmetal_ironic.lab import libvirt
from vmetal_ironic.lab import os_image
from vmetal_ironic.lab import tls


def test_report_line_is_parsed_from_a_serial_log():
    log = ('[  OK  ] Started foo\n'
           'vmetal-lab-os: iface=enp1s0 address=192.0.2.100/24 '
           'source=static gateway=192.0.2.1 dns=192.0.2.1 '
           'datasource=DataSourceConfigDrive\n')
    fields = os_image.parse_report(log)
    assert fields == {'iface': 'enp1s0', 'address': '192.0.2.100/24',
                      'source': 'static', 'gateway': '192.0.2.1',
                      'dns': '192.0.2.1',
                      'datasource': 'DataSourceConfigDrive'}


def test_no_report_line_gives_none():
    assert os_image.parse_report('Booting Linux\nlogin:\n') is None


def test_the_report_script_echo_is_not_taken_for_a_report():
    # systemd may print the unit's command line; only the output counts.
    assert os_image.parse_report(
        'echo "vmetal-lab-os: iface=$iface address=$address"\n') is None


def test_inventory_is_described_in_one_line():
    inventory = {
        'cpu': {'count': 1, 'model_name': 'QEMU Virtual CPU'},
        'memory': {'physical_mb': 1024},
        'disks': [{'name': '/dev/vda', 'size': 4 * 2**30}],
        'interfaces': [{'name': 'enp1s0', 'mac_address': '52:54:00:aa:bb:cc'}],
    }
    assert full_flow.describe(inventory) == (
        '1 CPU (QEMU Virtual CPU), memory 1024 MiB, disks [/dev/vda 4 GiB], '
        'NICs [enp1s0 52:54:00:aa:bb:cc]')


def test_ironic_runs_stock_redfish_with_the_vmetal_dhcp_provider(tmp_path):
    sections = full_setup.ironic_sections(tmp_path, tmp_path / 'v.sqlite')
    parser = configparser.ConfigParser()
    parser.read_file(io.StringIO(lab_ironic.render_conf(sections)))
    assert parser['DEFAULT']['enabled_hardware_types'] == 'redfish'
    assert parser['DEFAULT']['enabled_network_interfaces'] == 'noop'
    assert parser['dhcp']['dhcp_provider'] == 'vmetal'
    # The ramdisk reaches the API on the lab L2, never the host loopback.
    assert parser['service_catalog']['endpoint_override'] == \
        f'http://{flow.SERVER}:{full_setup.API_PORT}'
    assert parser['api']['host_ip'] == flow.SERVER
    assert parser['deploy']['erase_devices_priority'] == '0'
    # Nothing of Ironic's state outside the lab's work directory.
    for section, option in (('pxe', 'images_path'),
                            ('pxe', 'instance_master_path'),
                            ('agent', 'certificates_path'),
                            ('deploy', 'iso_master_path')):
        assert parser[section][option].startswith(str(tmp_path))


def test_conductor_looks_for_power_off_every_second_in_both_topologies(
        tmp_path):
    same = full_setup.ironic_sections(tmp_path, tmp_path / 'v.sqlite')
    two = full_setup.ironic_sections(tmp_path, tmp_path / 'v.sqlite',
                                     full_setup.IRONIC_CLUSTER)
    for sections in (same, two):
        agent = sections['agent']
        assert agent['post_deploy_get_power_state_retry_interval'] == '1'
        # The wait keeps Ironic's default bound: 6 x 5 s.
        assert int(agent['post_deploy_get_power_state_retries']) == 6 * 5
    # Every name is one of Ironic's own [agent] options, whole seconds.
    known = {opt.name: opt for opt in ironic_agent_conf.opts}
    for name, value in full_setup.AGENT_POLLING.items():
        assert known[name].type(value) == int(value)


def test_domain_definition_is_escaped_and_boots_uefi():
    xml = libvirt.domain_xml(
        name="vlab<1>", uuid='u', memory=1024, code=libvirt.OVMF_CODE,
        vars=libvirt.OVMF_VARS, nvram='/w/vars.fd', disk='/w/d.qcow2',
        bridge='vlabb', mac='52:54:00:00:00:01', serial="/w/it's.log")
    root = ElementTree.fromstring(xml)  # noqa: S314 - our own template
    assert root.get('type') == 'qemu'
    assert root.findtext('name') == 'vlab<1>'
    assert root.find('os/loader').text == str(libvirt.OVMF_CODE)
    assert root.find('devices/serial/source').get('append') == 'on'
    assert root.find('devices/interface/source').get('bridge') == 'vlabb'


def test_recipe_key_changes_with_any_part():
    assert debian.recipe_key('a', 'b') != debian.recipe_key('a', 'c')
    assert debian.recipe_key('ab', '') != debian.recipe_key('a', 'b')
    assert len(debian.recipe_key('a')) == 12


def test_summary_has_the_documented_shape(tmp_path):
    lab = full_flow.FullLab(tmp_path, flow.Report(io.StringIO()))
    lab.address = '192.0.2.100'
    lab.os_fields = {'address': '192.0.2.100/24', 'source': 'static'}
    lab.phases = [full_flow.Phase('power_on', 5.0)]
    summary = lab.summary(True, 12.34)
    assert summary['ok'] is True
    assert summary['seconds'] == 12.3
    assert summary['os_address'] == '192.0.2.100'
    assert summary['os_address_source'] == 'static'
    assert summary['steps'] == [{'name': 'power_on', 'seconds': 5.0}]
    assert summary['topology'] == 'same-l2'
    assert summary['ironic_api'] == 'http'
    # One L2: the bridge is not in the path.
    assert summary['bridge'] is None


def test_two_networks_summary_says_what_crossed_the_bridge(tmp_path):
    lab = full_flow.FullLab(tmp_path, flow.Report(io.StringIO()),
                            two_networks=True)
    metrics = metrics_mod.Metrics()
    lab.bridge = bridge_counters.Counters(
        'http://x/metrics', reader=lambda url: metrics.render())
    metrics.bridge_cache_requests.labels('miss').inc(2)
    lab._phase('inspection', 0.0)
    metrics.bridge_cache_requests.labels('hit').inc(2)
    lab._phase('deploy', 0.0)
    steps = lab.summary(True, 1.0)['steps']
    assert [step['bridge']['cache']['hit'] for step in steps] == [0, 2]
    assert [step['bridge']['cache']['miss'] for step in steps] == [2, 0]
    bridge = lab.summary(True, 1.0)['bridge']
    assert bridge['in_path'] is True and bridge['agent_restarts'] == 0
    assert bridge['cache']['hit'] == 2 and bridge['cache']['miss'] == 2


def test_two_networks_lab_names_its_topology_and_the_agents_bridge(
        tmp_path):
    lab = full_flow.FullLab(tmp_path, flow.Report(io.StringIO()),
                            two_networks=True)
    assert lab.summary(True, 1.0)['topology'] == 'two-networks'
    assert lab.services.api_address() == full_setup.IRONIC_CLUSTER
    # The conductor fetches the image on its own network.
    assert lab.services.image_url().startswith(
        f'http://{full_setup.IRONIC_CLUSTER}:{flow.HTTP_PORT}/')
    bridge = configparser.ConfigParser()
    bridge.read_string(full_setup.bridge_conf())
    section = bridge['vmetal_bridge']
    assert section['callback_address'] == full_setup.AGENT_CLUSTER
    assert section['ironic_api_url'] == \
        f'http://{full_setup.IRONIC_CLUSTER}:{full_setup.API_PORT}'
    # Ironic keeps its own URLs (its conductor checks the image URL under
    # http_url itself); the agent translates them for the machine.
    sections = full_setup.ironic_sections(tmp_path, tmp_path / 'v.sqlite',
                                          full_setup.IRONIC_CLUSTER)
    cluster = full_setup.IRONIC_CLUSTER
    assert sections['api']['host_ip'] == cluster
    assert sections['service_catalog']['endpoint_override'] == \
        f'http://{cluster}:{full_setup.API_PORT}'
    assert sections['deploy']['http_url'] == \
        f'http://{cluster}:{flow.HTTP_PORT}'
    assert sections['pxe']['tftp_server'] == flow.SERVER
    assert sections['agent']['require_tls'] == 'false'
    # With the callback listener's CA, Ironic keeps requiring TLS and
    # checks the agent with it.
    issued = tls.issue(tmp_path / 'tls', [full_setup.AGENT_CLUSTER])
    bridge = configparser.ConfigParser()
    bridge.read_string(full_setup.bridge_conf(issued))
    assert bridge['vmetal_bridge']['callback_cert_file'] == \
        str(issued.cert_file)
    checked = full_setup.ironic_sections(
        tmp_path, tmp_path / 'v.sqlite', full_setup.IRONIC_CLUSTER,
        agent_ca=issued.ca_file)
    assert checked['agent']['verify_ca'] == str(issued.ca_file)
    assert 'require_tls' not in checked['agent']
    same = full_setup.ironic_sections(tmp_path, tmp_path / 'v.sqlite')
    assert same['deploy']['http_url'] == flow.HTTP_URL
    assert 'require_tls' not in same['agent']
    assert same['service_catalog']['endpoint_override'] == \
        full_setup.API_URL


def test_ironics_api_is_tls_across_two_networks_unless_asked_plain(
        tmp_path):
    report = flow.Report(io.StringIO())
    assert full_flow.FullLab(tmp_path, report, two_networks=True).summary(
        True, 1.0)['ironic_api'] == 'https'
    plain = full_flow.FullLab(tmp_path, report, two_networks=True,
                              ironic_api='http')
    assert plain.summary(True, 1.0)['ironic_api'] == 'http'
    # On one L2 the ramdisk would call the API itself, with no CA.
    with pytest.raises(flow.LabError, match='--ironic-api https needs '
                       '--two-networks'):
        full_flow.FullLab(tmp_path, report, ironic_api='https')
    with pytest.raises(flow.LabError, match="'ftp'"):
        full_flow.FullLab(tmp_path, report, two_networks=True,
                          ironic_api='ftp')


def test_ironics_api_over_tls_is_checked_by_every_caller(tmp_path):
    api_tls = tls.issue(tmp_path / 'tls', [full_setup.IRONIC_CLUSTER,
                                           '127.0.0.1'], label='ironic')
    sections = full_setup.ironic_sections(
        tmp_path, tmp_path / 'v.sqlite', full_setup.IRONIC_CLUSTER,
        api_tls=api_tls)
    https = f'https://{full_setup.IRONIC_CLUSTER}:{full_setup.API_PORT}'
    assert sections['api']['enable_ssl_api'] == 'true'
    assert sections['api']['cert_file'] == str(api_tls.cert_file)
    assert sections['api']['key_file'] == str(api_tls.key_file)
    # The URL Ironic writes into boot configs, which the agent translates:
    # it must be written exactly as the agent's ironic_api_url.
    assert sections['service_catalog']['endpoint_override'] == https
    bridge = configparser.ConfigParser()
    bridge.read_string(full_setup.bridge_conf(api_ca=api_tls.ca_file))
    assert bridge['vmetal_bridge']['ironic_api_url'] == https
    assert bridge['vmetal_bridge']['ca_file'] == str(api_tls.ca_file)
    # Nothing turns a check off.
    text = lab_ironic.render_conf(sections) + full_setup.bridge_conf(
        api_ca=api_tls.ca_file)
    assert 'insecure' not in text
    # The lab's own client checks the certificate through its relay.
    ironic = lab_ironic.IronicService(tmp_path, sections, 4242)
    ironic.trust(api_tls.ca_file)
    assert ironic.url == 'https://127.0.0.1:4242'
    assert ironic.tls_context.verify_mode == ssl.CERT_REQUIRED
    assert ironic.tls_context.check_hostname
    plain = full_setup.ironic_sections(
        tmp_path, tmp_path / 'v.sqlite', full_setup.IRONIC_CLUSTER)
    assert 'enable_ssl_api' not in plain['api']
    assert 'ca_file' not in full_setup.bridge_conf()


def _built_images(tmp_path):
    """Files the size of the IPA kernel and ramdisk and a deploy image
    (sparse: only their sizes count)."""
    ipa, image = tmp_path / 'ipa', tmp_path / 'image'
    for path, size in ((ipa / 'kernel', 8 * 2**20),
                       (ipa / 'ramdisk', 93 * 2**20),
                       (image / 'image.qcow2', 140 * 2**20)):
        path.parent.mkdir(exist_ok=True)
        with open(path, 'wb') as sparse:
            sparse.truncate(size)
    return ipa, image


def test_two_networks_lab_keeps_the_bridges_copies_in_its_workdir(
        tmp_path):
    """The agent process's [vmetal_bridge] across two networks names a
    cache directory under the run's workdir, with a budget that holds
    every file the machine downloads through the bridge."""
    from unittest import mock
    lab = full_flow.FullLab(tmp_path, flow.Report(io.StringIO()),
                            two_networks=True)
    services = lab.services
    services.ipa_dir, services.image_dir = _built_images(tmp_path)
    # No namespaces in a unit test: the topology only names them; what is
    # checked is the configuration written.
    lab.topology = mock.Mock(prefix='vlabx')
    lab.topology.host.return_value = ('vlabxa', 'eth0')
    services._two_networks()
    written = configparser.ConfigParser()
    written.read_string(lab.agent_extra)
    bridge = written['vmetal_bridge']
    assert bridge['cache_dir'] == str(tmp_path / 'bridge-cache')
    budget = int(bridge['cache_max_bytes'])
    assert budget == 2 * (8 + 93 + 140) * 2**20
    # Same L2: no bridge, no copies.
    assert 'cache_dir' not in full_setup.bridge_conf()


def test_two_networks_needs_the_vmetal_agent(tmp_path):
    with pytest.raises(flow.LabError, match='two-networks'):
        full_flow.FullLab(tmp_path, flow.Report(io.StringIO()),
                          dhcp='dnsmasq', two_networks=True)


def test_boot_devices_follow_per_device_order():
    # What sushy-tools leaves after a Redfish "Hdd" boot override.
    xml = ("<domain><os><type>hvm</type></os><devices>"
           "<disk><boot order='1'/></disk><interface/></devices></domain>")
    assert libvirt.boot_devices(xml) == ['hd']
    xml = ("<domain><devices><disk><boot order='2'/></disk>"
           "<interface><boot order='1'/></interface></devices></domain>")
    assert libvirt.boot_devices(xml) == ['network', 'hd']


def test_boot_devices_from_the_os_element():
    xml = ("<domain><os><boot dev='network'/><boot dev='hd'/></os>"
           "<devices/></domain>")
    assert libvirt.boot_devices(xml) == ['network', 'hd']
    assert libvirt.boot_devices('not xml') == []


def test_cached_build_builds_once_and_publishes_whole(tmp_path):
    final = tmp_path / 'cache' / 'key'
    calls = []

    def make(staging):
        calls.append(staging)
        (staging / 'artefact').write_text('x')

    directory, _seconds, cached = debian.cached_build(final, 'artefact', make)
    assert (directory, cached) == (final, False)
    assert (final / 'artefact').read_text() == 'x'
    assert debian.cached_build(final, 'artefact', make)[2] is True
    assert len(calls) == 1
    assert sorted(p.name for p in final.parent.iterdir()) == ['key']


def test_failed_build_leaves_no_cache_entry(tmp_path):
    final = tmp_path / 'cache' / 'key'

    def make(staging):
        (staging / 'half').write_text('x')
        raise debian.BuildError('debootstrap failed')

    with pytest.raises(debian.BuildError):
        debian.cached_build(final, 'artefact', make)
    assert list(final.parent.iterdir()) == []
