"""The agent's image run as Kubernetes runs it (issue 21).

``tools/build-agent-image`` builds the image (cached); the agent then runs
from it in a pod of :mod:`vmetal_ironic.lab.agent_pod`: ``net1`` attached
by Debian's CNI ``bridge`` plugin with the shipped attachment's config,
the shipped Deployment's ``securityContext`` and ConfigMap, the
ServiceAccount token of the session's real kube-apiserver mounted where
kubelet mounts it, and podman's ambient capabilities emptied by the
runtime wrapper, as containerd and CRI-O leave them. A real DHCP client
on the lab's L2 gets the address of a reservation the store published.

What is checked from outside (``/proc/<pid>``): the agent has its own
mount namespace, runs as uid 1000 and holds exactly NET_BIND_SERVICE and
NET_RAW, from the image's file capabilities only. The two ways the
``securityContext`` can leave the agent without them fail with a message
saying which: NET_RAW left out of the bounding set, and
``allowPrivilegeEscalation: false`` with a shell started before the agent
(the shipped Deployment sets it false: with the agent first, it keeps its
two under no_new_privs, as measured here; a shell first needs it true).

The pod here is the one the lab starts
(:class:`vmetal_ironic.lab.agent_pod.AgentPod`), on the same kind of
bridge, so what is checked holds for it; on the local store too (its
state directory mounted), and across two networks (the bridge's HTTP
path, without QEMU). The last test runs the whole flow with the agent
in its pod (``vmetal-lab --full --agent-image`` on the Kubernetes store):
about 5 minutes on an idle machine (1038 s measured here at a load
average of 13 on 2 cores, 250 s for the plain flow idle), within the
12 minutes CI gives this issue.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

from tests.functional import kube
from tests.functional import lab_checks
from tests.functional.k8s.conftest import node_provider
from vmetal_ironic import properties as props
from vmetal_ironic import reservation
from vmetal_ironic.lab import agent_image
from vmetal_ironic.lab import agent_pod
from vmetal_ironic.lab import flow
from vmetal_ironic.lab import full_setup
from vmetal_ironic.lab import netns
from vmetal_ironic.lab import observe
from vmetal_ironic.store import kubernetes as kube_store
from vmetal_ironic.store import local

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='network namespaces need root')

TOP = pathlib.Path(__file__).resolve().parents[3]
BUILD_TIMEOUT = 30 * 60
AGENT_ADDRESS = '192.0.2.3'
CLIENT_MAC = '52:54:00:21:00:01'
CLIENT_ADDRESS = '192.0.2.21'
#: NET_BIND_SERVICE (bit 10) | NET_RAW (bit 13).
TWO_CAPABILITIES = 0x2400
AGENT = '/opt/vmetal/bin/vmetal-dhcp-agent'

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "ip=$ip serverid=$serverid" > "{out}"
exit 0
"""


