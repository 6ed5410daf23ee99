import io
import json

import pytest

from vmetal_ironic.cmd import ipam


@pytest.fixture
def run(tmp_path):
    database = str(tmp_path / 'vmetal.sqlite')

    def _run(*argv):
        out, err = io.StringIO(), io.StringIO()
        code = ipam.main(['--database', database, *argv], stdout=out,
                         stderr=err)
        return code, out.getvalue(), err.getvalue()
    return _run


def test_allocate_list_usage_release(run):
    code, out, err = run('allocate', 'Machine/ns/a', '--cidr', '192.0.2.1/24',
                         '--mac', '52:54:00:00:00:01')
    assert (code, err) == (0, '')
    assert out == 'Machine/ns/a: 192.0.2.2/24 gateway 192.0.2.1 (pool 192.0.2.0/24)\n'
    run('allocate', 'Machine/ns/b', '--cidr', '192.0.2.1/24')

    code, out, _ = run('list')
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ['POOL', 'ADDRESS', 'OWNER', 'MAC']
    assert lines[2].split() == ['192.0.2.0/24', '192.0.2.2', 'Machine/ns/a',
                                '52:54:00:00:00:01']
    assert lines[3].split() == ['192.0.2.0/24', '192.0.2.3', 'Machine/ns/b', '-']

    code, out, _ = run('usage', '--cidr', '192.0.2.1/24', '--json')
    assert json.loads(out) == {'pool': '192.0.2.0/24', 'size': 253, 'used': 2,
                               'free': 251}

    code, out, _ = run('--json', 'release', 'Machine/ns/a')
    assert json.loads(out) == {'owner': 'Machine/ns/a', 'released': '192.0.2.2'}
    code, out, _ = run('release', 'Machine/ns/a')
    assert code == 0
    assert 'held no address; nothing to release' in out


def test_network_data_output(run):
    run('allocate', 'Machine/ns/a', '--cidr', '192.0.2.1/24', '--dns-servers', '192.0.2.53',
        '--mac', '52:54:00:00:00:01')
    code, out, _ = run('network-data', 'Machine/ns/a')
    assert code == 0
    document = json.loads(out)
    assert document['networks'][0]['ip_address'] == '192.0.2.2'
    assert document['services'] == [{'type': 'dns', 'address': '192.0.2.53'}]


def test_custom_network_data_via_property(run):
    code, out, _ = run('allocate', 'Machine/ns/a', '-p',
                       'network-data={"links":[],"networks":[],"services":[]}',
                       '--json')
    assert code == 0
    assert json.loads(out)['custom_network_data'] is True
    assert run('list', '--json')[1].strip() == '[]'


def test_usage_in_range_mode_counts_only_the_ranges(run):
    run('allocate', 'Machine/ns/a', '--cidr', '192.0.2.1/24')
    run('allocate', 'Machine/ns/b', '--cidr', '192.0.2.1/24', '--ip-range',
        '192.0.2.100-192.0.2.101')
    _code, out, _ = run('usage', '--cidr', '192.0.2.1/24', '--ip-range',
                       '192.0.2.100-192.0.2.101')
    assert out.splitlines()[2].split() == [
        '192.0.2.0/24', 'ranges', '192.0.2.100-192.0.2.101', '2', '1', '1']


@pytest.mark.parametrize('argv, message', [
    (('allocate', 'Machine/ns/a', '--cidr', '192.0.2.0/24'),
     "vmetal-ipam: error: network-cidr '192.0.2.0/24': gateway 192.0.2.0 is "
     'the network address; give the gateway, e.g. 192.0.2.1/24 '
     '(from the command line)\n'),
    (('allocate', 'Machine/ns/a'),
     'vmetal-ipam: error: network-cidr is not set; expected <gateway>/<prefix>,'
     ' e.g. 192.0.2.1/24\n'),
    (('allocate', 'Machine/ns/a', '--cidr', '192.0.2.1/24', '--ip-range', '192.0.2.9-192.0.2.3'),
     "vmetal-ipam: error: network-ip-range '192.0.2.9-192.0.2.3' is reversed: "
     '192.0.2.9 comes after 192.0.2.3 (from the command line)\n'),
    (('allocate', 'Machine/ns/a', '--network-data', '{"links": []}'),
     'vmetal-ipam: error: network-data lacks networks, services; links, '
     'networks and services are all required (from the command line)\n'),
    (('allocate', 'Machine/ns/a', '--cidr', '192.0.2.1/24', '--mac', 'nope'),
     "vmetal-ipam: error: MAC address 'nope' is not valid\n"),
    (('network-data', 'ghost'),
     "vmetal-ipam: error: owner 'ghost' has no network data; allocate first\n"),
    (('usage',),
     'vmetal-ipam: error: network-cidr is not set; expected <gateway>/<prefix>,'
     ' e.g. 192.0.2.1/24\n'),
])
def test_bad_input_is_one_line_and_exit_1(run, argv, message):
    code, out, err = run(*argv)
    assert (code, out, err) == (1, '', message)


def test_exhaustion_message(run):
    run('allocate', 'Machine/ns/a', '--cidr', '192.0.2.1/30')
    code, _, err = run('allocate', 'Machine/ns/b', '--cidr', '192.0.2.1/30')
    assert (code, err) == (1, 'vmetal-ipam: error: pool 192.0.2.0/30: CIDR '
                              'exhausted; no free addresses left\n')


def test_missing_config_file_is_one_line(run, tmp_path):
    code, _, err = run('--config-file', str(tmp_path / 'absent.conf'), 'list')
    assert code == 1
    assert err.startswith('vmetal-ipam: error: ')
    assert 'absent.conf' in err
    assert len(err.splitlines()) == 1


def test_config_defaults_apply(run, tmp_path):
    conf = tmp_path / 'vmetal.conf'
    conf.write_text('[vmetal]\nnetwork_cidr = 198.51.100.1/24\n'
                    'network_ip_range = 198.51.100.200-198.51.100.210\n')
    code, out, _ = run('--config-file', str(conf), 'allocate', 'Machine/ns/a', '--json')
    assert code == 0
    assert json.loads(out)['address'] == '198.51.100.200'


def test_unknown_store_is_one_line(run, tmp_path):
    conf = tmp_path / 'vmetal.conf'
    conf.write_text('[vmetal]\nstore = nosuch\n')
    code, _, err = run('--config-file', str(conf), 'list')
    assert code == 1
    assert err.startswith("vmetal-ipam: error: [vmetal]store 'nosuch' is not an "
                          'installed store')


def test_usage_errors_exit_2(run, capsys):
    with pytest.raises(SystemExit) as info:
        run('frobnicate')
    assert info.value.code == 2
