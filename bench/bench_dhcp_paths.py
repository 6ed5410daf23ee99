"""Per-packet cost of the agent's packet path, in process, by kind.

``tox -e bench -- dhcp_paths``. No sockets: ``DhcpServer.handle`` (parse,
lookup, decide, build) on prepared datagrams, so the figures are the CPU
the agent spends per packet. Cases: a reserved MAC's DISCOVER, its INFORM
(the review measured 281 us when INFORM rebuilt its template with scapy),
and DISCOVERs from new MACs on a dynamic range of 14 and of 4,094
addresses (the review measured 130 us and 2,965 us: the allocation walked
the range). Then the shared inspection range on the local store, full:
10,000 leases held (``SHARED``) beside the 10,000 reservations: a leased
MAC's DISCOVER (the OFFER carries what the store holds; p50 and p99 per
packet, wall clock and the thread's own CPU; back to back, then 1 ms
apart with the range's store threads running and sweeping beside, as in
the agent), and a new MAC's claim on
the store thread (the review measured 3.24 ms of CPU per new MAC on a
full range). Peer: the same reply built
by scapy per packet, what the templates avoid. Bounded: a fixed count per
case.
"""

import gc
import ipaddress
import socket
import sqlite3
import statistics
import tempfile
import time

from scapy.layers import dhcp as scapy_dhcp

from vmetal_ironic import reservation as res
from vmetal_ironic.dhcp_agent import cache as cache_mod
from vmetal_ironic.dhcp_agent import dynamic
from vmetal_ironic.dhcp_agent import messages
from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent import server as server_mod

SERVER = '198.18.0.1'
RESERVED = 10000
COUNT = 3000
SHARED = 10000
# Leased DISCOVERs sent 1 ms apart: three sweeps of the range among them.
PACED = 3000


def _packet(kind, mac, ciaddr='0.0.0.0'):
    chaddr = bytes.fromhex(mac.replace(':', '')) + bytes(10)
    return bytes(scapy_dhcp.BOOTP(op=1, xid=7, ciaddr=ciaddr, chaddr=chaddr)
                 / scapy_dhcp.DHCP(options=[('message-type', kind),
                                            ('param_req_list', [1, 3, 6]),
                                            'end']))


def _mac(index, prefix=0x52):
    return ':'.join(f'{b:02x}' for b in
                    (prefix, 0x54, index >> 24 & 255, index >> 16 & 255,
                     index >> 8 & 255, index & 255))


def _server(range_size=None):
    settings = messages.Settings(server_address=socket.inet_aton(SERVER))
    cache = cache_mod.ReservationCache()
    pool = None
    if range_size:
        first = int(ipaddress.IPv4Address('198.19.0.1'))
        pool = dynamic.DynamicPool(first, first + range_size - 1, 16)
    server = server_mod.DhcpServer(None, settings, cache,
                                   metrics_mod.Metrics(), dynamic=pool)
    cache.on_load = server.prepare
    base = int(ipaddress.IPv4Address('198.18.1.1'))
    cache.load([res.Reservation(
        mac=_mac(i), address=str(ipaddress.IPv4Address(base + i)),
        prefixlen=16, gateway=SERVER, dns_servers=(SERVER,),
        hostname=f'node-{i}') for i in range(RESERVED)], 1)
    return server


def _shared_full(directory):
    """A server whose shared inspection range (SHARED addresses) is full,
    on the local store, beside RESERVED reservations."""
    from vmetal_ironic.dhcp_agent import shared_range
    from vmetal_ironic.store import local
    store = local.LocalStore(path=f'{directory}/v.sqlite')
    store.inspection_leases().snapshot()      # creates the schema
    first = int(ipaddress.IPv4Address('198.19.0.1'))
    expires = time.time() + 3600
    db = sqlite3.connect(f'{directory}/v.sqlite')
    db.executemany(
        "INSERT INTO allocations (scope, address, pool, owner, mac, purpose, "
        "created_at, expires, version) VALUES ('default', ?, 'inspection', "
        "?, ?, 'inspection', 0, ?, 1)",
        [(first + i, f'Inspection/{_mac(i, 0x0a)}', _mac(i, 0x0a), expires)
         for i in range(SHARED)])
    db.execute("UPDATE counters SET value = value + 1 WHERE name = "
               "'inspection'")
    db.commit()
    db.close()
    server = _server()
    shared = shared_range.SharedRange(
        store.inspection_leases(), first, first + SHARED - 1, server.cache,
        server.metrics, lease_time=600)
    shared.feed.refresh(force=True)
    server.shared = shared
    shared.on_ready = lambda: None
    return server, shared, store


class _GcWatch:
    """Collector pauses (ns) inside the packets measured: a DISCOVER that
    took longer than the path's own CPU either waited for the collector
    (counted here) or for the CPU (the scheduler)."""

    def __init__(self):
        self.total = 0
        self.longest = 0
        self.runs = 0
        self._began = 0

    def __call__(self, phase, info):
        if phase == 'start':
            self._began = time.perf_counter_ns()
            return
        pause = time.perf_counter_ns() - self._began
        self.total += pause
        self.runs += 1
        self.longest = max(self.longest, pause)

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


