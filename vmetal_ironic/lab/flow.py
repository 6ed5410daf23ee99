"""The lab's end-to-end flow, step by step.

Topology (all in namespaces this lab creates, documentation addresses):

* hub namespace: bridge ``br0``, the VM's tap device, QEMU;
* server namespace: 192.0.2.1/24 on the bridge — vmetal-dhcp-agent (DHCP,
  TFTP, router advertisements) and an HTTP server for Ironic's http_root;
* the host: Ironic (API + conductor, SQLite) on 127.0.0.1 with the vmetal
  network interface, DHCP provider and hook, and the local vmetal store.

Power is Ironic's ``fake`` interface, so the lab itself starts the VM once
Ironic has deployed the node, the way a BMC would power it on.
"""

import dataclasses
import os
import pathlib
import secrets
import shutil
import sys
import textwrap
import time

from vmetal_ironic import properties as props
from vmetal_ironic.lab import ironic as lab_ironic
from vmetal_ironic.lab import netns
from vmetal_ironic.lab import observe
from vmetal_ironic.lab import ramdisk as lab_ramdisk
from vmetal_ironic.store import local

SERVER = '192.0.2.1'
PREFIX = 24
HTTP_PORT = 8080
HTTP_URL = f'http://{SERVER}:{HTTP_PORT}'
IP_RANGE = '192.0.2.100-192.0.2.199'
IPXE_DIR = pathlib.Path('/usr/lib/ipxe')
OVMF_CODE = pathlib.Path('/usr/share/OVMF/OVMF_CODE_4M.fd')
OVMF_VARS = pathlib.Path('/usr/share/OVMF/OVMF_VARS_4M.fd')
AGENT = pathlib.Path(sys.executable).parent / 'vmetal-dhcp-agent'
REQUIRED_COMMANDS = ('ip', 'qemu-system-x86_64')
REQUIRED_FILES = (IPXE_DIR / 'snponly.efi', IPXE_DIR / 'undionly.kpxe',
                  OVMF_CODE, OVMF_VARS)
PROVISION_TIMEOUT = 120.0


class LabError(Exception):
    """A step could not be completed; the message says which and why."""


@dataclasses.dataclass
class StepResult:
    title: str
    detail: str
    seconds: float


