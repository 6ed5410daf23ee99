"""Unknown hosts: first DISCOVER to OFFER, shared inspection range vs the
per-agent dynamic range.

``tox -e bench -- inspection``. Starts the same throw-away control plane
as the functional tests (tests/functional/kube.py). Two agents' packet
paths (``DhcpServer`` with their ``SharedRange``, each with its own
Kubernetes API client) serve on loopback UDP sockets in this process; the
generator acts as a relay agent (giaddr 127.0.0.1, so replies come back
to it by unicast, no broadcast, nothing leaves the machine) and sends each
new MAC's DISCOVER to both agents at once, as a broadcast reaches both.

Measured per case, over ``N`` (200) new MACs one after the other, then a
burst of ``BURST`` (50) new MACs at once:

* first OFFER latency (p50/p99): DISCOVER sent -> the first OFFER back;
* whether both agents offered and offered the same address;
* API requests per new lease: the claim path's requests (claim, bind,
  adoption by the second agent) counted on a client of their own, apart
  from the requests of the agents' list-then-watch feeds (also printed).

Cases: the shared range on the Kubernetes store (2 agents); the shared
range on the local SQLite store (2 agents on one file); the peer, the
per-agent ``dynamic_range`` (memory only, 1 agent). Then at scale:
``SCALE`` (10,000) leases held in one scope, the agent's cold load of
them (paged list into its cache: time, peak memory) and the same cases
with new MACs among them. No retransmission: an
exchange without an OFFER within ``TIMEOUT`` seconds counts as lost.
"""

import concurrent.futures
import os
import pathlib
import select
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import tracemalloc

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.functional import kube  # noqa: E402
from vmetal_ironic.dhcp_agent import cache as cache_mod  # noqa: E402
from vmetal_ironic.dhcp_agent import dynamic  # noqa: E402
from vmetal_ironic.dhcp_agent import lease_cache  # noqa: E402
from vmetal_ironic.dhcp_agent import messages  # noqa: E402
from vmetal_ironic.dhcp_agent import metrics as metrics_mod  # noqa: E402
from vmetal_ironic.dhcp_agent import server as server_mod  # noqa: E402
from vmetal_ironic.dhcp_agent import shared_range  # noqa: E402
from vmetal_ironic.store import local  # noqa: E402

N = int(os.environ.get('VMETAL_BENCH_INSPECTION_N', '200'))
BURST = int(os.environ.get('VMETAL_BENCH_INSPECTION_BURST', '50'))
SCALE = int(os.environ.get('VMETAL_BENCH_INSPECTION_SCALE', '10000'))
TIMEOUT = 5.0
FIRST = int.from_bytes(socket.inet_aton('198.18.10.1'), 'big')
SIZE = 4000
COOKIE = b'\x63\x82\x53\x63'


class Split:
    """The store's lease interface with the claim path on one object and
    the feed on another, so each one's API requests are counted apart."""

    def __init__(self, claims, feed):
        self.claims, self.feed = claims, feed

    def snapshot(self):
        return self.feed.snapshot()

    def follow(self, revision, timeout):
        return self.feed.follow(revision, timeout)

    def claim(self, *args):
        return self.claims.claim(*args)

    def renew(self, *args):
        return self.claims.renew(*args)

    def decline(self, *args):
        return self.claims.decline(*args)

    def remove(self, *args):
        return self.claims.remove(*args)


