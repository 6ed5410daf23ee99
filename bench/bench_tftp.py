"""20 concurrent tftp-hpa downloads of ipxe.efi: agent (tftpy) vs dnsmasq.

Run as root: ``tox -e bench -- tftp``. Both servers serve the same
directory from the same namespace; every round starts 20 clients at once
(512-byte blocks, tftp-hpa's default) and times until the last finished;
every downloaded file is compared with the original.
"""

import filecmp
import os
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import time

import pxe_netns

CLIENTS = 20
ROUNDS = 3
FILE = 'ipxe.efi'


def _round(lab, out_dir):
    out_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    procs = [subprocess.Popen(
        ['ip', 'netns', 'exec', lab.client_ns, 'tftp', pxe_netns.SERVER,
         '-m', 'binary', '-c', 'get', FILE, str(out_dir / f'{n}.efi')],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for n in range(CLIENTS)]
    failures = 0
    for proc in procs:
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    elapsed = time.monotonic() - started
    for n in range(CLIENTS):
        path = out_dir / f'{n}.efi'
        if not path.exists() or not filecmp.cmp(path, lab.tftp_file,
                                                shallow=False):
            failures += 1
    shutil.rmtree(out_dir)
    return elapsed, failures


def _series(lab, name):
    times = []
    failed = 0
    for number in range(ROUNDS):
        elapsed, failures = _round(lab, lab.workdir / f'{name}-{number}')
        times.append(elapsed)
        failed += failures
    return (f'min {min(times):5.2f} s  median {statistics.median(times):5.2f}'
            f' s  failed downloads {failed}/{ROUNDS * CLIENTS}')


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
        try:
            size = (root / FILE).stat().st_size
            print(f'{CLIENTS} concurrent tftp-hpa downloads of {FILE} '
                  f'({size:,} B), {ROUNDS} rounds')
            agent = lab.start_agent([], 'agent-tftp', tftp_root=root)
            try:
                ours = _series(lab, 'agent')
            finally:
                lab.stop(agent)
            dnsmasq = lab.start_dnsmasq([], 'dnsmasq-tftp', tftp_root=root)
            try:
                theirs = _series(lab, 'dnsmasq')
            finally:
                lab.stop(dnsmasq)
            print(f'vmetal-dhcp-agent (tftpy) {ours}')
            print(f'dnsmasq                   {theirs}')
        finally:
            lab.close()


if __name__ == '__main__':
    main()
