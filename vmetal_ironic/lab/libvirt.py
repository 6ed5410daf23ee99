"""libvirt for the lab: the daemons, a bridge and one QEMU domain.

There is no systemd here, so when libvirtd does not answer the lab starts
``virtlogd`` and ``libvirtd`` itself, and the last lab running stops them
again by PID (:class:`Daemons`). The domain's NIC sits on a bridge libvirt can reach: one in the
root namespace, named with the lab's random prefix and carrying no address
at all (IPv6 is switched off on it, so not even a link-local one: the
host's own network must never see lab traffic), with a veth pair into the
lab's hub namespace. libvirt's ``default`` network is left alone.

The domain runs under TCG (KVM fails on these machines) with OVMF; its
QEMU process runs as root (a static DAC label) so that files in the lab's
private work directory need no relabelling.
"""

import contextlib
import fcntl
import os
import pathlib
import shutil
import signal
import subprocess
import time
import uuid
from xml.etree import ElementTree
from xml.sax import saxutils

from vmetal_ironic.lab import netns

URI = 'qemu:///system'
OVMF_CODE = pathlib.Path('/usr/share/OVMF/OVMF_CODE_4M.fd')
OVMF_VARS = pathlib.Path('/usr/share/OVMF/OVMF_VARS_4M.fd')
READY_TIMEOUT = 60.0
# Shared by every lab on the machine (see Daemons); libvirtd first.
SHARED_STATE = pathlib.Path('/run/vmetal-ironic-lab/libvirt')
DAEMONS = ('libvirtd', 'virtlogd')

DOMAIN = """\
<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>{code}</loader>
    <nvram template='{vars}'>{nvram}</nvram>
    <boot dev='network'/>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <source bridge='{bridge}'/>
      <mac address='{mac}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <serial type='file'>
      <source path='{serial}' append='on'/>
      <target port='0'/>
    </serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
</domain>
"""


def domain_xml(**values):
    """The domain definition with ``values`` XML-escaped into it."""
    quotes = {"'": '&apos;', '"': '&quot;'}
    return DOMAIN.format(**{key: saxutils.escape(str(value), quotes)
                            for key, value in values.items()})


def boot_devices(xml):
    """Boot devices of a domain definition, first first: ``hd``, ``network``.

    sushy-tools writes per-device ``<boot order=…/>`` (a disk or NIC
    left out is not booted); ``<os><boot dev=…/>`` is the older form.
    """
    try:
        # Our own libvirtd's dump of the domain we defined.
        root = ElementTree.fromstring(xml)  # noqa: S314
    except ElementTree.ParseError:
        return []
    ordered = []
    for kind, name in (('disk', 'hd'), ('interface', 'network')):
        for device in root.findall(f'devices/{kind}'):
            boot = device.find('boot')
            if boot is not None and boot.get('order', '').isdigit():
                ordered.append((int(boot.get('order')), name))
    if ordered:
        return [name for _order, name in sorted(ordered)]
    return [boot.get('dev') for boot in root.findall('os/boot')]


class LibvirtError(Exception):
    """libvirt is missing or refused a request; the message says which."""