class Agent:
    """One agent's packet path on a loopback socket, served by a thread."""

    def __init__(self, address, client_port, leases=None, pool=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        settings = messages.Settings(server_address=socket.inet_aton(address))
        cache = cache_mod.ReservationCache()
        metrics = metrics_mod.Metrics()
        self.shared = None
        if leases is not None:
            self.shared = shared_range.SharedRange(
                leases, FIRST, FIRST + SIZE - 1, cache, metrics,
                gateway='198.18.0.1', lease_time=600, poll_interval=10.0)
        self.server = server_mod.DhcpServer(
            self.sock, settings, cache, metrics, dynamic=pool,
            server_port=client_port, shared=self.shared)
        cache.on_load = self.server.prepare
        cache.load([], 0)
        self._stop = threading.Event()
        if self.shared is not None:
            self.shared.start()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop.is_set():
            self.server.serve_once(0.2)

    def close(self):
        self._stop.set()
        self.thread.join(5)
        if self.shared is not None:
            self.shared.stop()
        self.server.close()


def _discover(xid, mac):
    header = struct.pack('!BBBB4sHH4s4s4s4s16s64s128s', 1, 1, 6, 1, xid, 0,
                         0, bytes(4), bytes(4), bytes(4),
                         socket.inet_aton('127.0.0.1'),
                         bytes.fromhex(mac.replace(':', '')), b'', b'')
    return header + COOKIE + bytes([53, 1, 1, 0x37, 3, 1, 3, 6, 255])


def _mac(case, index):
    return f'52:54:{case:02x}:{index >> 16 & 255:02x}:' \
           f'{index >> 8 & 255:02x}:{index & 255:02x}'


def _exchange(client, agents, macs):
    """Send each MAC's DISCOVER to every agent at once; collect OFFERs.

    :returns: ``{mac: (first latency or None, {server: address})}``.
    """
    sent, found = {}, {}
    xids = {}
    for index, mac in enumerate(macs):
        xid = struct.pack('!I', index + 1)
        xids[xid] = mac
        sent[mac] = time.monotonic()
        for agent in agents:
            client.sendto(_discover(xid, mac), ('127.0.0.1', agent.port))
        found[mac] = [None, {}]
    deadline = time.monotonic() + TIMEOUT
    want = len(macs) * len(agents)
    got = 0
    while got < want and time.monotonic() < deadline:
        ready, _, _ = select.select([client], [], [], 0.1)
        if not ready:
            continue
        data = client.recv(4096)
        now = time.monotonic()
        mac = xids.get(data[4:8])
        if mac is None or len(data) < 244:
            continue
        entry = found[mac]
        if entry[0] is None:
            entry[0] = now - sent[mac]
        server = data[20:24]     # siaddr is ours; use the option instead
        options = data[240:]
        index = 0
        while index + 1 < len(options) and options[index] != 255:
            if options[index] == 54:
                server = options[index + 2:index + 6]
            index += 2 + options[index + 1] if options[index] else 1
        entry[1][server] = data[16:20]
        got += 1
    return found


def _report(label, found, agents, requests=None, feed=None):
    latencies = sorted(v[0] for v in found.values() if v[0] is not None)
    lost = len(found) - len(latencies)
    both = sum(len(v[1]) == len(agents) for v in found.values())
    same = sum(len(set(v[1].values())) == 1 for v in found.values()
               if v[1])
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies \
        else float('nan')
    text = (f'{label:<46} {len(found):>5} {lost:>5} '
            f'{statistics.median(latencies) * 1000 if latencies else 0:>8.1f}'
            f' {p99 * 1000:>8.1f} {both:>5} {same:>5}')
    if requests is not None:
        text += f' {requests / max(len(found) - lost, 1):>8.2f} {feed:>5}'
    print(text)


def _run_case(label, make_agents, count_requests=None):
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(('127.0.0.1', 0))
    agents = make_agents(client.getsockname()[1])
    try:
        case = len(label) + int(time.time()) % 200
        for name, macs in (
                ('sequential', [_mac(case, i) for i in range(N)]),
                (f'burst of {BURST}', [_mac(case, N + i)
                                       for i in range(BURST)])):
            before = count_requests() if count_requests else None
            if name == 'sequential':
                found = {}
                for mac in macs:
                    found.update(_exchange(client, agents, [mac]))
            else:
                found = _exchange(client, agents, macs)
            if count_requests:
                claims, feed = count_requests()
                _report(f'{label}, {name}', found, agents,
                        claims - before[0], feed - before[1])
            else:
                _report(f'{label}, {name}', found, agents)
    finally:
        for agent in agents:
            agent.close()
        client.close()


def _scoped_store(settings, scope):
    from vmetal_ironic.store import kubernetes as kube_store
    conf = kube.store_conf(settings)
    conf.set_override('address_scope', scope, group='vmetal')
    return kube_store.KubernetesStore(conf)


def _scale_case(settings):
    """``SCALE`` leases held in one scope: the agent's cold load of them,
    then new MACs among them."""
    global FIRST, SIZE
    scope = 'scale'
    filler = _scoped_store(settings, scope)
    book = filler.inspection_leases()
    base = int.from_bytes(socket.inet_aton('198.18.64.1'), 'big')
    expires = time.time() + 3600

    def fill(index):
        text = socket.inet_ntoa((base + index).to_bytes(4, 'big'))
        return book.claim(_mac(250, index), [text], expires)[0] is not None

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        held = sum(pool.map(fill, range(SCALE)))
    filled = time.monotonic() - started
    print(f'\nscale: {held} leases held in one scope (made at '
          f'{held / filled:.0f}/s by 8 threads)')
    cache = lease_cache.LeaseCache(lambda lease: lease.address)
    feed = shared_range.LeaseFeed(filler.inspection_leases(), cache)
    tracemalloc.start()
    started = time.monotonic()
    feed.refresh(force=True)
    cold = time.monotonic() - started
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f'  agent cold load of {len(cache)} leases: {cold:.2f} s, peak '
          f'{peak / 2 ** 20:.1f} MiB')
    FIRST, SIZE = base, SCALE + 1000
    stores = [_scoped_store(settings, scope) for _ in range(4)]
    try:
        def count():
            return (sum(s.api.requests for s in stores[:2]),
                    sum(s.api.requests for s in stores[2:]))

        print(f'\n{"case":<46} {"MACs":>5} {"lost":>5} {"p50 ms":>8} '
              f'{"p99 ms":>8} {"both":>5} {"same":>5} {"req/lease":>8} '
              f'{"feed":>5}')
        _run_case(f'shared, Kubernetes, {held} held, 2 agents',
                  lambda port: [Agent(f'198.18.0.{2 + i}', port, leases=Split(
                      stores[i].inspection_leases(),
                      stores[2 + i].inspection_leases()))
                      for i in range(2)], count)
    finally:
        for store in [filler, *stores]:
            store.close()


