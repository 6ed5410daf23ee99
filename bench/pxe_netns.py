"""Namespaces, servers and cleanup shared by the PXE benchmarks (root).

A hub namespace holds a bridge; a server namespace (198.18.0.1/15) and a
client namespace (198.18.0.2/15) hang off it. The server namespace runs
either vmetal-dhcp-agent or dnsmasq with the same reservations, so both
are measured in the same namespaces in the same run. Everything is removed
by PID and name on exit, also on failure.
"""

import os
import pathlib
import secrets
import signal
import subprocess
import sys
import time
import contextlib

SERVER = '198.18.0.1'
CLIENT = '198.18.0.2'
PREFIX = 15
AGENT = str(pathlib.Path(sys.executable).parent / 'vmetal-dhcp-agent')


def sh(*argv, check=True, timeout=60):
    return subprocess.run(argv, capture_output=True, text=True,
                          check=check, timeout=timeout)


def reserved(count):
    """``[(mac, address)]`` for ``count`` hosts in 198.18.0.0/15."""
    hosts = []
    for index in range(count):
        number = 10 + index
        address = f'198.18.{number // 250}.{number % 250 + 2}'
        mac = '52:54:10:' + index.to_bytes(3, 'big').hex(':')
        hosts.append((mac, address))
    return hosts


class Lab:
    def __init__(self, workdir):
        self.workdir = pathlib.Path(workdir)
        self.prefix = 'vpx' + secrets.token_hex(2)
        self.hub = self.prefix + 'h'
        self.server_ns = self.prefix + 's'
        self.client_ns = self.prefix + 'c'
        self.namespaces = []
        self.processes = []
        for ns in (self.hub, self.server_ns, self.client_ns):
            sh('ip', 'netns', 'add', ns)
            self.namespaces.append(ns)
            sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
        sh('ip', '-n', self.hub, 'link', 'add', 'br0', 'type', 'bridge',
           'forward_delay', '0')
        sh('ip', '-n', self.hub, 'link', 'set', 'br0', 'up')
        self.server_if = self._attach(self.server_ns, 1, f'{SERVER}/{PREFIX}')
        self.client_if = self._attach(self.client_ns, 2, f'{CLIENT}/{PREFIX}')
        self._taps = 0
        self.files = []

    def _attach(self, ns, number, address):
        inner, outer = f'{self.prefix}i{number}', f'{self.prefix}o{number}'
        sh('ip', 'link', 'add', inner, 'type', 'veth', 'peer', 'name', outer)
        sh('ip', 'link', 'set', outer, 'netns', self.hub)
        sh('ip', 'link', 'set', inner, 'netns', ns)
        sh('ip', '-n', self.hub, 'link', 'set', outer, 'master', 'br0', 'up')
        sh('ip', '-n', ns, 'addr', 'add', address, 'dev', inner)
        sh('ip', '-n', ns, 'link', 'set', inner, 'up')
        return inner

    def tap(self):
        self._taps += 1
        name = f'{self.prefix}t{self._taps}'
        sh('ip', '-n', self.hub, 'tuntap', 'add', 'dev', name, 'mode', 'tap')
        sh('ip', '-n', self.hub, 'link', 'set', name, 'master', 'br0', 'up')
        return name

    def spawn(self, ns, argv, log_name):
        with open(self.workdir / log_name, 'ab') as log:
            proc = subprocess.Popen(['ip', 'netns', 'exec', ns, *argv],
                                    stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self):
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for ns in self.namespaces:
            for pid in sh('ip', 'netns', 'pids', ns,
                          check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.namespaces):
            sh('ip', 'netns', 'del', ns, check=False)
        for path in self.files:
            path.unlink(missing_ok=True)

    # -- servers ------------------------------------------------------------

    def start_agent(self, hosts, name, extra='', tftp_root=None):
        """vmetal-dhcp-agent with ``hosts`` reserved in a fresh store."""
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
        tftp = (f'[vmetal_tftp]\nroot = {tftp_root}\n' if tftp_root
                else '[vmetal_tftp]\nenabled = false\n')
        conf.write_text(
            f'[vmetal_local_store]\ndatabase = {db}\n'
            f'[vmetal_dhcp_agent]\ninterface = {self.server_if}\n'
            f'metrics_port = 0\n{extra}\n{tftp}')
        log = self.workdir / f'{name}.log'
        log.unlink(missing_ok=True)
        proc = self.spawn(self.server_ns, [AGENT, '--config-file', str(conf)],
                          log.name)
        deadline = time.monotonic() + 60
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
