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

With ``--two-networks`` the server namespace is on a cluster network of
its own instead (a veth pair, 203.0.113.0/24, Ironic on 203.0.113.1) with
no address in and no route toward the lab L2; vmetal-dhcp-agent runs in a
namespace of its own with one leg on each network (192.0.2.1 on the lab
L2, 203.0.113.2 on the cluster network, ``net.ipv4.ip_forward = 0``) and
bridges them (``[vmetal_bridge]``): Ironic is configured with its own
URLs (``http://203.0.113.1:8080`` and ``:6385``), the machine reaches it
through the agent at the same URLs as on one L2 (``http://192.0.2.1:8080``
and ``:6385``, which the agent puts in place of Ironic's in what crosses),
and the conductor reaches the ramdisk through the agent's callback proxy
on 203.0.113.2:8081.

Ironic's API across two networks is served over TLS by default, as Metal3
serves it (``ironic_api='https'``): a certificate for 203.0.113.1 and
127.0.0.1 from a CA of the run's own (:mod:`vmetal_ironic.lab.tls`), which
every caller of the API checks: the agent's bridge
(``[vmetal_bridge]ca_file``) and the lab's own client (through the relay
on the host's 127.0.0.1). What the machine is told stays plain HTTP on
the lab L2 (the agent's ``http://192.0.2.1:6385``). ``ironic_api='http'``
keeps it plain; on one L2 it is always plain (the ramdisk calls the API
itself there, with no CA of the run's).

The store is the local one in the work directory, or a Kubernetes store
given by ``--store-config`` (:func:`load_store_config`): its API server on
the host's 127.0.0.1 is relayed into the server namespace (and the
agent's, when it has its own) on the same address and port
(:func:`vmetal_ironic.lab.proxy.start_outward`), where the conductor and
the agent reach it with the configuration unchanged.
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
from vmetal_ironic.lab import tls
from vmetal_ironic.store import local

STORE_SECTIONS = ('vmetal', 'vmetal_kubernetes')
LOOPBACK = ('127.0.0.1', 'localhost')

API_PORT = 6385
API_URL = f'http://{flow.SERVER}:{API_PORT}'
# The cluster network of the two-network lab.
CLUSTER_PREFIX = 24
IRONIC_CLUSTER = '203.0.113.1'
AGENT_CLUSTER = '203.0.113.2'
TOPOLOGIES = ('same-l2', 'two-networks')
#: How Ironic's API is served: ``--ironic-api``.
API_SCHEMES = ('http', 'https')
IMAGE_PATH = 'lab-images'
#: How often the conductor looks at the power state after the ramdisk's
#: soft power-off, in both topologies. Ironic's default looks every 5 s: a
#: machine that is off just after a look is seen up to 5 s later, and the
#: ~25 s from the written image to the boot from disk moved with where
#: the looks fell (Ironic's log). Looking every second keeps the wait's
#: bound (30 s, as 6 x 5 s) and costs one BMC request a second per node
#: in that step only, which a real deployment can afford as well.
#: Not set, because Ironic would not read them: ``[agent]
#: command_wait_interval`` and ``command_wait_attempts`` (the 6 s looks
#: at install_bootloader) are read in a decorator when Ironic imports its
#: agent client, before its configuration is parsed. IPA's forced
#: heartbeat after a command (up to 5 s, ``min_heartbeat_interval`` in
#: IPA's code) has no setting either.
AGENT_POLLING = {
    'post_deploy_get_power_state_retry_interval': '1',
    'post_deploy_get_power_state_retries': '30',
}
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


def default_ironic_api(two_networks):
    """The scheme of Ironic's API when ``--ironic-api`` is not given:
    https across two networks (Metal3's shape), http on one L2."""
    return API_SCHEMES[bool(two_networks)]


def ironic_api_url(address, api_ca=None):
    """Ironic's API on ``address`` as its callers name it: https when
    ``api_ca`` (the CA file its certificate comes from) is given."""
    return f'{"https" if api_ca else "http"}://{address}:{API_PORT}'


def bridge_cache_budget(*files):
    """``cache_max_bytes`` for copies of ``files`` (the IPA kernel and
    ramdisk, the deploy image): twice their size, so that a rebuilt file
    fills beside the copy still being sent and nothing the flow boots
    twice is evicted. A file Ironic serves larger (the image converted to
    raw) is relayed."""
    return 2 * sum(pathlib.Path(path).stat().st_size for path in files)


def bridge_conf(callback_tls=None, api_ca=None, cache_dir=None,
                cache_max_bytes=None):
    """The agent's ``[vmetal_bridge]`` in the two-network lab: Ironic on
    the cluster network, the same URLs as on one L2 for the machine.

    :param callback_tls: the :class:`~vmetal_ironic.lab.tls.Issued`
        certificate of the callback listener, or ``None`` for plain HTTP.
    :param api_ca: the CA file of Ironic's API certificate, which the
        agent checks it with; ``None``: Ironic's API is plain HTTP.
    :param cache_dir: the directory of the bridge's copies of the HTTP
        root (as the two-networks overlay sets it), or ``None``: none.
    :param cache_max_bytes: their budget (with ``cache_dir``).
    """
    text = (f'[vmetal_bridge]\n'
            f'enabled = true\n'
            f'ironic_http_url = http://{IRONIC_CLUSTER}:{flow.HTTP_PORT}\n'
            f'ironic_api_url = {ironic_api_url(IRONIC_CLUSTER, api_ca)}\n'
            f'http_port = {flow.HTTP_PORT}\n'
            f'api_port = {API_PORT}\n'
            f'callback_address = {AGENT_CLUSTER}\n')
    if callback_tls is not None:
        text += (f'callback_cert_file = {callback_tls.cert_file}\n'
                 f'callback_key_file = {callback_tls.key_file}\n')
    if api_ca is not None:
        text += f'ca_file = {api_ca}\n'
    if cache_dir is not None:
        text += (f'cache_dir = {cache_dir}\n'
                 f'cache_max_bytes = {cache_max_bytes}\n')
    return text


def ironic_sections(work, vmetal_db, api_address=flow.SERVER,
                    agent_ca=None, api_tls=None):
    """ironic.conf of the full flow, on top of the quick lab's.

    ``api_address`` is where Ironic's API and HTTP server listen, and
    ``[deploy]http_url`` and ``[service_catalog]endpoint_override`` are
    Ironic's own URLs there: on one L2 the machine uses them as they are;
    with two networks the agent's bridge translates them into its own
    (192.0.2.1) wherever they reach the machine. The TFTP server is the
    agent's address either way. ``agent_ca`` is the CA file of the
    agent's callback listener across two networks (``None``: it serves
    plain HTTP). ``api_tls`` is the :class:`~vmetal_ironic.lab.tls.Issued`
    certificate Ironic's API serves TLS with (``None``: plain HTTP).
    """
    work = pathlib.Path(work)
    sections = lab_ironic.default_sections(
        work, API_PORT, flow.SERVER, f'http://{api_address}:{flow.HTTP_PORT}',
        vmetal_db)
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
    sections['api'] = {'host_ip': api_address, 'port': str(API_PORT)}
    if api_tls is not None:
        sections['api'].update({'enable_ssl_api': 'true',
                                'cert_file': str(api_tls.cert_file),
                                'key_file': str(api_tls.key_file)})
    sections['service_catalog'] = {
        'auth_type': 'none',
        'endpoint_override': ironic_api_url(
            api_address, api_tls and api_tls.ca_file)}
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
    sections['agent'].update(AGENT_POLLING)
    if api_address != flow.SERVER and agent_ca is not None:
        # Across two networks the conductor reaches the ramdisk through the
        # agent's callback listener, over TLS checked against the lab's
        # CA: require_tls (Ironic 39's default, True) holds. The agent
        # removes the ramdisk's own certificate from the heartbeat, so
        # nothing per node overrides this.
        sections['agent']['verify_ca'] = str(agent_ca)
    elif api_address != flow.SERVER:
        # A plain-HTTP callback listener: Ironic 39 refuses its URL unless
        # TLS is not required.
        sections['agent']['require_tls'] = 'false'
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
    :param two_networks: Ironic on a cluster network of its own, the agent
        between it and the lab L2.
    :param controller_config: with a Kubernetes store, the configuration
        of the vmetal-ipam-controller started beside Ironic (its own
        credentials); ``store_config`` when ``None``.
    :param ironic_api: ``http`` or ``https`` (:data:`API_SCHEMES`), how
        Ironic's API is served; :func:`default_ironic_api` when ``None``.
    :raises vmetal_ironic.lab.flow.LabError: https on one L2.
    """

    def __init__(self, lab, store_config=None, two_networks=False,
                 controller_config=None, ironic_api=None):
        self.lab = lab
        self.store_config = store_config
        self.two_networks = two_networks
        self.topology = TOPOLOGIES[two_networks]
        self.ironic_api = ironic_api or default_ironic_api(two_networks)
        if self.ironic_api not in API_SCHEMES:
            raise flow.LabError(f'--ironic-api {self.ironic_api!r}: one of '
                                f'{", ".join(API_SCHEMES)}')
        if self.ironic_api == 'https' and not two_networks:
            raise flow.LabError(
                '--ironic-api https needs --two-networks: on one L2 the '
                "ramdisk calls Ironic's API itself and has no CA of the "
                "run's to check it with")
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
        self.callback_tls = None
        #: The certificate of Ironic's API (``ironic_api == 'https'``).
        self.api_tls = None

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

    def _downloaded(self):
        """The files the machine downloads through the bridge: the IPA
        kernel and ramdisk, the deploy image (before Ironic converts it)."""
        return (self.ipa_dir / 'kernel', self.ipa_dir / 'ramdisk',
                self.image_dir / 'image.qcow2')

    def _two_networks(self):
        """Ironic's namespace on the cluster network only, the agent's on
        both; nothing routes between them."""
        lab = self.lab
        lab.server_ns = lab.topology.namespace('s')
        if lab.agent_pod is not None:
            # --agent-image: the agent's pod, net1 attached by its CNI
            # plugin; the leg wired below stands in for its cluster
            # network's eth0.
            lab.agent_ns = lab.agent_pod.make_pod(lab)
            lab.server_if = 'net1'
        else:
            lab.agent_ns, lab.server_if = lab.topology.host(
                'a', f'{flow.SERVER}/{flow.PREFIX}')
        lab.topology.wire(lab.agent_ns, lab.server_ns,
                          f'{AGENT_CLUSTER}/{CLUSTER_PREFIX}',
                          f'{IRONIC_CLUSTER}/{CLUSTER_PREFIX}')
        # A new namespace starts with forwarding off; say so anyway, so
        # that the bridge is the only way across by construction.
        lab.topology.exec(lab.agent_ns, 'sysctl', '-qw',
                          'net.ipv4.ip_forward=0')
        lab.http_address = IRONIC_CLUSTER
        # The callback listener's certificate, from a CA of the run's own
        # that Ironic trusts by [agent]verify_ca.
        self.callback_tls = tls.issue(lab.workdir / 'tls', [AGENT_CLUSTER],
                                      label='callback')
        if self.ironic_api == 'https':
            # Ironic's API as Metal3 serves it: TLS, a certificate for the
            # address the agent connects to and for the host's 127.0.0.1,
            # where the lab's client reaches it through its relay.
            self.api_tls = tls.issue(lab.workdir / 'tls',
                                     [IRONIC_CLUSTER, '127.0.0.1'],
                                     label='ironic')
        # The bridge keeps copies of what the machine downloads, as the
        # two-networks overlay does (an --agent-image pod gets the
        # directory mounted where the overlay mounts its emptyDir).
        lab.agent_extra = bridge_conf(
            self.callback_tls, self.api_tls and self.api_tls.ca_file,
            cache_dir=lab.workdir / 'bridge-cache',
            cache_max_bytes=bridge_cache_budget(*self._downloaded()))
        return (f'provisioning L2: agent {flow.SERVER}/{flow.PREFIX} in '
                f'{lab.agent_ns}; cluster network: Ironic '
                f'{IRONIC_CLUSTER}/{CLUSTER_PREFIX} in {lab.server_ns}, '
                f'agent {AGENT_CLUSTER} (ip_forward 0)')

    def start_network(self):
        lab = self.lab
        lab.topology = netns.Topology(lab.workdir / 'net', prefix='vlab')
        if self.two_networks:
            where = self._two_networks()
        else:
            lab.server_ns, lab.server_if = lab.topology.host(
                's', f'{flow.SERVER}/{flow.PREFIX}')
            where = f'server {flow.SERVER}/{flow.PREFIX} in {lab.server_ns}'
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
            f'{where}; '
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
        if lab.agent_pod is not None and not self.kube_sections:
            # Shared with the agent's pod, in a directory of its uid.
            lab.vmetal_db = lab.agent_pod.local_database(lab.workdir)
        sections = ironic_sections(
            work, lab.vmetal_db, self.api_address(),
            agent_ca=self.callback_tls and self.callback_tls.ca_file,
            api_tls=self.api_tls)
        if self.kube_sections:
            self._relay_kubernetes()
            sections.pop('vmetal_local_store')
            sections.update(self.kube_sections)
        lab.store_sections = {name: sections[name] for name in (
            'vmetal', 'vmetal_local_store', 'vmetal_kubernetes')
            if name in sections}
        lab.dhcp.configure(sections, work)
        port, _relay = proxy.start(lab.topology, lab.server_ns,
                                   self.api_address(), API_PORT)
        lab.ironic = lab_ironic.IronicService(
            work, sections, port,
            command_prefix=['ip', 'netns', 'exec', lab.server_ns])
        if self.api_tls is not None:
            lab.ironic.trust(self.api_tls.ca_file)
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
        checked = " (TLS, the run's CA)" if self.api_tls else ''
        listen = (f'API {sections["service_catalog"]["endpoint_override"]}'
                  f'{checked}, the machine\'s {API_URL} through the agent'
                  if self.two_networks else f'API {API_URL}')
        lab.report.done('Ironic', f'{listen} (host: {lab.ironic.url}), '
                        'hardware type redfish, ipxe boot, agent inspect, '
                        f'direct deploy, {lab.dhcp.description}, {store}')

    def api_address(self):
        """Where Ironic's API and HTTP server listen."""
        return IRONIC_CLUSTER if self.two_networks else flow.SERVER

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
            if self.lab.agent_ns:
                # The agent reads the store too, from its own namespace.
                proxy.start_outward(self.lab.topology, self.lab.agent_ns,
                                     port, log_name='proxy-out-agent.log')
        except OSError as exc:
            raise flow.LabError(f'relay of {self.api_url()}: {exc}') from None

    def image_url(self, name='image.qcow2'):
        """The instance image as the conductor fetches it (on the cluster
        network with two networks; it then serves it at http_url)."""
        return (f'http://{self.api_address()}:{flow.HTTP_PORT}/'
                f'{IMAGE_PATH}/{name}')

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