def _latencies(server, packets, gap=0.0):
    """p50 and p99 per packet, wall clock and the thread's CPU (µs): on a
    shared machine the wall p99 is the scheduler's (the thread preempted
    mid-packet), the CPU p99 the packet path's own tail. Also printed:
    how many packets took over 1 ms of wall clock, and how many of those
    had a collector pause inside. ``gap``: seconds slept before each
    packet (packets arriving one by one, other threads running between)."""
    took = []
    cpu = []
    slow = in_gc = 0
    with _GcWatch() as watch:
        for packet in packets:
            if gap:
                time.sleep(gap)
            paused = watch.total
            started = time.perf_counter_ns()
            cpu_started = time.thread_time_ns()
            server.handle(packet)
            cpu.append(time.thread_time_ns() - cpu_started)
            took.append(time.perf_counter_ns() - started)
            if took[-1] > 1_000_000:
                slow += 1
                in_gc += watch.total != paused
    note = (f'{slow} of {len(packets)} over 1 ms wall, {in_gc} of them '
            f'with a GC pause inside; {watch.runs} collections, longest '
            f'{watch.longest / 1e6:.2f} ms')
    took.sort()
    cpu.sort()
    return (statistics.median(took) / 1000,
            took[int(len(took) * 0.99)] / 1000,
            statistics.median(cpu) / 1000, cpu[int(len(cpu) * 0.99)] / 1000,
            note)


def _fmt(p50, p99, cpu_p50, cpu_p99, note):
    return (f'p50 {p50:6.1f} us  p99 {p99:6.1f} us (thread CPU p50 '
            f'{cpu_p50:5.1f} us  p99 {cpu_p99:6.1f} us)\n    ({note})')


def _shared_cases():
    with tempfile.TemporaryDirectory() as directory:
        server, shared, store = _shared_full(directory)
        leased = [_packet('discover', _mac(i % SHARED, 0x0a))
                  for i in range(COUNT)]
        print(f'  shared range full ({len(shared.cache)} leases), leased '
              f'DISCOVER -> OFFER  {_fmt(*_latencies(server, leased))}')
        # As in the agent: the store threads run beside the packet thread
        # and the first sweeps the whole range every second, holding the
        # GIL while it does.
        shared.claimer.start()
        try:
            paced = _latencies(server, leased[:PACED], gap=0.001)
        finally:
            shared.claimer.stop()
        print(f'  same, 1 ms apart, store threads sweeping beside '
              f'{_fmt(*paced)}')
        fresh = [_packet('discover', _mac(i, 0x06)) for i in range(COUNT)]
        print(f'  shared range full, new-MAC DISCOVER (queued, silent) '
              f'{_fmt(*_latencies(server, fresh))}')
        started = time.process_time()
        claims = 1000
        for i in range(claims):
            shared.run_safely('claim', _mac(i, 0x07), None)
        cost = (time.process_time() - started) / claims * 1e6
        print(f'  shared range full, claim per new MAC (store thread) '
              f'{cost:7.1f} us CPU')
        store.close()


def _per_packet(server, packets):
    started = time.perf_counter()
    for packet in packets:
        server.handle(packet)
    return (time.perf_counter() - started) / len(packets) * 1e6


def _scapy_peer(count):
    started = time.perf_counter()
    for index in range(count):
        bytes(scapy_dhcp.BOOTP(op=2, xid=7, yiaddr='198.18.1.1',
                               chaddr=bytes.fromhex(
                                   _mac(index).replace(':', '')))
              / scapy_dhcp.DHCP(options=[
                  ('message-type', 'offer'), ('server_id', SERVER),
                  ('lease_time', 3600), ('subnet_mask', '255.255.0.0'),
                  ('router', SERVER), ('name_server', SERVER),
                  ('hostname', b'node-1'), 'end']))
    return (time.perf_counter() - started) / count * 1e6


def main():
    print(f'packet path, in process: {RESERVED} reservations, {COUNT} '
          'packets per case')
    server = _server()
    known = [_packet('discover', _mac(i % RESERVED)) for i in range(COUNT)]
    print(f'  reserved DISCOVER          {_per_packet(server, known):7.1f} '
          'us/packet')
    inform = [_packet('inform', _mac(i % RESERVED),
                      str(ipaddress.IPv4Address(
                          int(ipaddress.IPv4Address('198.18.1.1'))
                          + i % RESERVED))) for i in range(COUNT)]
    print(f'  reserved INFORM, 1st/MAC   {_per_packet(server, inform):7.1f} '
          'us/packet')
    print(f'  reserved INFORM, again     {_per_packet(server, inform):7.1f} '
          'us/packet')
    for size in (14, 4094):
        server = _server(size)
        fresh = [_packet('discover', _mac(i, 0x02)) for i in range(COUNT)]
        cost = _per_packet(server, fresh)
        print(f'  new-MAC DISCOVER, range {size:<5d}'
              f'{cost:7.1f} us/packet ({len(server.dynamic)} leases, '
              f'{len(server.builder._shared)} shared templates)')
    _shared_cases()
    print(f'  peer: scapy builds each reply {_scapy_peer(COUNT // 3):7.1f} '
          'us/packet')


if __name__ == '__main__':
    main()
