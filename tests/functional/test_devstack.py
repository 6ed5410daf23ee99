"""The devstack plugin's phases for real, as root, on a veth pair of the
test's own: what ``stack extra`` starts must be a working PXE responder.

tests/unit/devstack checks what the plugin writes and asks for; here
``run_process`` really starts the command it is given, ``sudo`` really
runs, and a DHCP and a TFTP client in a network namespace talk to the
agent configured by the plugin's vmetal-ironic.conf, fed through the local
store the plugin put into ironic.conf.
"""

import os
import pathlib
import pwd
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.unit.devstack.harness import read_ini
from tests.unit.devstack.harness import Stack
from tests.functional import veth
from vmetal_ironic import reservation
from vmetal_ironic.lab.ironic import free_port
from vmetal_ironic.store import local as local_store

CIDR = '198.51.100.1/24'
SERVER = '198.51.100.1'
CLIENT_MAC = '52:54:00:00:0d:03'
CLIENT_ADDRESS = '198.51.100.77'
# CAP_NET_BIND_SERVICE (10) and CAP_NET_RAW (13).
TWO_CAPS = (1 << 10) | (1 << 13)


@pytest.fixture
def link():
    """The provisioning interface (this namespace) and a machine's NIC (a
    namespace of its own) on one veth pair, without addresses: the plugin
    puts the agent's."""
    with veth.machine_link('n', CLIENT_MAC, None) as names:
        yield names


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of the setsid'd child counts as gone.
    try:
        return pathlib.Path(f'/proc/{pid}/stat').read_text().split()[2] != 'Z'
    except OSError:
        return False


def test_setpriv_command_keeps_exactly_two_capabilities(tmp_path):
    """The command line ``stack extra`` hands run_process drops to the
    agent user with NET_BIND_SERVICE and NET_RAW, nothing else."""
    stack = Stack(tmp_path)
    stack.ironic_conf.write_text('[DEFAULT]\n')
    stack.ok('stack', 'post-config')
    stack.ok('stack', 'extra', VMETAL_AGENT_USER='nobody')
    [run] = stack.calls('run_process')
    prefix, _, agent = run[2].partition(' -- ')
    assert agent.split()[0].endswith('/vmetal-dhcp-agent')
    result = subprocess.run([*prefix.split(), '--', '/bin/cat', '/proc/self/status'],
                            capture_output=True, text=True, timeout=30, check=True)
    status = dict(line.split(':', 1) for line in result.stdout.splitlines())
    assert int(status['Uid'].split()[0]) == pwd.getpwnam('nobody').pw_uid
    for kind in ('CapInh', 'CapPrm', 'CapEff', 'CapAmb'):
        assert int(status[kind], 16) == TWO_CAPS, (kind, status[kind])


def test_stack_extra_starts_a_working_agent_and_unstack_stops_it(tmp_path, link):
    stack = Stack(tmp_path, spawn=True)
    stack.ironic_conf.write_text('[DEFAULT]\n')
    metrics_port = free_port()
    stack.env.update({
        'FAKE_BIN_DIR': str(pathlib.Path(sys.executable).parent),
        'VMETAL_PROVISION_INTERFACE': link['agent'],
        'VMETAL_NETWORK_CIDR': CIDR,
        'VMETAL_AGENT_USER': 'root',
        'VMETAL_METRICS_PORT': str(metrics_port),
        'VMETAL_TFTP_ENABLED': 'True',
        'VMETAL_TFTP_ROOT': '/usr/lib/ipxe',
    })
    stack.ok('stack', 'install')
    stack.ok('stack', 'post-config')
    # What the conductor would publish, into the store ironic.conf names.
    database = read_ini(stack.ironic_conf)['vmetal_local_store']['database']
    store = local_store.LocalStore(path=database)
    try:
        store.publish_reservation(reservation.Reservation(
            mac=CLIENT_MAC, address=CLIENT_ADDRESS, prefixlen=24, gateway=SERVER,
            dns_servers=(), hostname='vdep-2', node='vdep-node-2', lease_time=600))
    finally:
        store.close()

    stack.ok('stack', 'extra')
    pid = int((stack.spawn_dir / 'vmetal-dhcp-agent.pid').read_text())
    log = stack.spawn_dir / 'vmetal-dhcp-agent.log'
    try:
        addresses = subprocess.run(['ip', '-4', '-o', 'addr', 'show', 'dev', link['agent']],
                                   capture_output=True, text=True, timeout=30, check=True)
        assert f'inet {CIDR}' in addresses.stdout

        deadline = time.monotonic() + 30
        while True:
            assert _alive(pid), log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(
                        f'http://127.0.0.1:{metrics_port}/metrics', timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.2)

        veth.lease(link, CLIENT_ADDRESS, log.read_text()[-2000:])
        target = tmp_path / 'undionly.kpxe'
        tftp = subprocess.run(
            ['ip', 'netns', 'exec', link['ns'], 'tftp', '-m', 'binary', SERVER,
             '-c', 'get', 'undionly.kpxe', str(target)],
            capture_output=True, text=True, timeout=60, check=False)
        assert target.exists(), tftp.stdout + tftp.stderr + log.read_text()[-2000:]
        assert target.read_bytes() == pathlib.Path('/usr/lib/ipxe/undionly.kpxe').read_bytes()

        stack.ok('unstack')
        deadline = time.monotonic() + 15
        while _alive(pid):
            assert time.monotonic() < deadline, 'unstack left the agent running'
            time.sleep(0.1)
        stack.ok('clean')
        assert not stack.state_dir.exists()
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
