"""Concurrent TFTP downloads: the agent (both modes) vs dnsmasq (and tftpy).

Run as root: ``tox -e bench -- tftp``. The agent with a port per transfer
(TFTP port 1069, on the compiled data path it runs by default; the same
with one event loop instead of its default two, 1072; the same on the
Python data path, ``[vmetal_tftp]compiled = false``, 1073), the agent in
single-port mode (1070; on the Python path, 1074), tftpy's server (1071,
what the agent used before) and dnsmasq (TFTP only, port 69) serve the
same directory from the same namespace at the same time; rounds take
turns (agent, agent with one loop, agent on the Python path, single-port,
single-port on the Python path, tftpy, dnsmasq, agent, ...) so a change
in the machine's load hits all of them alike. A round
starts the clients at once and times until the last finished; every
downloaded file is compared with the original.

Three cases: 20 tftp-hpa clients fetching ``ipxe.efi`` with 512-byte
blocks (tftp-hpa's default, the case of the issue), 20 curl clients asking
``blksize=1468`` (what firmware asks for) for the same file, and one
tftp-hpa client alone: a lock-step transfer waits for each block's answer,
so its time divided by the blocks is the server's latency per block (plus
the client's), which the concurrent cases hide behind each other.

Besides the ratio of medians, each server's rounds are divided by the
dnsmasq round of the same turn (a few seconds apart, so under the same
load) and the median and range of those paired ratios are printed: on a
shared machine a single round can be 30 % off, and this shows how far
apart the servers really are and how much the ratio can be trusted.
"""

import filecmp
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pxe_netns

CLIENTS = 20
ROUNDS = int(os.environ.get('VMETAL_BENCH_TFTP_ROUNDS', '11'))
FILE = 'ipxe.efi'
SERVERS = (('vmetal-dhcp-agent', 1069),
           ('vmetal-dhcp-agent 1 thread', 1072),
           ('vmetal-dhcp-agent Python path', 1073),
           ('vmetal-dhcp-agent single-port', 1070),
           ('agent single-port Python path', 1074),
           ('tftpy 0.8.7 (the old server)', 1071),
           ('dnsmasq', 69))
# tftpy's own server loop, as the agent ran it before (for the record in
# doc/source/tftp.rst).
TFTPY = ('import sys, tftpy; '
         'tftpy.TftpServer(sys.argv[1]).listen(sys.argv[2], 1071)')


def _tftp_hpa(port, target):
    return ['tftp', pxe_netns.SERVER, str(port), '-m', 'binary', '-c', 'get',
            FILE, str(target)]


def _curl(port, target):
    return ['curl', '-sS', '--max-time', '60', '--tftp-blksize', '1468',
            '-o', str(target), f'tftp://{pxe_netns.SERVER}:{port}/{FILE}']


def _round(lab, client, port, out_dir, clients):
    out_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    procs = [subprocess.Popen(
        ['ip', 'netns', 'exec', lab.client_ns,
         *client(port, out_dir / f'{n}.efi')],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for n in range(clients)]
    for proc in procs:
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    elapsed = time.monotonic() - started
    failures = 0
    for n in range(clients):
        path = out_dir / f'{n}.efi'
        if not path.exists() or not filecmp.cmp(path, lab.tftp_file,
                                                shallow=False):
            failures += 1
    shutil.rmtree(out_dir)
    return elapsed, failures


def _case(lab, client, pids, blocks, clients=CLIENTS, latency=False):
    """Rounds of ``clients`` downloads per server of a file of ``blocks``
    blocks at the client's block size: times, and the server's CPU per
    block sent; with ``latency`` also the time per block."""
    times = {name: [] for name, _port in SERVERS}
    cpu = dict.fromkeys(times, 0.0)
    failed = dict.fromkeys(times, 0)
    for number in range(ROUNDS):
        for name, port in SERVERS:
            before = pxe_netns.cpu_seconds(pids[name])
            elapsed, failures = _round(lab, client, port,
                                       lab.workdir / f'round-{number}',
                                       clients)
            cpu[name] += pxe_netns.cpu_seconds(pids[name]) - before
            times[name].append(elapsed)
            failed[name] += failures
    theirs = statistics.median(times['dnsmasq'])
    for name, _port in SERVERS:
        median = statistics.median(times[name])
        per_block = (f'  {median / blocks * 1e6:4.0f} us/block' if latency
                     else '')
        cpu_block = cpu[name] / ROUNDS / (clients * blocks) * 1e6
        paired = [mine / dnsmasq for mine, dnsmasq
                  in zip(times[name], times['dnsmasq'], strict=True)]
        print(f'  {name:30} min {min(times[name]):5.2f} s  median '
              f'{median:5.2f} s  ({median / theirs:4.2f}x dnsmasq; paired '
              f'{statistics.median(paired):4.2f}x, {min(paired):4.2f}-'
              f'{max(paired):4.2f})  server CPU {cpu[name] / ROUNDS:4.2f} '
              f's/round ({cpu_block:4.1f} us/block){per_block}  failed '
              f'downloads '
              f'{failed[name]}/{ROUNDS * clients}')


def _wait_listening(lab, port, proc):
    deadline = time.monotonic() + 10
    while f':{port} ' not in pxe_netns.sh('ip', 'netns', 'exec',
                                          lab.server_ns, 'ss', '-lun',
                                          check=False).stdout:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f'nothing listens on UDP port {port}')
        time.sleep(0.05)