class Report:
    """Prints each step as it completes and keeps them for the summary."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.steps = []
        self.started = time.monotonic()

    def done(self, title, detail):
        seconds = time.monotonic() - self.started
        self.steps.append(StepResult(title, detail, seconds))
        self.out.write(f'[{seconds:6.1f}s] ok  {len(self.steps):2d}. {title}: '
                       f'{detail}\n')
        self.out.flush()

    def note(self, text):
        self.out.write(f'           .. {text}\n')
        self.out.flush()


def preflight():
    """Refuse to start when root or a tool is missing.

    :raises LabError: naming what is missing and how to get it.
    """
    if os.geteuid() != 0:
        raise LabError('the lab needs root (network namespaces, tap devices)')
    missing = [cmd for cmd in REQUIRED_COMMANDS if shutil.which(cmd) is None]
    missing += [str(path) for path in REQUIRED_FILES if not path.exists()]
    if not AGENT.exists():
        missing.append(str(AGENT))
    if missing:
        raise LabError(f'missing {", ".join(missing)}; run '
                       'tools/install-deps lab')


def random_mac():
    return '52:54:00:' + ':'.join(f'{byte:02x}' for byte in
                                  secrets.token_bytes(3))


class Lab:
    """Everything the lab starts, so that :meth:`close` can remove it.

    :param workdir: directory for configuration, state and logs.
    :param report: a :class:`Report`.
    """

    #: ``--agent-image``: a :class:`vmetal_ironic.lab.agent_pod.LabAgent`
    #: that starts the agent from its image in a pod instead.
    agent_pod = None

    def __init__(self, workdir, report, boot_timeout=240.0):
        self.workdir = pathlib.Path(workdir)
        self.report = report
        self.boot_timeout = boot_timeout
        self.topology = None
        self.ironic = None
        self.store = None
        # The store's ironic.conf sections, shared by the agent; the local
        # store in the work directory unless a subclass sets them.
        self.store_sections = None
        self.mac = random_mac()
        # Where Ironic's HTTP server listens, and the agent's namespace and
        # extra configuration: the server namespace on the lab L2 unless a
        # two-network lab puts Ironic on a network of its own.
        self.http_address = SERVER
        self.agent_ns = None
        self.agent_extra = ''

    # -- set-up -----------------------------------------------------------

    def _start_network(self):
        self.topology = netns.Topology(self.workdir / 'net', prefix='vlab')
        self.server_ns, self.server_if = self.topology.host(
            's', f'{SERVER}/{PREFIX}')
        self.report.done(
            'provisioning L2',
            f'bridge in {self.topology.hub}, server {SERVER}/{PREFIX} in '
            f'{self.server_ns}')

    def _start_ironic(self):
        work = self.workdir / 'ironic'
        work.mkdir(parents=True, exist_ok=True)
        port = lab_ironic.free_port()
        self.vmetal_db = self.workdir / 'vmetal.sqlite'
        sections = lab_ironic.default_sections(work, port, SERVER, HTTP_URL,
                                               self.vmetal_db)
        self.ironic = lab_ironic.IronicService(work, sections, port)
        self.ironic.start()
        self.store = local.LocalStore(path=str(self.vmetal_db))
        self.report.done('Ironic', f'API {self.ironic.url}, '
                         'network interface vmetal, [dhcp]dhcp_provider = '
                         'vmetal, local store')

    def _start_http(self):
        root = self.workdir / 'ironic' / 'http'
        self.http_log = self.workdir / 'net' / 'http.log'
        proc = self.topology.spawn(
            self.server_ns,
            [sys.executable, '-u', '-m', 'http.server', '--bind',
             self.http_address, '--directory', str(root), str(HTTP_PORT)],
            'http.log')
        if not observe.wait_for(lambda: 'Serving HTTP' in self._http_text(),
                                15, failed=lambda: proc.poll() is not None):
            raise LabError(f'HTTP server did not start: {self._http_text()}')
        self.report.done('HTTP server', f'http://{self.http_address}:'
                         f'{HTTP_PORT} serves Ironic\'s '
                         'http_root (boot.ipxe, node configs, kernels)')

    def _start_agent(self):
        if self.agent_pod is not None:
            self.agent_pod.start(self)
            return
        tftp_root = self.workdir / 'tftpboot'
        tftp_root.mkdir(exist_ok=True)
        for name in ('snponly.efi', 'undionly.kpxe', 'ipxe.efi'):
            source = IPXE_DIR / name
            if source.exists():
                shutil.copy(source.resolve(), tftp_root / name)
        conf = self.workdir / 'vmetal-dhcp-agent.conf'
        store = self.store_sections or {
            'vmetal': {'store': 'local'},
            'vmetal_local_store': {'database': self.vmetal_db}}
        conf.write_text(lab_ironic.render_conf(store) + textwrap.dedent(f"""\
            [DEFAULT]
            debug = true
            [vmetal_dhcp_agent]
            interface = {self.server_if}
            server_address = {SERVER}
            poll_interval = 0.2
            send_ra = true
            no_pxedhcp = true
            metrics_host = 127.0.0.1
            [vmetal_tftp]
            root = {tftp_root}
            """) + self.agent_extra)
        self.agent_log = self.workdir / 'net' / 'agent.log'
        self.agent = self.topology.spawn(
            self.agent_ns or self.server_ns,
            [str(AGENT), '--config-file', str(conf)], 'agent.log')
        if not observe.wait_for(lambda: 'serving on' in self._agent_text(), 20,
                                failed=lambda: self.agent.poll() is not None):
            raise LabError('vmetal-dhcp-agent did not start:\n'
                           + self._agent_text()[-2000:])
        self.report.done('vmetal-dhcp-agent', f'DHCP+TFTP on {self.server_if} '
                         f'({SERVER}), RA and no-pxedhcp on')

    def _http_text(self):
        return self.http_log.read_text(errors='replace') \
            if self.http_log.exists() else ''

    def _agent_text(self):
        return self.agent_log.read_text(errors='replace') \
            if self.agent_log.exists() else ''

    # -- Ironic -----------------------------------------------------------

    def _enroll_and_deploy(self):
        try:
            self._enroll_and_deploy_node()
        except lab_ironic.IronicError as exc:
            raise LabError(str(exc)) from None

    def _enroll_and_deploy_node(self):
        node = self.ironic.enroll(
            self.mac, name='lab-node-0', driver='vmetal-manual-management',
            boot_interface='ipxe', deploy_interface='ramdisk',
            power_interface='fake', management_interface='fake',
            properties={props.NETWORK_CIDR: f'{SERVER}/{PREFIX}',
                        props.NETWORK_IP_RANGE: IP_RANGE,
                        props.DNS_SERVERS: SERVER})
        self.node_uuid = node['uuid']
        self.report.done('node enrolled',
                         f'{self.node_uuid} (vmetal-manual-management, ipxe '
                         f'boot, ramdisk deploy), port {self.mac}, pool '
                         f'{SERVER}/{PREFIX} range {IP_RANGE}')
        try:
            lab_ramdisk.build(self.ironic.images, f'{SERVER}:{HTTP_PORT}')
        except lab_ramdisk.RamdiskError as exc:
            raise LabError(str(exc)) from None
        node = self.ironic.deploy(
            self.node_uuid, {'kernel_append_params': 'console=ttyS0 quiet'},
            timeout=PROVISION_TIMEOUT)
        allocation = self.store.get_allocation(f'Node/{self.node_uuid}')
        if allocation is None:
            raise LabError('the node is active but holds no address')
        self.address = allocation.address
        self.report.done('address allocated',
                         f'{allocation.address}/{PREFIX} from pool '
                         f'{allocation.pool_key} for {allocation.owner}')
        reservations = [r for r in self.store.list_reservations()
                        if r.mac == self.mac]
        if not reservations:
            raise LabError('Ironic deployed the node but no DHCP reservation '
                           'was published')
        boot = reservations[0].boot
        network_data = node.get('network_data') or {}
        self.report.done(
            'node deployed',
            f'provision state active; reservation {self.mac} -> '
            f'{reservations[0].address}, firmware boot file {boot.bootfile}, '
            f'iPXE script {boot.ipxe_script_url}; node network_data has '
            f'{len(network_data.get("networks", []))} network(s)')

    # -- the machine ------------------------------------------------------

    def _boot_vm(self):
        tap = self.topology.tap()
        variables = self.workdir / 'OVMF_VARS.fd'
        shutil.copy(OVMF_VARS, variables)
        serial = self.workdir / 'net' / 'serial.log'
        argv = ['qemu-system-x86_64', '-accel', 'tcg', '-m', '512',
                '-nodefaults', '-display', 'none', '-vga', 'none',
                '-machine', 'pc,graphics=off', '-no-reboot',
                '-drive', f'if=pflash,format=raw,readonly=on,file={OVMF_CODE}',
                '-drive', f'if=pflash,format=raw,file={variables}',
                '-chardev', f'file,id=s0,path={serial}', '-serial',
                'chardev:s0',
                '-netdev', f'tap,id=n0,ifname={tap},script=no,downscript=no',
                # No option ROM: the UEFI firmware's own PXE client asks
                # first, so the TFTP chainload to iPXE really happens.
                '-device', f'virtio-net-pci,netdev=n0,mac={self.mac},romfile=']
        self.vm = self.topology.spawn(self.topology.hub, argv, 'qemu.log')
        self.vm_started = time.monotonic()
        self.report.done('VM powered on', f'QEMU (TCG, UEFI OVMF, virtio NIC '
                         f'without option ROM) with MAC {self.mac}')

    def _vm_died(self):
        return self.vm.poll() is not None

    def _expect(self, what, predicate):
        remaining = self.boot_timeout - (time.monotonic() - self.vm_started)
        found = observe.wait_for(predicate, max(remaining, 1.0),
                                 failed=self._vm_died)
        if not found:
            reason = 'the VM exited' if self._vm_died() else (
                f'not seen within {self.boot_timeout:.0f}s of power on')
            raise LabError(f'{what}: {reason}')
        return found

    def _since_power_on(self):
        return f'{time.monotonic() - self.vm_started:.1f}s after power on'

    def _watch_boot(self):
        mac, address = self.mac, self.address

        def acks(stage):
            return [line for line in observe.agent_exchanges(
                self._agent_text(), mac)
                if ' ACK ' in line and address in line and stage in line]

        self._expect('DHCP offer/ack from the agent',
                     lambda: acks('boot pxe'))
        self.report.done('DHCP (firmware PXE)',
                         f'agent ACKed {address} to {mac} with boot file '
                         f'snponly.efi, {self._since_power_on()}')
        self._expect('TFTP of snponly.efi', lambda: observe.tftp_reads(
            self._agent_text(), 'snponly.efi'))
        self.report.done('TFTP', f'snponly.efi read from the agent, '
                         f'{self._since_power_on()}')
        self._expect('DHCP of iPXE', lambda: acks('boot ipxe'))
        self.report.done('DHCP (iPXE)', f'agent ACKed {address} to iPXE with '
                         f'the script URL, {self._since_power_on()}')

        def requested(path_part):
            return [request for request in observe.http_requests(
                self._http_text()) if request[0] == address
                and path_part in request[1]]

        self._expect('iPXE fetching boot.ipxe', lambda: requested('boot.ipxe'))
        self._expect("iPXE fetching the node's config",
                     lambda: requested(f'/{self.node_uuid}/config')
                     or requested('pxelinux.cfg/'))
        self.report.done('iPXE script', f'{address} fetched /boot.ipxe and '
                         f"the node's own iPXE config from Ironic's "
                         f'http_root, {self._since_power_on()}')
        kernel = self._expect('kernel fetched', lambda: requested('kernel'))
        ramdisk = self._expect('ramdisk fetched', lambda: requested('ramdisk'))
        self.report.done('kernel and ramdisk', f'{address} fetched '
                         f'{kernel[0][1]} and {ramdisk[0][1]}, '
                         f'{self._since_power_on()}')
        report = self._expect('the booted ramdisk reporting its address',
                              lambda: requested(lab_ramdisk.REPORT_PATH))
        fields = dict(part.split('=', 1) for part in
                      report[0][1].split('/') if '=' in part)
        if fields.get('ip') != address or fields.get('router') != SERVER:
            raise LabError(f'the booted system reported {fields}, expected '
                           f'ip {address} router {SERVER}')
        self.report.done('booted system', f'Linux ramdisk got {fields["ip"]}'
                         f'/{fields.get("mask")} router {fields["router"]} dns '
                         f'{fields.get("dns")} by DHCP and reported it, '
                         f'{self._since_power_on()}')

    def _undeploy(self):
        netns.Topology.stop(self.vm)
        try:
            self.ironic.provision(self.node_uuid, 'deleted',
                                  timeout=PROVISION_TIMEOUT)
        except lab_ironic.IronicError as exc:
            raise LabError(str(exc)) from None
        left = [r for r in self.store.list_reservations() if r.mac == self.mac]
        allocation = self.store.get_allocation(f'Node/{self.node_uuid}')
        if left:
            raise LabError('the reservation outlived the undeploy')
        if allocation is None or allocation.address != self.address:
            raise LabError('the undeploy lost the machine\'s address')
        self.report.done('undeploy', f'reservation withdrawn; {self.address} '
                         'stays with the machine')

    def run(self):
        """Run every step; raises :class:`LabError` at the first failure."""
        self._start_network()
        self._start_ironic()
        self._start_http()
        self._start_agent()
        self._enroll_and_deploy()
        self._boot_vm()
        self._watch_boot()
        self._undeploy()

    def close(self):
        """Stop everything the lab started and delete its namespaces."""
        if self.ironic is not None:
            self.ironic.stop()
        if self.agent_pod is not None:
            # Before the topology: CNI DEL needs the bridge's namespace.
            self.agent_pod.close()
        if self.topology is not None:
            self.topology.close()
        if self.store is not None:
            self.store.close()
