"""Who answers the machine's DHCP in the full flow, and how it is observed.

* :class:`VmetalDhcp`: ``[dhcp]dhcp_provider = vmetal``; the provisioning
  hook allocates the address and writes the network data, and
  vmetal-dhcp-agent answers from the store's reservations.
* :class:`DnsmasqDhcp`: Ironic's own ``dnsmasq`` provider, as Metal3 users
  run it today: Ironic writes a host file per MAC and an option file per
  node, dnsmasq (in the server namespace) reads them, leases addresses from
  a dynamic range and serves iPXE by TFTP. Nothing allocates: the lab gives
  the installed OS a fixed address in the config drive's network_data, the
  way baremetal-operator passes a BareMetalHost's ``networkData``.

Both serve the same iPXE binaries from the same directory, so the phases
of the two runs compare like with like.
"""

import pathlib
import shutil

from vmetal_ironic import network_data
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.lab import flow
from vmetal_ironic.lab import netns
from vmetal_ironic.lab import observe

# Outside the dynamic range, where the ramdisk's leases come from.
DNSMASQ_OS_ADDRESS = '192.0.2.200'
DNSMASQ = 'dnsmasq'


class VmetalDhcp:
    """The product: the vmetal provider and vmetal-dhcp-agent."""

    name = 'vmetal'
    description = '[dhcp]dhcp_provider = vmetal, vmetal-dhcp-agent'

    def __init__(self, lab):
        self.lab = lab

    def configure(self, sections, work):
        """Change ironic.conf ``sections`` for this provider: none, unless
        the agent runs in its pod (``--agent-image``)."""
        if self.lab.agent_pod is not None:
            self.lab.agent_pod.configure(sections)

    def start(self):
        self.lab._start_agent()

    def acked(self):
        """DHCP ACKs to the machine's MAC seen so far."""
        return [line for line in observe.agent_exchanges(
            self.lab._agent_text(), self.lab.mac) if ' ACK ' in line]

    def published(self):
        """Whether the machine's MAC is served (a reservation)."""
        return bool([r for r in self.lab.store.list_reservations()
                     if r.mac == self.lab.mac])

    def os_address(self):
        """``(address, detail)`` the installed OS must come up with.

        :raises vmetal_ironic.lab.flow.LabError: no address allocated.
        """
        allocation = self.lab.store.get_allocation(self.lab.owner())
        if allocation is None:
            raise flow.LabError('the node is deploying but holds no address')
        return allocation.address, (f'from pool {allocation.pool_key} for '
                                    f'{allocation.owner}')

    def config_drive_network_data(self):
        """What the lab puts in the config drive (the hook adds it)."""
        return None

    def close(self):
        """The agent is stopped with the lab's topology."""


class DnsmasqDhcp:
    """Ironic's dnsmasq provider and a dnsmasq in the server namespace."""

    name = 'dnsmasq'
    description = '[dhcp]dhcp_provider = dnsmasq, dnsmasq'

    def __init__(self, lab):
        self.lab = lab
        self.root = pathlib.Path(lab.workdir) / 'dnsmasq'
        self.proc = None

    def configure(self, sections, work):
        for name in ('hosts', 'opts'):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        sections['dhcp'] = {'dhcp_provider': 'dnsmasq'}
        sections['dnsmasq'] = {
            'dhcp_hostsdir': str(self.root / 'hosts'),
            'dhcp_optsdir': str(self.root / 'opts'),
            'dhcp_leasefile': str(self.root / 'leases')}

    def argv(self, interface, tftp_root):
        """dnsmasq's command line: DHCP and TFTP only, no DNS."""
        low, high = flow.IP_RANGE.split('-')
        return [
            shutil.which(DNSMASQ) or DNSMASQ, '--keep-in-foreground',
            '--conf-file=/dev/null', '--port=0', '--user=root',
            '--bind-interfaces', f'--interface={interface}',
            f'--dhcp-range={low},{high},255.255.255.0,10m',
            f'--dhcp-leasefile={self.root / "leases"}',
            f'--dhcp-hostsdir={self.root / "hosts"}',
            f'--dhcp-optsdir={self.root / "opts"}',
            # Ironic's options name the "ipxe" tag for a second answer
            # that hands iPXE its script URL instead of the binary.
            '--dhcp-userclass=set:ipxe,iPXE', '--dhcp-match=set:ipxe,175',
            '--enable-tftp', f'--tftp-root={tftp_root}',
            '--log-dhcp', '--log-facility=-',
            f'--pid-file={self.root / "dnsmasq.pid"}']

    def start(self):
        lab = self.lab
        tftp_root = lab.workdir / 'tftpboot'
        tftp_root.mkdir(exist_ok=True)
        for name in ('snponly.efi', 'undionly.kpxe', 'ipxe.efi'):
            source = flow.IPXE_DIR / name
            if source.exists():
                shutil.copy(source.resolve(), tftp_root / name)
        self.log = lab.workdir / 'net' / 'dnsmasq.log'
        self.proc = lab.topology.spawn(
            lab.server_ns, self.argv(lab.server_if, tftp_root), 'dnsmasq.log')
        if not observe.wait_for(lambda: 'DHCP, IP range' in self._text(), 20,
                                failed=lambda: self.proc.poll() is not None):
            raise flow.LabError('dnsmasq did not start:\n'
                                + self._text()[-2000:])
        lab.report.done('dnsmasq', f'DHCP ({flow.IP_RANGE}) + TFTP on '
                        f'{lab.server_if}, host and option files from '
                        "Ironic's dnsmasq provider")

    def _text(self):
        return self.log.read_text(errors='replace') \
            if self.log.exists() else ''

    def acked(self):
        mac = self.lab.mac.lower()
        return [line for line in self._text().splitlines()
                if 'DHCPACK' in line and mac in line.lower()]

    def published(self):
        host_file = self.root / 'hosts' / f'ironic-{self.lab.mac}.conf'
        return host_file.exists() and 'ignore' not in host_file.read_text()

    def os_address(self):
        return DNSMASQ_OS_ADDRESS, 'given by the lab in the config drive'

    def config_drive_network_data(self):
        pool = ipam_pool.parse_pool(f'{flow.SERVER}/{flow.PREFIX}')
        return network_data.build(self.lab.mac, DNSMASQ_OS_ADDRESS, pool,
                                  [flow.SERVER])

    def close(self):
        if self.proc is not None:
            netns.Topology.stop(self.proc)


PROVIDERS = {VmetalDhcp.name: VmetalDhcp, DnsmasqDhcp.name: DnsmasqDhcp}
