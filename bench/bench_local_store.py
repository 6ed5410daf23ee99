"""The embedded store: 10,000 hosts allocated into one /16, 1 and 8 processes.

Ours keeps a copy of the held addresses per process and reads them again
only when the store's counter says another process wrote. The peer is the
same store reading every held address of the scope at each allocation
(what it did before the copy; its cost grows with the fleet). Both fill a
fresh database in the same run; every process stops at its share of the
hosts or at the time budget, whichever comes first, and the result is
checked: every owner one address, no address twice.
"""

import multiprocessing
import os
import tempfile
import time

from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.store import local

HOSTS = int(os.environ.get('VMETAL_BENCH_HOSTS', '10000'))
BUDGET = float(os.environ.get('VMETAL_BENCH_BUDGET', '300'))
CIDR = '198.18.0.1/16'


class _RereadingStore(local.LocalStore):
    """The peer: the copy is distrusted before every allocation."""

    def _candidate(self, db, pool):
        self._held.forget()
        return super()._candidate(db, pool)


def _fill(kind, path, index, workers, start, deadline, results):
    store = kind(path=path)
    pool = ipam_pool.parse_pool(CIDR)
    done = 0
    start.wait(60)
    try:
        for host in range(index, HOSTS, workers):
            if time.time() > deadline:
                break
            store.allocate(pool, f'Metal3Machine/bench/m{host:05d}')
            done += 1
    finally:
        store.close()
        results.put((done, time.time()))


def _run(kind, workers):
    context = multiprocessing.get_context('fork')
    with tempfile.TemporaryDirectory(prefix='vbench-local-') as directory:
        path = os.path.join(directory, 'vmetal.sqlite')
        kind(path=path).close()
        start, results = context.Event(), context.Queue()
        deadline = time.time() + BUDGET
        procs = [context.Process(target=_fill, args=(
            kind, path, i, workers, start, deadline, results))
            for i in range(workers)]
        for proc in procs:
            proc.start()
        began = time.time()
        start.set()
        finished = [results.get(timeout=BUDGET + 60) for _ in procs]
        for proc in procs:
            proc.join(30)
        done = sum(count for count, _ in finished)
        seconds = max(end for _, end in finished) - began
        store = local.LocalStore(path=path)
        held = store.list_allocations()
        store.close()
    addresses = [a.address for a in held]
    if len(held) != done or len(set(addresses)) != done:
        raise RuntimeError(f'{kind.__name__}: {done} allocations but '
                           f'{len(set(addresses))} distinct addresses stored')
    return done, seconds


def main():
    print(f'{HOSTS} hosts into {CIDR}; {BUDGET:.0f} s budget per case; '
          'allocators are processes on one SQLite file')
    print(f'{"procs":>5} {"ours allocs/s":>14} {"peer allocs/s":>14} '
          f'{"ratio":>6}')
    for workers in (1, 8):
        ours, ours_s = _run(local.LocalStore, workers)
        peer, peer_s = _run(_RereadingStore, workers)
        note = '' if peer == HOSTS else f'  (peer: {peer} in budget)'
        print(f'{workers:>5} {ours / ours_s:>14,.0f} {peer / peer_s:>14,.0f} '
              f'{(ours / ours_s) / (peer / peer_s):>5.1f}x{note}')
