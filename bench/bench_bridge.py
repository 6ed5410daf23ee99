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
the agent's provisioning-side forward; "relay" is the same from
``splice_relay.py`` in the agent's namespace, a bare TCP relay that pays
the extra hop and nothing else (the ceiling any relay there can reach).
Rounds rotate (direct, bridge, relay, bridge, relay, direct, ...) so a
change in the machine's load hits all alike; medians are printed with the
ratios, the agent's CPU seconds per GiB bridged (its own user and system
time, which the machine's load does not change as it changes rates; TCP
work done in softirq is not counted), and the agent's resident memory
before the first 20-client round and its peak after the last.
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


def _cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far."""
    fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(
        ')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


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
        relay_log = workdir / 'net' / 'relay.log'
        relay = topology.spawn(agent_ns, [
            sys.executable, str(pathlib.Path(__file__).parent /
                                'splice_relay.py'),
            AGENT_L2, '8090', IRONIC, '8080'], 'relay.log')
        agent = topology.spawn(agent_ns, [AGENT, '--config-file', str(conf)],
                               'agent.log')
        observe.wait_for(
            lambda: 'serving on' in log.read_text(errors='replace'), 30,
            failed=lambda: agent.poll() is not None, what='agent start')
        observe.wait_for(
            lambda: 'relaying' in relay_log.read_text(errors='replace'), 30,
            failed=lambda: relay.poll() is not None, what='relay start')
        urls = {'direct': (agent_ns, f'http://{IRONIC}:8080/{ramdisk.name}'),
                'bridge': (machine_ns,
                           f'http://{AGENT_L2}:8080/{ramdisk.name}'),
                'relay': (machine_ns,
                          f'http://{AGENT_L2}:8090/{ramdisk.name}')}
        kinds = tuple(urls)
        print(f'file: {what}, {size / 2**20:.1f} MiB; {ROUNDS} rounds each, '
              'alternating; throughput = clients x size / time to the last')
        rss_before = None
        for clients in (1, 20):
            times = {kind: [] for kind in kinds}
            agent_cpu = 0.0
            for index in range(ROUNDS):
                order = kinds[index % 3:] + kinds[:index % 3]
                for kind in order:
                    if kind == 'bridge' and clients == 20 \
                            and rss_before is None:
                        rss_before = _status(agent.pid, 'VmRSS')
                    namespace, url = urls[kind]
                    cpu = _cpu_seconds(agent.pid)
                    times[kind].append(_clients(topology, namespace, url,
                                                clients, size))
                    if kind == 'bridge':
                        agent_cpu += _cpu_seconds(agent.pid) - cpu
            rates = {kind: clients * size / 2**20 / statistics.median(t)
                     for kind, t in times.items()}
            spread = '/'.join(f'{max(t) - min(t):.2f}'
                              for t in times.values())
            print(f'{clients:2d} client(s): direct {rates["direct"]:7.1f} '
                  f'MiB/s, bridge {rates["bridge"]:7.1f} MiB/s, relay '
                  f'{rates["relay"]:7.1f} MiB/s; bridge/direct '
                  f'{rates["bridge"] / rates["direct"]:.2f}x, relay/direct '
                  f'{rates["relay"] / rates["direct"]:.2f}x, bridge/relay '
                  f'{rates["bridge"] / rates["relay"]:.2f}x (spreads '
                  f'{spread} s); agent CPU '
                  f'{agent_cpu / (ROUNDS * clients * size / 2**30):.2f} '
                  's/GiB bridged')
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
