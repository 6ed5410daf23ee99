"""The whole provisioning flow under TCG, phase by phase, vmetal against
dnsmasq in the same run.

Run as root: ``tox -e bench -- full_flow``. Runs ``vmetal-lab --full
--json`` twice, one after the other on the same machine, images from the
cache (a fresh machine builds them first; their time is printed apart):

* ``[dhcp]dhcp_provider = vmetal`` with vmetal-dhcp-agent (the product);
* ``[dhcp]dhcp_provider = dnsmasq`` with dnsmasq serving the host and
  option files Ironic writes (what Metal3 users run today), the installed
  OS given its address in the config drive by the lab.

Same Ironic, sushy-tools, OVMF, IPA ramdisk and image; each run has its
own Ironic caches. Prints each phase's seconds side by side and the ratio
vmetal / dnsmasq (the goal: every phase within 1.0x). One run of each: on
a shared machine a phase can move by tens of seconds between runs, so
read a ratio near 1 as "the same".
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

LAB = pathlib.Path(sys.executable).parent / 'vmetal-lab'
PROVIDERS = ('vmetal', 'dnsmasq')
RUN_TIMEOUT = 3600


def run(provider):
    """One ``vmetal-lab --full --json`` run: its summary, or ``None``."""
    with tempfile.TemporaryDirectory(prefix='bench-full-') as workdir:
        try:
            result = subprocess.run(
                [str(LAB), '--full', '--json', '--dhcp', provider,
                 '--workdir', workdir],
                capture_output=True, text=True, timeout=RUN_TIMEOUT,
                check=False)
        except subprocess.TimeoutExpired:
            print(f'full_flow[{provider}]: no result in {RUN_TIMEOUT}s')
            return None
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    if not summary.get('ok'):
        print(f'full_flow[{provider}]: FAILED: '
              f'{result.stderr.strip()[-500:]}')
        return None
    return summary


def ratio(ours, theirs):
    return f'{ours / theirs:5.2f}x' if theirs else '    -'


def main():
    if os.geteuid() != 0:
        print('full_flow: skipped (needs root)')
        return
    summaries = {}
    for provider in PROVIDERS:
        summary = run(provider)
        if summary is None:
            return
        summaries[provider] = summary
    ours, theirs = (summaries[name] for name in PROVIDERS)
    print(f'image builds {ours["build_seconds"]:.0f}s (0 = cached); '
          f'runs in this order: {", ".join(PROVIDERS)}')
    print(f'{"phase":<22} {"vmetal":>8} {"dnsmasq":>8}  vmetal/dnsmasq')
    steps = {name: {step['name']: step['seconds'] for step in s['steps']}
             for name, s in summaries.items()}
    rows = list(steps['vmetal'])
    to_active = ['deploy', 'boot_from_disk']
    for name in rows:
        a, b = steps['vmetal'][name], steps['dnsmasq'].get(name, 0.0)
        print(f'{name:<22} {a:7.1f}s {b:7.1f}s  {ratio(a, b)}')
    for label, names in (('deploy request->active', to_active),
                         ('deploy request->OS up',
                          [*to_active, 'os_network'])):
        a = sum(steps['vmetal'][n] for n in names)
        b = sum(steps['dnsmasq'][n] for n in names)
        print(f'{label:<22} {a:7.1f}s {b:7.1f}s  {ratio(a, b)}')
    print(f'{"whole flow":<22} {ours["seconds"]:7.1f}s '
          f'{theirs["seconds"]:7.1f}s  '
          f'{ratio(ours["seconds"], theirs["seconds"])}')
    for name, summary in summaries.items():
        print(f'{name}: OS address {summary["os_address"]} '
              f'({summary["os_address_source"]}), expected '
              f'{summary["allocated_address"]}')


if __name__ == '__main__':
    main()
