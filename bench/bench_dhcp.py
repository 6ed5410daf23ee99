"""Boot storm: full DORA for N distinct reserved MACs, agent vs dnsmasq
and ISC Kea.

Run as root: ``tox -e bench -- dhcp``. N = 1000 MACs (``VMETAL_BENCH_DHCP_N``)
at concurrency 1, 8, 32 and 128, against vmetal-dhcp-agent and against
dnsmasq (``--no-ping``, lease file on, same reservations) in the same
namespaces, and ISC Kea's ``kea-dhcp4`` (Debian's kea-dhcp4-server;
host reservations by MAC, memfile leases not persisted, single-threaded
and multi-threaded with a pool of 2 threads) when it is installed. The
generator acts as a relay agent (giaddr set, replies come back to it on
port 67), so it needs no raw sockets; it is bounded: each
exchange gets 2 s, no retransmissions, so an unanswered exchange counts
as lost. A NAK also counts as lost.

Two dnsmasq peers: with its lease file on tmpfs (dnsmasq fsyncs the file on
every lease change, so on a disk the figure measures the disk; the agent
keeps no lease file, its reservations are the store's), and with
``--leasefile-ro`` (no lease file at all).

Each line also gives the DISCOVER->OFFER latency (p50, p99) of the same
exchanges, the offer path alone. ``VMETAL_BENCH_DHCP_CONCURRENCY``
(``1,8,32,128``) and ``VMETAL_BENCH_DHCP_PEERS``
(``agent,dnsmasq,dnsmasq-ro,kea``) narrow a run, e.g. to the agent and
Kea for 100,000 MACs (dnsmasq with its lease file answers a few hundred
exchanges a second at best, tens on a loaded machine).

The generator runs in the client namespace as ``bench_dhcp.py generate``.
"""

import json
import os
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import pxe_netns

CONCURRENCY = (1, 8, 32, 128)
EXCHANGE_TIMEOUT = 2.0
COOKIE = b'\x63\x82\x53\x63'
SHM = '/dev/shm'


def _request(kind, xid, mac, giaddr, requested=None, server=None):
    header = struct.pack('!BBBB4sHH4s4s4s4s16s64s128s', 1, 1, 6, 1, xid, 0,
                         0, bytes(4), bytes(4), bytes(4), giaddr,
                         bytes.fromhex(mac.replace(':', '')), b'', b'')
    options = bytes([53, 1, kind])
    if requested:
        options += b'\x32\x04' + requested
    if server:
        options += b'\x36\x04' + server
    options += b'\x37\x03\x01\x03\x06\xff'
    return header + COOKIE + options


def _reply_type_and_server(data):
    index = 240
    kind = server = None
    while index + 1 < len(data):
        code = data[index]
        if code == 255:
            break
        if code == 0:
            index += 1
            continue
        length = data[index + 1]
        value = data[index + 2:index + 2 + length]
        if code == 53:
            kind = value[0]
        elif code == 54:
            server = value
        index += 2 + length
    return kind, server


def generate(count, concurrency, server, giaddr):
    """Run one storm; returns a dict of results (printed as JSON)."""
    hosts = pxe_netns.reserved(count)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind((giaddr, 67))
    sock.setblocking(False)
    gi = socket.inet_aton(giaddr)
    target = (server, 67)
    pending = {}
    latencies = []
    offers = []
    lost = naks = 0
    sent = 0
    cpu_started = time.process_time()
    started = time.monotonic()
    deadline = started + count * EXCHANGE_TIMEOUT / concurrency + 30
    last_done = started
    while (sent < count or pending) and time.monotonic() < deadline:
        while sent < count and len(pending) < concurrency:
            xid = struct.pack('!I', 0x10000000 + sent)
            mac = hosts[sent][0]
            now = time.monotonic()
            pending[xid] = [mac, now, now + EXCHANGE_TIMEOUT]
            sock.sendto(_request(1, xid, mac, gi), target)
            sent += 1
        ready, _, _ = select.select([sock], [], [], 0.05)
        if ready:
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                entry = pending.get(data[4:8])
                if entry is None or len(data) < 240:
                    continue
                kind, server_id = _reply_type_and_server(data)
                xid = data[4:8]
                if kind == 2:  # OFFER -> REQUEST
                    offers.append(time.monotonic() - entry[1])
                    sock.sendto(_request(3, xid, entry[0], gi, data[16:20],
                                         server_id), target)
                elif kind == 5:  # ACK
                    now = time.monotonic()
                    latencies.append(now - entry[1])
                    last_done = now
                    del pending[xid]
                elif kind == 6:
                    naks += 1
                    lost += 1
                    del pending[xid]
        now = time.monotonic()
        for xid in [x for x, e in pending.items() if e[2] <= now]:
            lost += 1
            del pending[xid]
    lost += len(pending) + (count - sent)
    elapsed = max(last_done - started, 1e-9)
    latencies.sort()
    offers.sort()

    def pct(p, values=latencies):
        if not values:
            return None
        return values[min(len(values) - 1, int(p * len(values)))] * 1000

    return {'done': len(latencies), 'lost': lost, 'naks': naks,
            'rate': len(latencies) / elapsed,
            'p50_ms': pct(0.50), 'p99_ms': pct(0.99),
            'offer_p50_ms': pct(0.50, offers),
            'offer_p99_ms': pct(0.99, offers),
            'cpu_seconds': time.process_time() - cpu_started,
            'mean_ms': (statistics.mean(latencies) * 1000
                        if latencies else None)}


