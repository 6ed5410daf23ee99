"""Everything the full lab flow runs, set up and torn down.

Topology (namespaces and links named with the lab's random prefix):

* hub namespace: bridge ``br0``;
* server namespace, 192.0.2.1/24 on the bridge: Ironic (API + conductor,
  SQLite) on 192.0.2.1:6385, sushy-tools' Redfish emulator on the
  namespace's loopback, vmetal-dhcp-agent (DHCP, TFTP, RA) and the HTTP
  server of Ironic's http_root; the machine's ramdisk reaches Ironic and
  the conductor reaches the ramdisk's agent on the lab L2 only;
* the root namespace: libvirtd (started by the lab when none answers), a
  bridge without any address wired to ``br0`` by a veth pair, the QEMU
  domain's tap on it, and a relay from 127.0.0.1 to Ironic's API.

Ironic runs the stock ``redfish`` hardware type as baremetal-operator
registers it: Redfish power and management, iPXE boot, the built-in
``agent`` inspection, ``direct`` deploy, the ``noop`` network interface,
and ``[dhcp]dhcp_provider = vmetal`` answered by vmetal-dhcp-agent (or
Ironic's dnsmasq provider, see :mod:`vmetal_ironic.lab.full_dhcp`).

The store is the local one in the work directory, or a Kubernetes store
given by ``--store-config`` (:func:`load_store_config`): its API server on
the host's 127.0.0.1 is relayed into the server namespace on the same
address and port (:func:`vmetal_ironic.lab.proxy.start_outward`), where
the conductor and the agent reach it with the configuration unchanged.
"""

import configparser
import os
import pathlib
import shutil
import urllib.parse

from vmetal_ironic.lab import build as lab_build
from vmetal_ironic.lab import debian
from vmetal_ironic.lab import flow
from vmetal_ironic.lab import ipam_controller
from vmetal_ironic.lab import ironic as lab_ironic
from vmetal_ironic.lab import libvirt
from vmetal_ironic.lab import netns
from vmetal_ironic.lab import proxy
from vmetal_ironic.lab import redfish
from vmetal_ironic.store import local

STORE_SECTIONS = ('vmetal', 'vmetal_kubernetes')
LOOPBACK = ('127.0.0.1', 'localhost')

API_PORT = 6385
API_URL = f'http://{flow.SERVER}:{API_PORT}'
IMAGE_PATH = 'lab-images'
REQUIRED = ('virsh', 'qemu-img', 'debootstrap', 'mkfs.vfat', 'mcopy',
            'sgdisk', 'grub-mkimage', 'zstd', 'cpio', 'genisoimage')


def preflight():
    """The quick lab's checks plus what the full flow needs.

    :raises vmetal_ironic.lab.flow.LabError: naming what is missing.
    """
    flow.preflight()
    missing = [cmd for cmd in REQUIRED if shutil.which(cmd) is None]
    if not redfish.EMULATOR.exists():
        missing.append('sushy-emulator (sushy-tools)')
    if missing:
        raise flow.LabError(f'missing {", ".join(missing)}; run '
                            'tools/install-deps lab')


