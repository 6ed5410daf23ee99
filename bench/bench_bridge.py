"""The IPA ramdisk through the agent's bridge vs straight from Ironic's
HTTP server, 1 and 20 clients at once, with the agent's local copies.

Run as root: ``tox -e bench -- bridge``. Three namespaces: Ironic's
(203.0.113.1, busybox httpd serving a copy of the IPA ramdisk of the lab's
cache, or a 93 MiB random file when it is not built), the agent's
(203.0.113.2 on the cluster side, 198.51.100.1 on the provisioning L2,
running vmetal-dhcp-agent with ``[vmetal_bridge]`` on and ``cache_dir``
set) and the machine's (198.51.100.20). "direct" is curl in the agent's
namespace fetching from httpd (one hop, Ironic's own server as a client
next to it sees it); "cold" is curl in the machine's namespace fetching
the same file from the agent's provisioning-side forward just after the
file changed upstream (its mtime is moved, so its ETag changes: the
agent's copy is stale, the download streams through and one client's
download fills a new copy, as the first download of a new ramdisk does);
"warm" is the same with the copy current (every download still asks
Ironic, which answers 304); "relay" is curl through ``splice_relay.py``
in the agent's namespace, a bare TCP relay that pays the extra hop and
nothing else (the ceiling any relay there can reach); "same-L2" is curl
in the machine's namespace fetching from a second busybox httpd in the
agent's namespace on its provisioning address (Ironic's server on the
servers' L2: the same path as the agent's answers, the lab bridge
included, which "direct" does not cross); "direct-L2" is curl in the
machine's namespace fetching from Ironic's own namespace, which has a leg
on the provisioning L2 for this peer only (198.51.100.3, a second busybox
httpd there serving the same root): the ramdisk straight from Ironic's
HTTP server as a server on that L2 gets it when no agent stands between,
the same links crossed as the agent's answers. Rounds rotate (direct,
direct-L2, cold, warm, relay, same-L2, direct-L2, ...) so a change in the
machine's load hits all alike; medians are printed with the ratios to
direct and to direct-L2, the agent's CPU seconds per GiB it sent (its own
user and system time, which the machine's load does not change as it
changes rates; TCP work done in softirq is not counted), and the agent's
resident memory before the first 20-client round and its peak after the
last; and the median time to the first byte of the direct and the warm
downloads (curl's ``time_starttransfer``: with 20 clients, how long a
download waits for the agent before its body starts). First, the median
time of a warm ``HEAD`` through the agent (its conditional request to
Ironic and the 304 included) against a ``HEAD`` straight from Ironic
across the L2: what the revalidation adds to each download.
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
IRONIC_L2 = '198.51.100.3'
MACHINE = '198.51.100.20'
ROUNDS = int(os.environ.get('VMETAL_BENCH_BRIDGE_ROUNDS', '4'))
#: ``[vmetal_bridge]cache_send_threads`` of the agent (its default if
#: unset; 0 sends the copies from the event loop's thread).
SEND_THREADS = os.environ.get('VMETAL_BENCH_BRIDGE_SEND_THREADS')
CACHE = pathlib.Path(os.environ.get(
    'VMETAL_CACHE', pathlib.Path.home() / '.cache' / 'vmetal-ironic'))


def _ramdisk(root):
    target = root / 'ipa.initramfs'
    built = sorted((CACHE / 'ipa').glob('*/ramdisk'))
    if built:
        # A copy, not a link: the cold rounds move its mtime.
        shutil.copyfile(built[-1].resolve(), target)
        return target, 'the lab\'s IPA ramdisk'
    with open(target, 'wb') as out:
        for _ in range(93):
            out.write(os.urandom(2**20))
    return target, 'a random file (IPA ramdisk not built)'


def _clients(topology, namespace, url, count, size, first_bytes=None):
    """Seconds until ``count`` concurrent curls all fetched ``url``;
    each curl's time to its first byte (seconds) is added to
    ``first_bytes`` (a list) if given."""
    argv = ['ip', 'netns', 'exec', namespace, 'curl', '-sS', '--max-time',
            '300', '-o', '/dev/null', '-w',
            '%{size_download} %{time_starttransfer}', url]
    started = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
             for _ in range(count)]
    outputs = [(proc.communicate(timeout=320)[0] or '0 0').split()
               for proc in procs]
    elapsed = time.monotonic() - started
    sizes = [int(output[0]) for output in outputs]
    if sizes != [size] * count:
        raise RuntimeError(f'{url}: got sizes {sorted(set(sizes))}, '
                           f'expected {size}')
    if first_bytes is not None:
        first_bytes.extend(float(output[1]) for output in outputs)
    return elapsed


def _head_ms(namespace, url, count=40):
    """Median milliseconds of ``count`` sequential ``HEAD`` requests."""
    argv = ['ip', 'netns', 'exec', namespace, 'curl', '-sS', '-I',
            '--max-time', '10', '-w', '%{time_total}\\n']
    # -o names the output of the URL after it, so one for each.
    out = subprocess.run(argv + ['-o', '/dev/null', url] * count,
                         capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return statistics.median(float(line) for line in out.split()) * 1000


def _leg_on_l2(topology, namespace, address):
    """A veth from ``namespace`` (off the bridge until now) to the lab's
    L2, for a peer only: the two-network lab itself never has one."""
    inner, outer = topology.prefix + 'kl', topology.prefix + 'kb'
    netns.run('ip', 'link', 'add', inner, 'type', 'veth', 'peer', 'name',
              outer)
    netns.run('ip', 'link', 'set', outer, 'netns', topology.hub)
    netns.run('ip', 'link', 'set', inner, 'netns', namespace)
    netns.run('ip', '-n', topology.hub, 'link', 'set', outer, 'master',
              'br0', 'up')
    netns.run('ip', '-n', namespace, 'addr', 'add', address, 'dev', inner)
    netns.run('ip', '-n', namespace, 'link', 'set', inner, 'up')


def _warm(topology, namespace, url, size):
    """Make sure the agent holds a current copy before a warm round (a
    cold round's 20 clients may all have been relayed while one filled;
    this download is not timed)."""
    _clients(topology, namespace, url, 1, size)


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
        _leg_on_l2(topology, ironic_ns, f'{IRONIC_L2}/24')
        root = workdir / 'httproot'
        root.mkdir()
        ramdisk, what = _ramdisk(root)
        size = ramdisk.stat().st_size
        topology.spawn(ironic_ns, ['busybox', 'httpd', '-f', '-p',
                                   f'{IRONIC}:8080', '-h', str(root)],
                       'httpd.log')
        # Ironic's server seen across the L2 (direct-L2).
        topology.spawn(ironic_ns, ['busybox', 'httpd', '-f', '-p',
                                   f'{IRONIC_L2}:8080', '-h', str(root)],
                       'httpd-ironic-l2.log')
        # The same server where the agent is, on the provisioning L2: what
        # the machine gets when Ironic shares its L2 (the same path as the
        # agent's answers, the bridge br0 included).
        topology.spawn(agent_ns, ['busybox', 'httpd', '-f', '-p',
                                  f'{AGENT_L2}:8091', '-h', str(root)],
                       'httpd-l2.log')
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
            cache_dir = {workdir / 'copies'}
            """) + (f'cache_send_threads = {SEND_THREADS}\n'
                    if SEND_THREADS else ''))
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
        bridged = f'http://{AGENT_L2}:8080/{ramdisk.name}'
        urls = {'direct': (agent_ns, f'http://{IRONIC}:8080/{ramdisk.name}'),
                'direct-L2': (machine_ns,
                              f'http://{IRONIC_L2}:8080/{ramdisk.name}'),
                'cold': (machine_ns, bridged),
                'warm': (machine_ns, bridged),
                'relay': (machine_ns,
                          f'http://{AGENT_L2}:8090/{ramdisk.name}'),
                'same-L2': (machine_ns,
                            f'http://{AGENT_L2}:8091/{ramdisk.name}')}
        kinds = tuple(urls)
        print(f'file: {what}, {size / 2**20:.1f} MiB; {ROUNDS} rounds each, '
              'alternating; throughput = clients x size / time to the last; '
              f'load average {os.getloadavg()[0]:.1f} at the start; agent '
              f'cache_send_threads {SEND_THREADS or "default"}')
        _warm(topology, machine_ns, bridged, size)
        _warm(topology, machine_ns, bridged, size)
        print(f'HEAD, median of 40: warm through the agent '
              f'{_head_ms(machine_ns, bridged):.2f} ms (its conditional '
              f'request to Ironic included), straight from Ironic across '
              f'the L2 {_head_ms(*urls["direct-L2"]):.2f} ms')
        rss_before = None
        moved = time.time() - 3600
        for clients in (1, 20):
            times = {kind: [] for kind in kinds}
            first_bytes = {kind: [] for kind in kinds}
            agent_cpu = {'cold': 0.0, 'warm': 0.0}
            for index in range(ROUNDS):
                turn = index % len(kinds)
                order = kinds[turn:] + kinds[:turn]
                for kind in order:
                    if kind in agent_cpu and clients == 20 \
                            and rss_before is None:
                        rss_before = _status(agent.pid, 'VmRSS')
                    if kind == 'cold':
                        # A new version upstream: new mtime, new ETag,
                        # still older than a second (a strong validator).
                        moved -= 60
                        os.utime(ramdisk, (moved, moved))
                    elif kind == 'warm':
                        _warm(topology, machine_ns, bridged, size)
                    namespace, url = urls[kind]
                    cpu = _cpu_seconds(agent.pid)
                    times[kind].append(_clients(topology, namespace, url,
                                                clients, size,
                                                first_bytes[kind]))
                    if kind in agent_cpu:
                        agent_cpu[kind] += _cpu_seconds(agent.pid) - cpu
            rates = {kind: clients * size / 2**20 / statistics.median(t)
                     for kind, t in times.items()}
            spread = '/'.join(f'{max(t) - min(t):.2f}'
                              for t in times.values())
            gib = ROUNDS * clients * size / 2**30
            print(f'{clients:2d} client(s): direct {rates["direct"]:7.1f} '
                  f'MiB/s, direct-L2 {rates["direct-L2"]:7.1f} MiB/s '
                  f'({rates["direct-L2"] / rates["direct"]:.2f}x direct; '
                  f'warm {rates["warm"] / rates["direct-L2"]:.2f}x '
                  f'direct-L2), cold {rates["cold"]:7.1f} MiB/s '
                  f'({rates["cold"] / rates["direct"]:.2f}x direct, '
                  f'{agent_cpu["cold"] / gib:.2f} agent CPU s/GiB), warm '
                  f'{rates["warm"]:7.1f} MiB/s '
                  f'({rates["warm"] / rates["direct"]:.2f}x direct, '
                  f'{agent_cpu["warm"] / gib:.2f} agent CPU s/GiB), relay '
                  f'{rates["relay"]:7.1f} MiB/s '
                  f'({rates["relay"] / rates["direct"]:.2f}x direct), '
                  f'same-L2 {rates["same-L2"]:7.1f} MiB/s '
                  f'({rates["same-L2"] / rates["direct"]:.2f}x direct; warm '
                  f'{rates["warm"] / rates["same-L2"]:.2f}x same-L2); '
                  f'spreads {"/".join(kinds)} {spread} s; time to the '
                  f'first byte, median of every download: direct '
                  f'{1000 * statistics.median(first_bytes["direct"]):.1f} '
                  f'ms, warm '
                  f'{1000 * statistics.median(first_bytes["warm"]):.1f} ms; '
                  f'load average {os.getloadavg()[0]:.1f}')
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
