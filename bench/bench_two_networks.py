"""The whole provisioning flow in both topologies, phase by phase, in the
same run: Ironic across the agent's bridge (``--two-networks``) against
Ironic on the machine's L2 (the default).

Run as root: ``tox -e bench -- two_networks``. Both runs use the vmetal
provider and agent, the same images and Ironic; ``VMETAL_BENCH_FULL_ROUNDS``
rounds (default 1) in alternating order, medians and spreads as in
``bench_full_flow``. The goal: two-networks within 1.05x of same-L2 in
every phase.

``VMETAL_BENCH_TWO_NETWORKS_AA=same-l2`` (or ``two-networks``) runs that
one topology against itself instead, with the same machinery, order and
statistics: an A/A comparison whose ratios are the bench's own noise, to
read the A/B ratios against.
"""

import os

import bench_full_flow

# Ironic's API in plain HTTP across two networks too (the lab's default
# there is TLS): the phases then differ by the bridge alone, as in the
# figures measured before the lab served the API over TLS.
RUNS = (('two-networks', ['--two-networks', '--ironic-api', 'http']),
        ('same-l2', []))
AA_VARIABLE = 'VMETAL_BENCH_TWO_NETWORKS_AA'


def runs(aa=None):
    """``(runs, what)`` to compare: the two topologies, or with ``aa`` (a
    topology's name) that topology twice.

    :raises ValueError: ``aa`` names no topology.
    """
    if not aa:
        return RUNS, 'two networks against one L2'
    arguments = dict(RUNS)
    if aa not in arguments:
        raise ValueError(f'{AA_VARIABLE}={aa!r}: not one of '
                         f'{", ".join(arguments)}')
    return ((f'{aa}-A', arguments[aa]), (f'{aa}-B', arguments[aa])), \
        f'A/A: {aa} against itself'


def main():
    if os.geteuid() != 0:
        print('two_networks: skipped (needs root)')
        return
    try:
        compared, what = runs(os.environ.get(AA_VARIABLE))
    except ValueError as exc:
        print(f'two_networks: {exc}')
        return
    bench_full_flow.compare(compared, what)