def load_store_config(path):
    """The ``[vmetal]`` and ``[vmetal_kubernetes]`` sections of ``path``.

    :returns: ``{section: {option: value}}`` as written.
    :raises vmetal_ironic.lab.flow.LabError: unreadable, not a Kubernetes
        store, or an API server the lab cannot relay (not on loopback).
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        if not parser.read(path):
            raise flow.LabError(f'--store-config {path}: cannot read it')
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise flow.LabError(f'--store-config {path}: {first}') from None
    sections = {name: dict(parser[name]) for name in STORE_SECTIONS
                if parser.has_section(name)}
    store = sections.get('vmetal', {}).get('store')
    if store != 'kubernetes':
        raise flow.LabError(f'--store-config {path}: [vmetal]store is '
                            f'{store!r}; only kubernetes is supported')
    url = sections.get('vmetal_kubernetes', {}).get('api_url', '')
    parsed = urllib.parse.urlsplit(url)
    if parsed.hostname not in LOOPBACK or not parsed.port:
        raise flow.LabError(
            f'--store-config {path}: [vmetal_kubernetes]api_url {url!r} '
            'must be on 127.0.0.1 with a port (it is relayed into the '
            "lab's namespace on the same address)")
    return sections


def kubernetes_store(path):
    """A KubernetesStore configured from the file at ``path``."""
    # Imported here: the local flow needs no Kubernetes client.
    from oslo_config import cfg

    from vmetal_ironic.store import kubernetes
    conf = cfg.ConfigOpts()
    conf([], project='vmetal-ironic', default_config_files=[str(path)])
    return kubernetes.KubernetesStore(conf)


def ironic_sections(work, vmetal_db):
    """ironic.conf of the full flow, on top of the quick lab's."""
    work = pathlib.Path(work)
    sections = lab_ironic.default_sections(work, API_PORT, flow.SERVER,
                                           flow.HTTP_URL, vmetal_db)
    sections['DEFAULT'].update({
        'enabled_hardware_types': 'redfish',
        'enabled_bios_interfaces': 'no-bios',
        'enabled_boot_interfaces': 'ipxe',
        'enabled_console_interfaces': 'no-console',
        'enabled_deploy_interfaces': 'direct',
        'enabled_firmware_interfaces': 'no-firmware',
        'enabled_inspect_interfaces': 'agent,no-inspect',
        'enabled_management_interfaces': 'redfish',
        'enabled_network_interfaces': 'noop',
        'enabled_power_interfaces': 'redfish',
        'enabled_raid_interfaces': 'no-raid',
        'enabled_rescue_interfaces': 'no-rescue',
        'enabled_storage_interfaces': 'noop',
        'enabled_vendor_interfaces': 'no-vendor',
    })
    sections['api'] = {'host_ip': flow.SERVER, 'port': str(API_PORT)}
    sections['service_catalog'] = {'auth_type': 'none',
                                   'endpoint_override': API_URL}
    sections['conductor'].update({
        'automated_clean': 'true',
        'deploy_callback_timeout': '1800',
        'clean_callback_timeout': '1800',
        # Ironic unpacks a zstd ramdisk when it caches it: 93 MiB would
        # become 313 MiB for iPXE to fetch and hold in a 1 GiB machine,
        # and the kernel then found no room for it. The kernel unpacks
        # zstd itself.
        'disable_zstandard_decompression': 'true',
    })
    sections['deploy'].update({
        'default_boot_mode': 'uefi',
        # Cleaning erases partition tables only: shredding a disk under
        # TCG would take longer than the whole flow.
        'erase_devices_priority': '0',
        'erase_devices_metadata_priority': '10',
    })
    # Ironic keeps caches and agent certificates under /var/lib/ironic by
    # default: the lab keeps them in its own work directory, so that no
    # run reuses another's image cache (a cache hit skips the checksum).
    sections['agent'] = {'image_download_source': 'local',
                         'certificates_path': str(work / 'certificates')}
    sections['pxe'].update({
        'images_path': str(work / 'pxe-images'),
        'instance_master_path': str(work / 'master-images'),
    })
    sections['deploy']['iso_master_path'] = str(work / 'master-iso')
    sections['pxe']['kernel_append_params'] = 'console=ttyS0,115200'
    sections['inspector'] = {'power_off': 'true'}
    return sections