def main():
    print(f'{N} new MACs one after the other, then {BURST} at once; range '
          f'of {SIZE}; each DISCOVER sent to every agent of the case; '
          f'{TIMEOUT:.0f} s without an OFFER = lost')
    print(f'\n{"case":<46} {"MACs":>5} {"lost":>5} {"p50 ms":>8} '
          f'{"p99 ms":>8} {"both":>5} {"same":>5} {"req/lease":>8} '
          f'{"feed":>5}')
    _run_case('dynamic_range, 1 agent (peer)', lambda port: [Agent(
        '198.18.0.2', port, pool=dynamic.DynamicPool(
            FIRST, FIRST + SIZE - 1, 16))])

    with tempfile.TemporaryDirectory() as tmp:
        path = str(pathlib.Path(tmp) / 'v.sqlite')
        stores = [local.LocalStore(path=path) for _ in range(2)]
        try:
            _run_case('shared, SQLite store, 2 agents', lambda port: [
                Agent(f'198.18.0.{2 + i}', port,
                      leases=store.inspection_leases())
                for i, store in enumerate(stores)])
        finally:
            for store in stores:
                store.close()

    from vmetal_ironic.store import kubernetes as kube_store
    with kube.KubeCluster(kube.kube_binaries()) as cluster:
        cluster.apply_kustomization(kube.MANIFESTS / 'rbac')
        settings = cluster.settings()
        stores = [kube_store.KubernetesStore(kube.store_conf(settings))
                  for _ in range(4)]
        claims, feeds = stores[:2], stores[2:]
        try:
            def count():
                return (sum(s.api.requests for s in claims),
                        sum(s.api.requests for s in feeds))

            _run_case('shared, Kubernetes store, 2 agents', lambda port: [
                Agent(f'198.18.0.{2 + i}', port, leases=Split(
                    claims[i].inspection_leases(),
                    feeds[i].inspection_leases()))
                for i in range(2)], count)
        finally:
            for store in stores:
                store.close()
        _scale_case(settings)
    print('\nreq/lease: API requests of the claim path (both agents) per '
          'MAC offered; feed: requests of the two list-then-watch feeds '
          'during the case.')


if __name__ == '__main__':
    main()
