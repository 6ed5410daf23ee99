"""The full flow's DHCP providers and store choice: configuration only."""

import io

import pytest

from vmetal_ironic.lab import flow
from vmetal_ironic.lab import full_dhcp
from vmetal_ironic.lab import full_flow
from vmetal_ironic.lab import full_setup
from vmetal_ironic.lab import ironic as lab_ironic


def _lab(tmp_path, **options):
    return full_flow.FullLab(tmp_path, flow.Report(io.StringIO()), **options)


def test_dnsmasq_reads_the_files_ironic_writes(tmp_path):
    lab = _lab(tmp_path, dhcp='dnsmasq')
    sections = full_setup.ironic_sections(tmp_path, tmp_path / 'v.sqlite')
    lab.dhcp.configure(sections, tmp_path)
    argv = lab.dhcp.argv('vlabi1', tmp_path / 'tftpboot')
    assert sections['dhcp'] == {'dhcp_provider': 'dnsmasq'}
    for option, flag in (('dhcp_hostsdir', '--dhcp-hostsdir'),
                         ('dhcp_optsdir', '--dhcp-optsdir'),
                         ('dhcp_leasefile', '--dhcp-leasefile')):
        path = sections['dnsmasq'][option]
        assert path.startswith(str(tmp_path))
        assert f'{flag}={path}' in argv
    # No DNS, only the lab's interface, and the tag Ironic's iPXE options
    # name.
    assert '--port=0' in argv
    assert '--interface=vlabi1' in argv
    assert '--dhcp-userclass=set:ipxe,iPXE' in argv


def test_dnsmasq_run_gives_the_os_its_address_outside_the_range(tmp_path):
    lab = _lab(tmp_path, dhcp='dnsmasq', mac='52:54:00:00:00:0a')
    document = lab.dhcp.config_drive_network_data()
    network = document['networks'][0]
    assert network['ip_address'] == full_dhcp.DNSMASQ_OS_ADDRESS
    assert document['links'][0]['ethernet_mac_address'] == \
        '52:54:00:00:00:0a'
    low, high = flow.IP_RANGE.split('-')
    assert not (low <= full_dhcp.DNSMASQ_OS_ADDRESS <= high)


def test_dnsmasq_host_file_says_whether_the_mac_is_served(tmp_path):
    lab = _lab(tmp_path, dhcp='dnsmasq', mac='52:54:00:00:00:0b')
    lab.dhcp.configure({}, tmp_path)
    host_file = lab.dhcp.root / 'hosts' / 'ironic-52:54:00:00:00:0b.conf'
    assert not lab.dhcp.published()
    host_file.write_text('52:54:00:00:00:0b,set:t,set:ironic\n')
    assert lab.dhcp.published()
    host_file.write_text('52:54:00:00:00:0b,ignore\n')
    assert not lab.dhcp.published()


def test_faults_need_the_vmetal_provider(tmp_path):
    with pytest.raises(flow.LabError, match='vmetal DHCP provider'):
        _lab(tmp_path, dhcp='dnsmasq', faults=True)


def _store_file(tmp_path, text):
    path = tmp_path / 'store.conf'
    path.write_text(text)
    return path


def test_kubernetes_store_config_is_taken_as_written(tmp_path):
    path = _store_file(tmp_path, '[vmetal]\nstore = kubernetes\n'
                       '[vmetal_kubernetes]\n'
                       'api_url = https://127.0.0.1:6443\n'
                       'namespace = ns-a\n[other]\nx = 1\n')
    assert full_setup.load_store_config(path) == {
        'vmetal': {'store': 'kubernetes'},
        'vmetal_kubernetes': {'api_url': 'https://127.0.0.1:6443',
                              'namespace': 'ns-a'}}


@pytest.mark.parametrize('text, message', [
    ('[vmetal]\nstore = local\n', "store is 'local'"),
    ('[vmetal]\nstore = kubernetes\n[vmetal_kubernetes]\n'
     'api_url = https://198.51.100.7:6443\n', "'https://198.51.100.7:6443' "
     'must be on 127.0.0.1'),
    ('[vmetal]\nstore = kubernetes\n[vmetal_kubernetes]\n'
     'api_url = https://127.0.0.1\n', 'with a port'),
    ('not an ini file\n', 'store.conf'),
])
def test_bad_store_config_is_one_line_naming_it(tmp_path, text, message):
    path = _store_file(tmp_path, text)
    with pytest.raises(flow.LabError, match='--store-config') as caught:
        full_setup.load_store_config(path)
    assert message in str(caught.value)
    assert '\n' not in str(caught.value)


def test_missing_store_config_is_named(tmp_path):
    with pytest.raises(flow.LabError, match='cannot read it'):
        full_setup.load_store_config(tmp_path / 'nope.conf')


def test_metal3_node_name_stands_for_its_host(tmp_path):
    lab = _lab(tmp_path, node_name='ns-a~host-0')
    lab.node_uuid = '1be26c0e-ba36-4c2a-9f5b-4f9a9b1e6f0e'
    assert lab.owner() == 'BareMetalHost/ns-a/host-0'
    assert _lab(tmp_path).owner() != 'BareMetalHost/ns-a/host-0'


def test_agent_shares_the_store_sections(tmp_path):
    # What the agent's configuration starts with: the store Ironic uses.
    text = lab_ironic.render_conf({'vmetal': {'store': 'kubernetes'}})
    assert text.startswith('[vmetal]\nstore = kubernetes\n')
