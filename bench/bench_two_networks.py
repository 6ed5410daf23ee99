"""The whole provisioning flow in both topologies, phase by phase, in the
same run: Ironic across the agent's bridge (``--two-networks``) against
Ironic on the machine's L2 (the default).

Run as root: ``tox -e bench -- two_networks``. Both runs use the vmetal
provider and agent, the same images and Ironic; ``VMETAL_BENCH_FULL_ROUNDS``
rounds (default 1) in alternating order, medians and spreads as in
``bench_full_flow``. The goal: two-networks within 1.05x of same-L2 in
every phase.
"""

import os

import bench_full_flow

# Ironic's API in plain HTTP across two networks too (the lab's default
# there is TLS): the phases then differ by the bridge alone, as in the
# figures measured before the lab served the API over TLS.
RUNS = (('two-networks', ['--two-networks', '--ironic-api', 'http']),
        ('same-l2', []))


def main():
    if os.geteuid() != 0:
        print('two_networks: skipped (needs root)')
        return
    bench_full_flow.compare(RUNS, 'two networks against one L2')