def _storm(lab, count, concurrency, server_pid):
    """One storm; the result also holds the CPU the server and the
    generator spent per completed exchange (µs)."""
    before = pxe_netns.cpu_seconds(server_pid)
    result = subprocess.run(
        ['ip', 'netns', 'exec', lab.client_ns, sys.executable, __file__,
         'generate', str(count), str(concurrency), pxe_netns.SERVER,
         pxe_netns.CLIENT],
        capture_output=True, text=True, timeout=3600, check=True)
    spent = pxe_netns.cpu_seconds(server_pid) - before
    rss = pxe_netns.resident_mib(server_pid)
    result = json.loads(result.stdout)
    result['server_rss_mib'] = rss
    done = max(result['done'], 1)
    result['server_cpu_us'] = spent / done * 1e6
    result['generator_cpu_us'] = result.pop('cpu_seconds') / done * 1e6
    return result


def _fmt(result):
    if result['p50_ms'] is None:
        return f'{result["rate"]:8.0f}/s  p50      -  p99      -  lost {result["lost"]}'
    return (f'{result["rate"]:8.0f}/s  p50 {result["p50_ms"]:6.2f} ms  '
            f'p99 {result["p99_ms"]:7.2f} ms  lost {result["lost"]:4d} '
            f'(NAK {result["naks"]})  [offer p50 '
            f'{result["offer_p50_ms"]:.2f} p99 {result["offer_p99_ms"]:.2f}'
            f' ms]  CPU/DORA {result["server_cpu_us"]:4.0f} us '
            f'(generator {result["generator_cpu_us"]:3.0f} us)  RSS '
            f'{result["server_rss_mib"]:.0f} MiB')


def _start_timeout(count):
    """Seconds a server may take to start with ``count`` reservations
    (the agent builds a reply template per reservation, Kea parses a JSON
    entry per reservation): 60 s, and 5 ms per reservation past that (the
    agent took over 200 s for 100,000 on a loaded machine)."""
    return max(60.0, count * 0.005)


def _kea_config(lab, hosts, name, threads):
    """Kea's configuration: the same reservations, routers and DNS as the
    others. One ``interface/address`` is named: Kea 2.2 opens a socket per
    address of an interface and would answer once per socket."""
    log = lab.workdir / f'{name}.kea.log'
    return {'Dhcp4': {
        'interfaces-config': {
            'interfaces': [f'{lab.server_if}/{pxe_netns.SERVER}'],
            'dhcp-socket-type': 'udp'},
        'lease-database': {'type': 'memfile', 'persist': False,
                           'lfc-interval': 0},
        'valid-lifetime': 3600,
        'authoritative': True,
        'host-reservation-identifiers': ['hw-address'],
        'subnet4': [{
            'id': 1, 'subnet': f'198.18.0.0/{pxe_netns.PREFIX}',
            'reservations-out-of-pool': True,
            'option-data': [
                {'name': 'routers', 'data': pxe_netns.SERVER},
                {'name': 'domain-name-servers', 'data': pxe_netns.SERVER}],
            'reservations': [{'hw-address': mac, 'ip-address': address}
                             for mac, address in hosts]}],
        'multi-threading': ({'enable-multi-threading': True,
                             'thread-pool-size': threads,
                             'packet-queue-size': 64} if threads > 1
                            else {'enable-multi-threading': False}),
        'loggers': [{'name': 'kea-dhcp4', 'severity': 'WARN',
                     'output_options': [{'output': str(log)}]}]}}


