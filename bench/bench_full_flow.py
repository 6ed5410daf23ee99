"""The whole provisioning flow under TCG, phase by phase, vmetal against
dnsmasq in the same run.

Run as root: ``tox -e bench -- full_flow``. Runs ``vmetal-lab --full
--json`` for each provider, ``VMETAL_BENCH_FULL_ROUNDS`` times (default
1), the order swapped every round (vmetal, dnsmasq; dnsmasq, vmetal; ...)
so that neither always runs second on a machine warmed or loaded by the
first; images from the cache (a fresh machine builds them first; their
time is printed apart):

* ``[dhcp]dhcp_provider = vmetal`` with vmetal-dhcp-agent (the product);
* ``[dhcp]dhcp_provider = dnsmasq`` with dnsmasq serving the host and
  option files Ironic writes (what Metal3 users run today), the installed
  OS given its address in the config drive by the lab.

Same Ironic, sushy-tools, OVMF, IPA ramdisk and image; each run has its
own Ironic caches. Prints each phase's median seconds side by side, the
ratio vmetal / dnsmasq (the goal: every phase within 1.0x), and with
several rounds each phase's spread (slowest minus fastest of one provider)
so a ratio can be read against the noise. The two runs of a round follow
each other, so with several rounds each phase's ratio is also taken
round by round (paired: both runs saw the same minutes of the machine)
and the lowest and highest of those per-round ratios are printed.
"""

import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

LAB = pathlib.Path(sys.executable).parent / 'vmetal-lab'
PROVIDERS = ('vmetal', 'dnsmasq')
# (label, vmetal-lab arguments) of the two runs compared, ours first.
DHCP_RUNS = (('vmetal', ['--dhcp', 'vmetal']),
             ('dnsmasq', ['--dhcp', 'dnsmasq']))
RUN_TIMEOUT = 3600
ROUNDS = int(os.environ.get('VMETAL_BENCH_FULL_ROUNDS', '1'))
#: A directory to keep each run's logs in (Ironic's, the machine's serial
#: console, the agent's and the BMC's), to see where a phase's time went;
#: unset, they go with the run's work directory.
KEEP_LOGS = os.environ.get('VMETAL_BENCH_FULL_LOGS')
LOGS = ('ironic/ironic.log', 'machine/serial.log', 'net/agent.log',
        'net/sushy.log', 'ironic/ironic.conf')


def run(provider, args=None):
    """One ``vmetal-lab --full --json`` run: its summary, or ``None``.

    :param provider: the run's label.
    :param args: its arguments (default: ``--dhcp <provider>``).
    """
    args = ['--dhcp', provider] if args is None else args
    with tempfile.TemporaryDirectory(prefix='bench-full-') as workdir:
        try:
            result = subprocess.run(
                [str(LAB), '--full', '--json', *args,
                 '--workdir', workdir],
                capture_output=True, text=True, timeout=RUN_TIMEOUT,
                check=False)
        except subprocess.TimeoutExpired:
            print(f'full_flow[{provider}]: no result in {RUN_TIMEOUT}s')
            return None
        finally:
            if KEEP_LOGS:
                keep_logs(workdir, provider)
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    if not summary.get('ok'):
        print(f'full_flow[{provider}]: FAILED: '
              f'{result.stderr.strip()[-500:]}')
        return None
    return summary


def keep_logs(workdir, label):
    """Copy a run's logs into ``KEEP_LOGS/<label>-<n>`` (the first free
    ``n``)."""
    keep = pathlib.Path(KEEP_LOGS)
    number = 1
    while (keep / f'{label}-{number}').exists():
        number += 1
    target = keep / f'{label}-{number}'
    for name in LOGS:
        source = pathlib.Path(workdir) / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / name)


def ratio(ours, theirs):
    return f'{ours / theirs:5.2f}x' if theirs else '    -'


def paired_ratios(ours, theirs):
    """The ratio of each round's two runs (rounds where the peer took no
    time left out)."""
    return [mine / peer for mine, peer in zip(ours, theirs, strict=True)
            if peer]


def _order(round_index, names=PROVIDERS):
    return names if round_index % 2 == 0 else names[::-1]


def _phases(summary):
    """``{phase: seconds}`` of one run, with the two spans the goal names
    and the whole flow."""
    steps = {step['name']: step['seconds'] for step in summary['steps']}
    to_active = steps.get('deploy', 0.0) + steps.get('boot_from_disk', 0.0)
    steps['deploy request->active'] = to_active
    steps['deploy request->OS up'] = to_active + steps.get('os_network', 0.0)
    steps['whole flow'] = summary['seconds']
    return steps


def compare(runs_args, what):
    """Run the two configurations of ``runs_args`` in alternating order and
    print each phase side by side (``what`` names the comparison)."""
    names = tuple(name for name, _args in runs_args)
    arguments = dict(runs_args)
    ours, peer = names
    runs = {name: [] for name in names}
    builds = None
    for round_index in range(max(1, ROUNDS)):
        for name in _order(round_index, names):
            summary = run(name, arguments[name])
            if summary is None:
                return
            if builds is None:
                builds = summary['build_seconds']
            runs[name].append(summary)
    rounds = len(runs[ours])
    orders = '; '.join(', '.join(_order(i, names)) for i in range(rounds))
    print(f'{what}: image builds {builds:.0f}s (0 = cached); {rounds} '
          f'round(s), runs in this order: {orders}')
    phases = {name: [_phases(s) for s in summaries]
              for name, summaries in runs.items()}
    spread = rounds > 1
    print(f'{"phase (median)":<24} {ours:>12} {peer:>12}  {ours}/{peer}'
          + (f'   spread {ours} / {peer}   per-round ratios'
             if spread else ''))
    for phase in phases[ours][0]:
        mine = [p[phase] for p in phases[ours]]
        theirs = [p.get(phase, 0.0) for p in phases[peer]]
        a, b = statistics.median(mine), statistics.median(theirs)
        line = f'{phase:<24} {a:11.1f}s {b:11.1f}s  {ratio(a, b)}'
        if spread:
            paired = paired_ratios(mine, theirs)
            line += (f'        {max(mine) - min(mine):5.1f}s / '
                     f'{max(theirs) - min(theirs):5.1f}s'
                     + (f'   {min(paired):.2f}-{max(paired):.2f}x'
                        if paired else ''))
        print(line)
    for name, summaries in runs.items():
        for summary in summaries:
            print(f'{name}: OS address {summary["os_address"]} '
                  f'({summary["os_address_source"]}), expected '
                  f'{summary["allocated_address"]}')


def main():
    if os.geteuid() != 0:
        print('full_flow: skipped (needs root)')
        return
    compare(DHCP_RUNS, 'vmetal against dnsmasq')


if __name__ == '__main__':
    main()