@pytest.fixture(scope='module')
def image():
    result = subprocess.run([str(TOP / 'tools' / 'build-agent-image')],
                            capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[-1]


def _status(pid):
    """``{field: value}`` of ``/proc/<pid>/status``."""
    lines = pathlib.Path(f'/proc/{pid}/status').read_text().splitlines()
    return dict(line.split(':\t', 1) for line in lines if ':\t' in line)


def _root_leftovers(prefix):
    """Links and addresses on the host a pod of ``prefix`` may leave:
    podman's bridge, the lab's links, the agent's address. (Other labs
    on the machine change the host's links meanwhile: only ours count.)"""
    lines = subprocess.run(['ip', '-o', 'addr', 'show'], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    lines += subprocess.run(['ip', '-o', 'link', 'show'],
                            capture_output=True, text=True,
                            check=True).stdout.splitlines()
    return [line for line in lines if f' {AGENT_ADDRESS}/' in line
            or line.split()[1].startswith(('podman', 'cni-podman', prefix))]


def _podman_names():
    return subprocess.run(
        agent_image.podman_argv('ps', '--all', '--format', '{{.Names}}'),
        env=agent_image.podman_env(), capture_output=True, text=True,
        check=True).stdout.split()


class PodLab:
    """A bridge, a DHCP client's namespace, and the agent pods started."""

    def __init__(self, workdir, sections, image):
        self.workdir = workdir
        self.sections = sections
        self.image = image
        self.topology = netns.Topology(workdir / 'net', prefix='vimg')
        self.client_ns, self.client_if = self.topology.host(
            'c', mac=CLIENT_MAC)
        self.pods = []

    def start(self, spec=None):
        pod = agent_pod.AgentPod(
            self.topology, self.workdir / f'pod{len(self.pods)}',
            self.sections, f'{AGENT_ADDRESS}/24', spec=spec)
        self.pods.append(pod)
        pod.start(self.image)
        return pod

    def dhcp(self):
        """A real DHCP exchange from the client's namespace."""
        out = self.workdir / 'udhcpc.out'
        script = self.workdir / 'udhcpc.sh'
        script.write_text(UDHCPC_SCRIPT.format(out=out))
        script.chmod(0o755)
        self.topology.exec(self.client_ns, 'busybox', 'udhcpc', '-i',
                           self.client_if, '-n', '-q', '-f', '-t', '10',
                           '-T', '1', '-s', str(script), timeout=40,
                           check=False)
        return out.read_text().strip() if out.exists() else None

    def close(self):
        for pod in self.pods:
            pod.close()
        self.topology.close()


def _closed_cleanly(lab):
    """Close ``lab``; assert its pods left nothing behind."""
    names = [name for pod in lab.pods for name in (pod.name, pod.infra)]
    lab.close()
    assert not set(names) & set(_podman_names()), 'a container was left'
    # Nothing of the pod, its CNI attachment or podman on the host.
    assert _root_leftovers(lab.topology.prefix) == []
    assert lab.topology.prefix + 'p' not in subprocess.run(
        ['ip', 'netns', 'list'], capture_output=True, text=True,
        check=True).stdout


@pytest.fixture
def pod_lab(tmp_path, kube_cluster, image):
    settings = kube_cluster.settings(token=kube_cluster.store_token)
    sections = {'vmetal': {'store': 'kubernetes',
                           'address_scope': f'img-{os.urandom(3).hex()}'},
                'vmetal_kubernetes': settings}
    lab = PodLab(tmp_path, sections, image)
    yield lab
    _closed_cleanly(lab)


@pytest.fixture
def local_pod_lab(tmp_path, image):
    """A pod on the local store: its state directory made as the lab
    makes it, the store opened by root first, as Ironic opens it."""
    database = agent_pod.state_directory(tmp_path / 'state',
                                         agent_pod.container_spec())
    store = local.LocalStore(path=str(database))
    lab = PodLab(tmp_path, {'vmetal': {'store': 'local'},
                            'vmetal_local_store': {
                                'database': str(database)}}, image)
    lab.store = store
    yield lab
    _closed_cleanly(lab)
    store.close()


@pytest.fixture
def reservation_published(kube_cluster):
    store = kube_store.KubernetesStore(kube.store_conf(
        kube_cluster.settings(token=kube_cluster.store_token)))
    store.publish_reservation(reservation.Reservation(
        mac=CLIENT_MAC, address=CLIENT_ADDRESS, prefixlen=24))
    yield
    store.withdraw_reservation(CLIENT_MAC)
    store.close()


def test_agent_runs_from_its_image_as_kubernetes_runs_it(
        pod_lab, reservation_published):
    pod = pod_lab.start()
    pid = pod.agent_pid()
    status = _status(pid)
    assert 'vmetal-dhcp-agent' in pathlib.Path(
        f'/proc/{pid}/cmdline').read_text()
    assert status['Uid'].split() == ['1000'] * 4
    assert status['Gid'].split() == ['1000'] * 4
    assert int(status['CapEff'], 16) == TWO_CAPABILITIES
    assert int(status['CapPrm'], 16) == TWO_CAPABILITIES
    assert int(status['CapBnd'], 16) == TWO_CAPABILITIES
    # Kubelet's runtimes give none: the two come from the file
    # capabilities of the image's interpreter.
    assert int(status['CapAmb'], 16) == 0
    assert int(status['CapInh'], 16) == 0
    # allowPrivilegeEscalation: false as shipped; the agent, the first
    # program, keeps the two the runtime permitted.
    assert status['NoNewPrivs'] == '1'
    own = os.readlink('/proc/self/ns/mnt')
    assert os.readlink(f'/proc/{pid}/ns/mnt') != own
    # The pod's network: the infra container's, holding net1.
    assert os.readlink(f'/proc/{pid}/ns/net') == os.readlink(
        f'/proc/{pod.infra_pid}/ns/net')
    assert os.readlink(f'/proc/{pid}/ns/net') != os.readlink(
        '/proc/self/ns/net')
    # The root is read-only; the agent cannot write it.
    root = pathlib.Path(f'/proc/{pid}/root')
    mounts = pathlib.Path(f'/proc/{pid}/mounts').read_text().splitlines()
    [options] = [line.split()[3] for line in mounts
                 if line.split()[1] == '/']
    assert options.split(',')[0] == 'ro'
    # /var/run is a link to /run in the image: read it through the
    # container's root, not ours.
    assert (root / 'run/secrets/kubernetes.io/serviceaccount/token'
            ).read_text() == pod_lab.sections['vmetal_kubernetes']['token']
    # The store it reads through in-cluster credentials answers the
    # client on the lab's L2.
    assert pod_lab.dhcp() == (f'ip={CLIENT_ADDRESS} '
                              f'serverid={AGENT_ADDRESS}')


def test_agent_in_its_pod_shares_the_local_store(local_pod_lab):
    pod = local_pod_lab.start()
    status = _status(pod.agent_pid())
    assert status['Uid'].split() == ['1000'] * 4
    assert int(status['CapEff'], 16) == TWO_CAPABILITIES
    # Published by root (Ironic's part) after the agent opened the file:
    # the agent follows the writes of another user's process.
    local_pod_lab.store.publish_reservation(reservation.Reservation(
        mac=CLIENT_MAC, address=CLIENT_ADDRESS, prefixlen=24))
    assert local_pod_lab.dhcp() == (f'ip={CLIENT_ADDRESS} '
                                    f'serverid={AGENT_ADDRESS}')
    # SQLite run by root gave the files it made the database's owner:
    # the agent can open them again after every writer closed them.
    database = pathlib.Path(
        local_pod_lab.sections['vmetal_local_store']['database'])
    for path in database.parent.iterdir():
        assert (path.stat().st_uid, path.stat().st_gid) == (1000, 1000), path
    assert sorted(path.name for path in database.parent.iterdir()) == [
        'vmetal.sqlite', 'vmetal.sqlite-shm', 'vmetal.sqlite-wal']
    # Nothing else of the host is in the pod: no ServiceAccount.
    root = pathlib.Path(f'/proc/{pod.agent_pid()}/root')
    assert not (root / 'run/secrets/kubernetes.io').exists()


def test_agent_pod_bridges_two_networks(local_pod_lab, tmp_path):
    """``--agent-image --two-networks`` without QEMU: the pod made first,
    net1 holding the lab's server address by the CNI plugin, its cluster
    leg wired to Ironic's namespace as the lab wires it, the bridge
    configured as the lab configures its own agent. A client on the L2
    gets its address and the bootloader from the pod, and Ironic's HTTP
    root through the bridge, while Ironic's namespace has no way to the
    L2 and the pod forwards nothing."""
    lab = local_pod_lab
    lab.store.publish_reservation(reservation.Reservation(
        mac=CLIENT_MAC, address=CLIENT_ADDRESS, prefixlen=24))
    server_ns = lab.topology.namespace('s')
    root = tmp_path / 'http'
    root.mkdir()
    (root / 'boot.ipxe').write_text('#!ipxe\necho from Ironic\n')
    pod = agent_pod.AgentPod(
        lab.topology, tmp_path / 'pod', lab.sections,
        f'{flow.SERVER}/{flow.PREFIX}', netns=f'{lab.topology.prefix}a')
    lab.pods.append(pod)
    pod_ns = pod.make(lab.image)
    lab.topology.wire(
        pod_ns, server_ns,
        f'{full_setup.AGENT_CLUSTER}/{full_setup.CLUSTER_PREFIX}',
        f'{full_setup.IRONIC_CLUSTER}/{full_setup.CLUSTER_PREFIX}')
    lab.topology.spawn(server_ns, [
        sys.executable, '-u', '-m', 'http.server', '--bind',
        full_setup.IRONIC_CLUSTER, '--directory', str(root),
        str(flow.HTTP_PORT)], 'http.log')
    http_log = lab.topology.workdir / 'http.log'
    assert observe.wait_for(lambda: http_log.exists() and 'Serving HTTP' in
                            http_log.read_text(), 30)
    pod.start(lab.image, extra_conf=full_setup.bridge_conf())

    assert lab.dhcp() == f'ip={CLIENT_ADDRESS} serverid={flow.SERVER}'
    lab.topology.exec(lab.client_ns, 'ip', 'addr', 'add',
                      f'{CLIENT_ADDRESS}/24', 'dev', lab.client_if)
    loaded = tmp_path / 'snponly.efi'
    lab.topology.exec(lab.client_ns, 'busybox', 'tftp', '-g', '-r',
                      'snponly.efi', '-l', str(loaded), flow.SERVER)
    # A PE image, as the firmware expects.
    assert loaded.read_bytes()[:2] == b'MZ' and loaded.stat().st_size > 1e5
    fetched = lab.topology.exec(
        lab.client_ns, 'curl', '--silent', '--show-error', '--max-time',
        '20', f'http://{flow.SERVER}:{flow.HTTP_PORT}/boot.ipxe').stdout
    assert fetched == '#!ipxe\necho from Ironic\n'
    lab_checks.assert_two_networks(lab.topology.prefix)


def test_without_net_raw_in_the_bounding_set_the_pod_says_why(pod_lab):
    spec = agent_pod.container_spec()
    spec = dataclasses.replace(spec, add=('NET_BIND_SERVICE',))
    with pytest.raises(agent_pod.PodError) as info:
        pod_lab.start(spec)
    message = str(info.value)
    # What the kernel said, and why.
    assert 'operation not permitted' in message.lower()
    assert 'capabilities.add lacks NET_RAW' in message


def test_a_shell_first_needs_privilege_escalation_allowed(pod_lab):
    # What metal3.rst advises when a wrapper must run before the agent:
    # the shell drops the runtime's capabilities, and with no_new_privs
    # off the agent's interpreter takes them back from its file
    # capabilities, still only the two of the bounding set.
    spec = dataclasses.replace(
        agent_pod.container_spec(), allow_privilege_escalation=True,
        command=('/bin/sh', '-c', 'exec "$0" "$@"', AGENT))
    pod = pod_lab.start(spec)
    status = _status(pod.agent_pid())
    assert status['NoNewPrivs'] == '0'
    assert int(status['CapEff'], 16) == TWO_CAPABILITIES


def test_no_privilege_escalation_behind_a_shell_says_why(pod_lab):
    spec = dataclasses.replace(
        agent_pod.container_spec(), allow_privilege_escalation=False,
        command=('/bin/sh', '-c', 'exec "$0" "$@"', AGENT))
    with pytest.raises(agent_pod.PodError) as info:
        pod_lab.start(spec)
    message = str(info.value)
    assert ('allowPrivilegeEscalation is false and the container runs '
            '/bin/sh before the agent') in message
    # The agent's own one line about the port it could not bind.
    assert 'vmetal-dhcp-agent: error:' in message


def test_full_flow_with_the_agent_image(tmp_path, kube_cluster, admin,
                                        host_namespace, cluster_objects,
                                        image):
    """``vmetal-lab --full --agent-image`` on the Metal3 flow of
    test_lab_full_metal3.py: the host inspected, claimed, deployed and
    booted from disk with the agent answering from its pod."""
    from tests.functional.k8s import test_lab_full_metal3 as metal3
    namespace = host_namespace
    scope = f'im{os.urandom(3).hex()}'
    cluster_objects('nodeproviders', node_provider(namespace, 'lab', {
        props.NETWORK_CIDR: f'{flow.SERVER}/{flow.PREFIX}',
        props.NETWORK_IP_RANGE: flow.IP_RANGE,
        props.DNS_SERVERS: flow.SERVER}))
    mac = flow.random_mac()
    admin.create_host(namespace, metal3.HOST, mac,
                      labels={'tier': namespace})
    config = metal3._store_config(tmp_path / 'store.conf', kube_cluster,
                                  namespace, scope)
    proc = subprocess.Popen(
        [metal3.LAB, '--full', '--json', '--agent-image', '--workdir',
         str(tmp_path / 'lab'), '--store-config', str(config),
         '--node-name', f'{namespace}~{metal3.HOST}', '--mac', mac],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(metal3.RUN_TIMEOUT, proc.terminate)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if 'ok ' in line and '. inspected:' in line:
                metal3._claim(admin, namespace)
        err = proc.stderr.read()
        proc.wait(120)
    finally:
        timer.cancel()
        lab_checks.stop_if_running(proc, 120)
        metal3.forget_run(admin, scope, mac)
    output = ''.join(lines) + err
    # Kept beside the lab's logs: the phase times of a passing run too.
    (tmp_path / 'lab-output.txt').write_text(output)
    assert proc.returncode == 0, output
    summary = json.loads(lines[-1])
    assert summary['ok'] is True and summary['agent'] == 'image'
    assert summary['os_address'] == summary['allocated_address']
    assert '. vmetal-dhcp-agent (image): ' in output
    prefix = lab_checks.run_prefix(output)
    assert lab_checks.full_lab_leftovers(prefix) == set()
    assert not [name for name in _podman_names()
                if name.startswith(prefix)]