def _start_dnsmasq(lab, root):
    argv = ['dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null',
            '--port=0', f'--interface={lab.server_if}', '--bind-interfaces',
            '--user=root', '--group=root',
            f'--pid-file={lab.workdir}/dnsmasq-tftp.pid', '--enable-tftp',
            f'--tftp-root={root}']
    proc = lab.spawn(lab.server_ns, argv, 'dnsmasq-tftp.log')
    _wait_listening(lab, 69, proc)
    return proc


def main():
    if os.geteuid() != 0:
        print('bench_tftp needs root (network namespaces); skipped')
        return
    with tempfile.TemporaryDirectory(prefix='vpx-bench-') as tmp:
        root = pathlib.Path(tmp) / 'tftp'
        root.mkdir()
        shutil.copy(os.path.realpath(f'/usr/lib/ipxe/{FILE}'), root / FILE)
        lab = pxe_netns.Lab(tmp)
        lab.tftp_file = root / FILE
        servers = []
        try:
            size = (root / FILE).stat().st_size
            # Two agents in one namespace: the second one's DHCP goes to an
            # unused port (nothing asks it for DHCP here).
            servers.append(lab.start_agent(
                [], 'agent-classic', tftp_root=root, tftp_extra='port = 1069'))
            # The same with one event loop ([vmetal_tftp]threads, 2 by
            # default): what the second thread is worth, in the same run.
            servers.append(lab.start_agent(
                [], 'agent-one-loop', extra='port = 1068', tftp_root=root,
                tftp_extra='port = 1072\nthreads = 1'))
            # The same without the compiled data path: what it is worth.
            servers.append(lab.start_agent(
                [], 'agent-python', extra='port = 1066', tftp_root=root,
                tftp_extra='port = 1073\ncompiled = false'))
            servers.append(lab.start_agent(
                [], 'agent-single', extra='port = 1067', tftp_root=root,
                tftp_extra='port = 1070\nsingle_port = true'))
            servers.append(lab.start_agent(
                [], 'agent-single-python', extra='port = 1065',
                tftp_root=root,
                tftp_extra='port = 1074\nsingle_port = true\ncompiled = false'))
            servers.append(lab.spawn(lab.server_ns, [
                sys.executable, '-c', TFTPY, str(root), pxe_netns.SERVER],
                'tftpy.log'))
            _wait_listening(lab, 1071, servers[-1])
            servers.append(_start_dnsmasq(lab, root))
            pids = {name: proc.pid for (name, _port), proc
                    in zip(SERVERS, servers, strict=True)}
            print(f'{CLIENTS} concurrent tftp-hpa downloads of {FILE} '
                  f'({size:,} B, 512-byte blocks), {ROUNDS} rounds each')
            _case(lab, _tftp_hpa, pids, size // 512 + 1)
            print(f'{CLIENTS} concurrent curl downloads of {FILE}, '
                  f'blksize 1468, {ROUNDS} rounds each')
            _case(lab, _curl, pids, size // 1468 + 1)
            print(f'1 tftp-hpa download of {FILE} at a time (lock-step '
                  f'latency), {ROUNDS} rounds each')
            _case(lab, _tftp_hpa, pids, size // 512 + 1, clients=1,
                  latency=True)
        finally:
            for proc in servers:
                lab.stop(proc)
            lab.close()


if __name__ == '__main__':
    main()