class Services:
    """Builds the images, then starts the lab's services in order.

    :param lab: the :class:`~vmetal_ironic.lab.full_flow.FullLab` (its
        ``workdir``, ``report``, ``mac``, ``dhcp``; this object sets its
        ``topology``, ``server_ns``, ``server_if``, ``ironic``, ``store``,
        ``store_sections``).
    :param store_config: path of a Kubernetes store's configuration
        (:func:`load_store_config`), or ``None`` for the local store.
    :param controller_config: with a Kubernetes store, the configuration
        of the vmetal-ipam-controller started beside Ironic (its own
        credentials); ``store_config`` when ``None``.
    """

    def __init__(self, lab, store_config=None, controller_config=None):
        self.lab = lab
        self.store_config = store_config
        # The controller's own file (its identity's token), else the
        # store's.
        self.controller_config = controller_config or store_config
        self.controller = None
        self.kube_sections = (load_store_config(store_config)
                              if store_config else None)
        self.daemons = libvirt.Daemons()
        self.bridge = None
        self.domain = None
        self.bmc = None

    def build_images(self):
        report = self.lab.report
        try:
            ipa, ipa_s, ipa_cached = lab_build.build('ipa', report.note)
            image, image_s, image_cached = lab_build.build('image',
                                                           report.note)
        except debian.BuildError as exc:
            raise flow.LabError(f'image build: {exc}') from None
        self.ipa_dir, self.image_dir = ipa, image

        def how(cached, seconds):
            return 'cached' if cached else f'built in {seconds:.0f}s'
        ramdisk_mib = (ipa / 'ramdisk').stat().st_size / 2**20
        image_mib = (image / 'image.qcow2').stat().st_size / 2**20
        report.done('images', f'IPA ramdisk {ramdisk_mib:.0f} MiB '
                    f'({how(ipa_cached, ipa_s)}), deploy image qcow2 '
                    f'{image_mib:.0f} MiB ({how(image_cached, image_s)})')
        return ipa_s + image_s

    def start_network(self):
        lab = self.lab
        lab.topology = netns.Topology(lab.workdir / 'net', prefix='vlab')
        lab.server_ns, lab.server_if = lab.topology.host(
            's', f'{flow.SERVER}/{flow.PREFIX}')
        try:
            started = self.daemons.ensure()
            self.bridge = libvirt.RootBridge(lab.topology)
            if self.bridge.addresses():
                raise flow.LabError(f'bridge {self.bridge.name} carries '
                                    f'{self.bridge.addresses()}')
            self.domain = libvirt.Domain(
                lab.workdir / 'machine', f'{lab.topology.prefix}-machine',
                self.bridge.name, lab.mac)
        except libvirt.LibvirtError as exc:
            raise flow.LabError(str(exc)) from None
        lab.report.done(
            'lab L2 and machine',
            f'server {flow.SERVER}/{flow.PREFIX} in {lab.server_ns}; '
            f'libvirtd {"started by the lab" if started else "running"}; '
            f'domain {self.domain.name} (TCG, q35, OVMF, 1 GiB, 4 GiB '
            f'disk) NIC {lab.mac} on root bridge {self.bridge.name} '
            '(no address) -> hub br0')

    def start_bmc(self):
        lab = self.lab
        try:
            self.bmc = redfish.Emulator(lab.topology, lab.server_ns,
                                        lab.workdir / 'net', self.domain)
        except redfish.RedfishError as exc:
            raise flow.LabError(str(exc)) from None
        lab.report.done('Redfish BMC', f'sushy-emulator {redfish.ADDRESS} '
                        f'in {lab.server_ns}, system {self.bmc.system_id}, '
                        'basic auth')

    def start_ironic(self):
        lab = self.lab
        work = lab.workdir / 'ironic'
        work.mkdir(parents=True, exist_ok=True)
        lab.vmetal_db = lab.workdir / 'vmetal.sqlite'
        sections = ironic_sections(work, lab.vmetal_db)
        if self.kube_sections:
            self._relay_kubernetes()
            sections.pop('vmetal_local_store')
            sections.update(self.kube_sections)
        lab.store_sections = {name: sections[name] for name in (
            'vmetal', 'vmetal_local_store', 'vmetal_kubernetes')
            if name in sections}
        lab.dhcp.configure(sections, work)
        port, _relay = proxy.start(lab.topology, lab.server_ns, flow.SERVER,
                                   API_PORT)
        lab.ironic = lab_ironic.IronicService(
            work, sections, port,
            command_prefix=['ip', 'netns', 'exec', lab.server_ns])
        try:
            lab.ironic.start()
        except RuntimeError as exc:
            raise flow.LabError(f'Ironic did not start: {exc}') from None
        lab.store = (kubernetes_store(self.store_config) if self.store_config
                     else local.LocalStore(path=str(lab.vmetal_db)))
        images = lab.ironic.images
        for name in ('kernel', 'ramdisk'):
            shutil.copy(self.ipa_dir / name, images / f'ipa-{name}')
        served = work / 'http' / IMAGE_PATH
        served.mkdir(parents=True, exist_ok=True)
        os.symlink(self.image_dir / 'image.qcow2', served / 'image.qcow2')
        store = (f'Kubernetes store {self.api_url()} (relayed into '
                 f'{lab.server_ns})' if self.kube_sections else 'local store')
        lab.report.done('Ironic', f'API {API_URL} (host: {lab.ironic.url}), '
                        'hardware type redfish, ipxe boot, agent inspect, '
                        f'direct deploy, {lab.dhcp.description}, {store}')

    def start_controller(self):
        """With a Kubernetes store, start vmetal-ipam-controller: Ironic
        only calls the store; following the claims and releasing
        addresses is the controller's."""
        if not self.store_config:
            return
        lab = self.lab
        self.controller = ipam_controller.ControllerProcess(
            self.controller_config, lab.workdir)
        pid = self.controller.start()
        lab.report.done('vmetal-ipam-controller',
                        f'pid {pid}, log {self.controller.log}')

    def api_url(self):
        return self.kube_sections['vmetal_kubernetes']['api_url']

    def _relay_kubernetes(self):
        port = urllib.parse.urlsplit(self.api_url()).port
        try:
            proxy.start_outward(self.lab.topology, self.lab.server_ns, port)
        except OSError as exc:
            raise flow.LabError(f'relay of {self.api_url()}: {exc}') from None

    def image_url(self, name='image.qcow2'):
        return f'{flow.HTTP_URL}/{IMAGE_PATH}/{name}'

    def image_sha256(self):
        return (self.image_dir / 'image.qcow2.sha256').read_text().strip()

    def close(self):
        if self.controller is not None:
            self.controller.stop()
        if self.domain is not None:
            self.domain.close()
        if self.bridge is not None:
            self.bridge.close()
        self.daemons.stop()
