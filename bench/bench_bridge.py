"""The IPA ramdisk through the agent's bridge vs straight from Ironic's
HTTP server, 1 and 20 clients at once.

Run as root: ``tox -e bench -- bridge``. Three namespaces: Ironic's
(203.0.113.1, busybox httpd serving the IPA ramdisk of the lab's cache, or
a 93 MiB random file when it is not built), the agent's (203.0.113.2 on
the cluster side, 198.51.100.1 on the provisioning L2, running
vmetal-dhcp-agent with ``[vmetal_bridge]`` on) and the machine's
(198.51.100.20). "direct" is curl in the agent's namespace fetching from
httpd (one hop, Ironic's own server as a client next to it sees it);
"bridge" is curl in the machine's namespace fetching the same file from
the agent's provisioning-side forward. Rounds alternate (direct, bridge,
bridge, direct, ...) so a change in the machine's load hits both alike;
medians are printed with the ratio, and the agent's resident memory before
the first 20-client round and its peak after the last.
"""

import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from vmetal_ironic.lab import netns
from vmetal_ironic.lab import observe
from vmetal_ironic.store.local import LocalStore

AGENT = str(pathlib.Path(sys.executable).parent / 'vmetal-dhcp-agent')
IRONIC = '203.0.113.1'
AGENT_CLUSTER = '203.0.113.2'
AGENT_L2 = '198.51.100.1'
MACHINE = '198.51.100.20'
ROUNDS = int(os.environ.get('VMETAL_BENCH_BRIDGE_ROUNDS', '4'))
CACHE = pathlib.Path(os.environ.get(
    'VMETAL_CACHE', pathlib.Path.home() / '.cache' / 'vmetal-ironic'))


def _ramdisk(root):
    target = root / 'ipa.initramfs'
    built = sorted((CACHE / 'ipa').glob('*/ramdisk'))
    if built:
        os.symlink(built[-1].resolve(), target)
        return target, 'the lab\'s IPA ramdisk'
    with open(target, 'wb') as out:
        for _ in range(93):
            out.write(os.urandom(2**20))
    return target, 'a random file (IPA ramdisk not built)'


def _clients(topology, namespace, url, count, size):
    """Seconds until ``count`` concurrent curls all fetched ``url``."""
    argv = ['ip', 'netns', 'exec', namespace, 'curl', '-sS', '--max-time',
            '300', '-o', '/dev/null', '-w', '%{size_download}', url]
    started = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
             for _ in range(count)]
    sizes = [int(proc.communicate(timeout=320)[0] or 0) for proc in procs]
    elapsed = time.monotonic() - started
    if sizes != [size] * count:
        raise RuntimeError(f'{url}: got sizes {sorted(set(sizes))}, '
                           f'expected {size}')
    return elapsed


def _status(pid, key):
    text = pathlib.Path(f'/proc/{pid}/status').read_text()
    return int(re.search(rf'{key}:\s+(\d+)', text).group(1))


def main():
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='vmetal-bench-bridge-'))
    topology = netns.Topology(workdir / 'net', prefix='vbbr')
    store = None
    try:
        agent_ns, agent_if = topology.host('a', f'{AGENT_L2}/24')
        machine_ns, _ = topology.host('m', f'{MACHINE}/24')
        ironic_ns = topology.namespace('k')
        topology.wire(agent_ns, ironic_ns, f'{AGENT_CLUSTER}/24',
                      f'{IRONIC}/24')
        root = workdir / 'httproot'
        root.mkdir()
        ramdisk, what = _ramdisk(root)
        size = ramdisk.stat().st_size
        topology.spawn(ironic_ns, ['busybox', 'httpd', '-f', '-p',
                                   f'{IRONIC}:8080', '-h', str(root)],
                       'httpd.log')
        store = LocalStore(path=str(workdir / 'vmetal.sqlite'))
        conf = workdir / 'agent.conf'
        conf.write_text(textwrap.dedent(f"""\
            [vmetal_local_store]
            database = {workdir / 'vmetal.sqlite'}
            [vmetal_dhcp_agent]
            interface = {agent_if}
            metrics_port = 0
            send_ra = false
            [vmetal_tftp]
            enabled = false
            [vmetal_bridge]
            enabled = true
            ironic_http_url = http://{IRONIC}:8080
            ironic_api_url = http://{IRONIC}:6385
            callback_address = {AGENT_CLUSTER}
            """))
        log = workdir / 'net' / 'agent.log'
        agent = topology.spawn(agent_ns, [AGENT, '--config-file', str(conf)],
                               'agent.log')
        observe.wait_for(
            lambda: 'serving on' in log.read_text(errors='replace'), 30,
            failed=lambda: agent.poll() is not None, what='agent start')
        direct = f'http://{IRONIC}:8080/{ramdisk.name}'
        bridged = f'http://{AGENT_L2}:8080/{ramdisk.name}'
        print(f'file: {what}, {size / 2**20:.1f} MiB; {ROUNDS} rounds each, '
              'alternating; throughput = clients x size / time to the last')
        rss_before = None
        for clients in (1, 20):
            times = {'direct': [], 'bridge': []}
            for index in range(ROUNDS):
                order = ('direct', 'bridge') if index % 2 == 0 \
                    else ('bridge', 'direct')
                for kind in order:
                    if kind == 'bridge' and clients == 20 \
                            and rss_before is None:
                        rss_before = _status(agent.pid, 'VmRSS')
                    namespace, url = ((agent_ns, direct) if kind == 'direct'
                                      else (machine_ns, bridged))
                    times[kind].append(_clients(topology, namespace, url,
                                                clients, size))
            rates = {kind: clients * size / 2**20 / statistics.median(t)
                     for kind, t in times.items()}
            spread = {kind: max(t) - min(t) for kind, t in times.items()}
            print(f'{clients:2d} client(s): direct {rates["direct"]:7.1f} '
                  f'MiB/s, bridge {rates["bridge"]:7.1f} MiB/s, '
                  f'bridge/direct {rates["bridge"] / rates["direct"]:.2f}x '
                  f'(spread {spread["direct"]:.2f} / {spread["bridge"]:.2f} '
                  's)')
        peak = _status(agent.pid, 'VmHWM')
        print(f'agent RSS: {rss_before / 1024:.1f} MiB before the 20-client '
              f'rounds, peak {peak / 1024:.1f} MiB '
              f'(+{(peak - rss_before) / 1024:.1f} MiB)')
    finally:
        topology.close()
        if store is not None:
            store.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