def _start_kea(lab, hosts, name, threads):
    config = lab.workdir / f'{name}.json'
    config.write_text(json.dumps(_kea_config(lab, hosts, name, threads)))
    env = dict(os.environ, KEA_PIDFILE_DIR=str(lab.workdir),
               KEA_LOCKFILE_DIR=str(lab.workdir))
    proc = lab.spawn(lab.server_ns, ['kea-dhcp4', '-c', str(config)],
                     f'{name}.log', env=env)
    deadline = time.monotonic() + _start_timeout(len(hosts))
    while ':67 ' not in pxe_netns.sh('ip', 'netns', 'exec', lab.server_ns,
                                     'ss', '-lun', check=False).stdout:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError('kea-dhcp4 did not start: '
                               + (lab.workdir / f'{name}.log').read_text())
        time.sleep(0.05)
    return proc


def _peers(lab, hosts, count, concurrency, wanted):
    """``{label: result}`` of one storm against each wanted server, one
    after the other in the same namespaces."""
    results = {}

    def run(label, proc):
        try:
            results[label] = _storm(lab, count, concurrency, proc.pid)
        finally:
            lab.stop(proc)

    if 'agent' in wanted:
        run('vmetal-dhcp-agent',
            lab.start_agent(hosts, f'agent-c{concurrency}',
                            start_timeout=_start_timeout(count)))
    # dnsmasq keeps 1,000 leases by default and NAKs past it.
    leases = (f'--dhcp-lease-max={count}',)
    if 'dnsmasq' in wanted:
        run('dnsmasq (leases tmpfs)',
            lab.start_dnsmasq(hosts, f'dnsmasq-c{concurrency}',
                              lease_dir=SHM, extra=leases))
    if 'dnsmasq-ro' in wanted:
        run('dnsmasq --leasefile-ro',
            lab.start_dnsmasq(hosts, f'dnsmasq-ro-{concurrency}',
                              extra=('--leasefile-ro', *leases)))
    if 'kea' in wanted and shutil.which('kea-dhcp4'):
        for threads in (1, 2):
            label = ('kea-dhcp4 1 thread' if threads == 1
                     else f'kea-dhcp4 {threads} threads')
            run(label, _start_kea(lab, hosts,
                                  f'kea-{threads}-{concurrency}', threads))
    return results


def _ratios(results):
    ours = results.get('vmetal-dhcp-agent')
    if ours is None:
        return ''
    short = {'dnsmasq (leases tmpfs)': 'dnsmasq',
             'dnsmasq --leasefile-ro': 'dnsmasq-ro',
             'kea-dhcp4 1 thread': 'kea-1', 'kea-dhcp4 2 threads': 'kea-2'}
    return ', '.join(f'agent/{short[label]} {ours["rate"] / r["rate"]:.2f}x'
                     for label, r in results.items()
                     if label in short and r['rate'])


def main():
    if os.geteuid() != 0:
        print('bench_dhcp needs root (network namespaces); skipped')
        return
    count = int(os.environ.get('VMETAL_BENCH_DHCP_N', '1000'))
    concurrencies = tuple(int(c) for c in os.environ.get(
        'VMETAL_BENCH_DHCP_CONCURRENCY',
        ','.join(map(str, CONCURRENCY))).split(','))
    wanted = set(os.environ.get('VMETAL_BENCH_DHCP_PEERS',
                                'agent,dnsmasq,dnsmasq-ro,kea').split(','))
    hosts = pxe_netns.reserved(count)
    with tempfile.TemporaryDirectory(prefix='vpx-bench-') as tmp:
        lab = pxe_netns.Lab(tmp)
        try:
            print(f'boot storm: N={count} distinct reserved MACs, full DORA '
                  f'through a relay address, {EXCHANGE_TIMEOUT:.0f} s per '
                  'exchange, no retransmission; DISCOVER->OFFER latency '
                  'in brackets')
            for concurrency in concurrencies:
                results = _peers(lab, hosts, count, concurrency, wanted)
                prefix = f'C={concurrency:<4d} '
                for label, result in results.items():
                    print(f'{prefix:<7s}{label:<23s}{_fmt(result)}')
                    prefix = ''
                ratios = _ratios(results)
                if ratios:
                    print(f'       ratio {ratios}')
                sys.stdout.flush()
        finally:
            lab.close()


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'generate':
        print(json.dumps(generate(int(sys.argv[2]), int(sys.argv[3]),
                                  sys.argv[4], sys.argv[5])))
    else:
        main()
