"""Namespaces, servers and cleanup shared by the PXE benchmarks (root).

A hub namespace holds a bridge; a server namespace (198.18.0.1/15) and a
client namespace (198.18.0.2/15) hang off it. The server namespace runs
either vmetal-dhcp-agent or dnsmasq with the same reservations, so both
are measured in the same namespaces in the same run. Everything is removed
by PID and name on exit, also on failure.
"""

import os
import pathlib
import sys
import time

from vmetal_ironic.lab import netns

SERVER = '198.18.0.1'
CLIENT = '198.18.0.2'
PREFIX = 15
AGENT = str(pathlib.Path(sys.executable).parent / 'vmetal-dhcp-agent')


def sh(*argv, check=True, timeout=60):
    return netns.run(*argv, check=check, timeout=timeout)


def cpu_seconds(pid):
    """User + system CPU of process ``pid`` so far, all its threads
    (``ip netns exec`` execs the server, so the PID is the server's)."""
    fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)
    values = fields[1].split()
    return (int(values[11]) + int(values[12])) / os.sysconf('SC_CLK_TCK')


def resident_mib(pid):
    """Resident memory of process ``pid`` now, MiB."""
    for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return 0.0


def reserved(count):
    """``[(mac, address)]`` for ``count`` (up to 130,000) hosts in
    198.18.0.0/15: 250 a /24, from .2, past 198.18.255 into 198.19."""
    hosts = []
    for index in range(count):
        number = 10 + index
        third = number // 250
        address = (f'198.{18 + third // 256}.{third % 256}.'
                   f'{number % 250 + 2}')
        mac = '52:54:10:' + index.to_bytes(3, 'big').hex(':')
        hosts.append((mac, address))
    return hosts


class Lab(netns.Topology):
    """The benchmark topology: a server and a client namespace."""

    def __init__(self, workdir):
        super().__init__(workdir, prefix='vpx')
        self.server_ns, self.server_if = self.host(
            's', f'{SERVER}/{PREFIX}')
        self.client_ns, self.client_if = self.host(
            'c', f'{CLIENT}/{PREFIX}')
        self.files = []

    def close(self):
        super().close()
        for path in self.files:
            path.unlink(missing_ok=True)

    # -- servers ------------------------------------------------------------

    def start_agent(self, hosts, name, extra='', tftp_root=None,
                    tftp_extra='', start_timeout=60):
        """vmetal-dhcp-agent with ``hosts`` reserved in a fresh store.

        :param start_timeout: seconds the agent may take to serve.
        """
        from vmetal_ironic import reservation
        from vmetal_ironic.store import local

        db = self.workdir / f'{name}.sqlite'
        for suffix in ('', '-wal', '-shm'):
            pathlib.Path(f'{db}{suffix}').unlink(missing_ok=True)
        store = local.LocalStore(path=str(db))
        for mac, address in hosts:
            store.publish_reservation(reservation.Reservation(
                mac=mac, address=address, prefixlen=PREFIX,
                gateway=SERVER, dns_servers=(SERVER,)))
        store.close()
        conf = self.workdir / f'{name}.conf'
        tftp = (f'[vmetal_tftp]\nroot = {tftp_root}\n{tftp_extra}\n'
                if tftp_root
                else '[vmetal_tftp]\nenabled = false\n')
        conf.write_text(
            f'[vmetal_local_store]\ndatabase = {db}\n'
            f'[vmetal_dhcp_agent]\ninterface = {self.server_if}\n'
            f'metrics_port = 0\n{extra}\n{tftp}')
        log = self.workdir / f'{name}.log'
        log.unlink(missing_ok=True)
        proc = self.spawn(self.server_ns, [AGENT, '--config-file', str(conf)],
                          log.name)
        deadline = time.monotonic() + start_timeout
        while 'serving on' not in (log.read_text() if log.exists() else ''):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'agent did not start: {log.read_text()}')
            time.sleep(0.05)
        return proc

    def start_dnsmasq(self, hosts, name, extra=(), tftp_root=None,
                      lease_dir=None, no_ping=True):
        """dnsmasq with the same reservations, DNS off, no ping.

        :param lease_dir: where the lease file goes (dnsmasq fsyncs it on
            every change, so a disk-backed directory measures the disk).
        """
        hostsfile = self.workdir / f'{name}.hosts'
        hostsfile.write_text(''.join(f'{mac},{address}\n'
                                     for mac, address in hosts))
        leases = pathlib.Path(lease_dir or self.workdir) / f'{name}.leases'
        leases.unlink(missing_ok=True)
        self.files.append(leases)
        argv = ['dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null',
                '--port=0', f'--interface={self.server_if}',
                '--bind-interfaces', '--user=root', '--group=root',
                f'--pid-file={self.workdir / name}.pid',
                f'--dhcp-leasefile={leases}', f'--dhcp-hostsfile={hostsfile}',
                f'--dhcp-range={SERVER},static,255.254.0.0',
                '--dhcp-authoritative',
                f'--dhcp-option=option:router,{SERVER}',
                f'--dhcp-option=option:dns-server,{SERVER}', *extra]
        if no_ping:
            argv.append('--no-ping')
        if tftp_root:
            argv += ['--enable-tftp', f'--tftp-root={tftp_root}']
        proc = self.spawn(self.server_ns, argv, f'{name}.log')
        deadline = time.monotonic() + 10
        while not sh('ip', 'netns', 'exec', self.server_ns, 'ss', '-lun',
                     check=False).stdout.count(':67 '):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('dnsmasq did not start: '
                                   + (self.workdir / f'{name}.log').read_text())
            time.sleep(0.05)
        return proc