def virsh(*argv, timeout=60, check=True):
    """Run ``virsh -c qemu:///system ...``.

    :raises LibvirtError: it failed and ``check`` is set.
    """
    try:
        result = subprocess.run(['virsh', '-q', '-c', URI, *argv],
                                capture_output=True, text=True,
                                timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LibvirtError(f'virsh {argv[0]}: {exc}') from None
    if check and result.returncode != 0:
        raise LibvirtError(f'virsh {" ".join(argv[:2])}: '
                           f'{result.stderr.strip()}')
    return result.stdout


class Daemons:
    """virtlogd and libvirtd, started by the first lab that needs them and
    stopped by the last one.

    Labs run side by side (several test runs on one machine) and share the
    one system libvirtd. Each lab registers itself in ``state_dir`` (a file
    named by its PID, under an flock); the daemons a lab started (their PID
    files are in ``state_dir`` too) are stopped only when no live lab is
    registered any more, so the end of one lab never takes libvirtd away
    from another lab's running domain. A libvirtd no lab started (the
    system's own) is never stopped. A lab killed without clean-up leaves a
    dead PID, which the next registration ignores.

    :param state_dir: where registrations and PID files live (tmpfs).
    """

    def __init__(self, state_dir=SHARED_STATE):
        self.state = pathlib.Path(state_dir)
        self.users = self.state / 'users'
        self.registered = False

    @contextlib.contextmanager
    def _locked(self):
        self.users.mkdir(parents=True, exist_ok=True)
        with open(self.state / 'lock', 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def live_users(self):
        """PIDs of the labs registered and still running."""
        live = []
        for path in self.users.iterdir():
            try:
                pid = int(path.name)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                path.unlink(missing_ok=True)
                continue
            except PermissionError:
                pass
            live.append(pid)
        return live

    def answering(self):
        try:
            virsh('version', timeout=15)
        except LibvirtError:
            return False
        return True

    def ensure(self):
        """Register this lab and make libvirtd answer.

        :returns: ``True`` when this lab started the daemons.
        :raises LibvirtError: not installed or not ready in time.
        """
        with self._locked():
            (self.users / str(os.getpid())).touch()
            self.registered = True
            if self.answering():
                return False
            self._start()
            return True

    def _start(self):
        for daemon in DAEMONS:
            if shutil.which(daemon) is None and not os.path.exists(
                    f'/usr/sbin/{daemon}'):
                raise LibvirtError(f'{daemon} is not installed; run '
                                   'tools/install-deps lab')
        for daemon in reversed(DAEMONS):
            subprocess.run([f'/usr/sbin/{daemon}', '-d', '--pid-file',
                            str(self.state / f'{daemon}.pid')], check=True,
                           capture_output=True, timeout=30)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.answering():
                return
            time.sleep(1)
        raise LibvirtError(f'libvirtd did not answer within '
                           f'{READY_TIMEOUT:.0f}s of its start')

    def stop(self):
        """Unregister; the last lab out stops the daemons a lab started
        (libvirtd first).

        :returns: ``True`` when it stopped them.
        """
        if not self.registered:
            return False
        with self._locked():
            (self.users / str(os.getpid())).unlink(missing_ok=True)
            self.registered = False
            if self.live_users():
                return False
            stopped = False
            for daemon in DAEMONS:
                stopped |= self._stop_daemon(daemon)
            return stopped

    def _stop_daemon(self, daemon):
        pid_file = self.state / f'{daemon}.pid'
        try:
            pid = int(pid_file.read_text().strip())
            # A stale file may name a reused PID: only ever kill the daemon.
            comm = pathlib.Path(f'/proc/{pid}/comm').read_text().strip()
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            return False
        pid_file.unlink(missing_ok=True)
        if comm != daemon:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
        return True


class RootBridge:
    """A root-namespace bridge without any address, wired to the hub.

    :param topology: the lab's :class:`~vmetal_ironic.lab.netns.Topology`.
    """

    def __init__(self, topology):
        self.topology = topology
        self.name = f'{topology.prefix}lb'
        self.outer = f'{topology.prefix}lv'
        inner = f'{topology.prefix}lh'
        netns.run('ip', 'link', 'add', self.name, 'type', 'bridge',
                  'forward_delay', '0')
        self._no_ipv6(self.name)
        netns.run('ip', 'link', 'add', self.outer, 'type', 'veth', 'peer',
                  'name', inner)
        self._no_ipv6(self.outer)
        netns.run('ip', 'link', 'set', inner, 'netns', topology.hub)
        netns.run('ip', '-n', topology.hub, 'link', 'set', inner, 'master',
                  'br0', 'up')
        netns.run('ip', 'link', 'set', self.outer, 'master', self.name, 'up')
        netns.run('ip', 'link', 'set', self.name, 'up')

    @staticmethod
    def _no_ipv6(device):
        with open(f'/proc/sys/net/ipv6/conf/{device}/disable_ipv6', 'w') as f:
            f.write('1')

    def addresses(self):
        """Addresses on the bridge (there must be none)."""
        out = netns.run('ip', '-o', 'addr', 'show', 'dev', self.name,
                        check=False).stdout
        return [line.split()[3] for line in out.splitlines()]

    def close(self):
        for device in (self.outer, self.name):
            netns.run('ip', 'link', 'del', device, check=False)


class Domain:
    """One lab machine: a qcow2 disk, OVMF NVRAM and a serial log.

    :param workdir: directory for its disk, NVRAM and serial log.
    :param name: the domain name (the lab's random prefix in it).
    :param bridge: bridge of its NIC.
    :param mac: its NIC's MAC.
    """

    def __init__(self, workdir, name, bridge, mac, memory_mib=1024,
                 disk_gib=4):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.uuid = str(uuid.uuid4())
        self.mac = mac
        self.serial = self.workdir / 'serial.log'
        self.disk = self.workdir / 'disk.qcow2'
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2',
                        str(self.disk), f'{disk_gib}G'], check=True,
                       timeout=30)
        self.serial.touch()
        values = {'name': name, 'uuid': self.uuid, 'memory': memory_mib,
                  'code': OVMF_CODE, 'vars': OVMF_VARS,
                  'nvram': self.workdir / 'OVMF_VARS.fd', 'disk': self.disk,
                  'bridge': bridge, 'mac': mac, 'serial': self.serial}
        xml = domain_xml(**values)
        (self.workdir / 'domain.xml').write_text(xml)
        virsh('define', str(self.workdir / 'domain.xml'))
        self.defined = True

    def state(self):
        return virsh('domstate', self.name, check=False).strip()

    def boot_devices(self):
        """The boot devices of the domain's definition, in order."""
        return boot_devices(virsh('dumpxml', '--inactive', self.name,
                                  check=False))

    def serial_text(self):
        return self.serial.read_text(errors='replace')

    def close(self):
        """Power off and undefine the domain (with its NVRAM)."""
        if not self.defined:
            return
        virsh('destroy', self.name, check=False)
        virsh('undefine', '--nvram', self.name, check=False)
        self.defined = False
