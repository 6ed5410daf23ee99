"""The whole provisioning flow under TCG, phase by phase.

Run as root: ``tox -e bench -- full_flow``. Runs ``vmetal-lab --full
--json`` once (images from the cache; a fresh machine builds them first,
their time is printed apart) and prints each phase's time. The peer is
the dnsmasq run recorded in ``reference/full-flow.md`` on this kind of
machine (Ironic's dnsmasq DHCP, same Ironic, sushy-tools, OVMF, TCG):
``active`` 4:01 and the OS configured 5:29 after the deploy request.
That peer is NOT from the same run - a same-run dnsmasq flow is not
built yet - so compare with care: the machine here is shared.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

LAB = pathlib.Path(sys.executable).parent / 'vmetal-lab'
# reference/full-flow.md, dnsmasq, seconds after the deploy request.
DNSMASQ_ACTIVE = 4 * 60 + 1
DNSMASQ_OS_CONFIGURED = 5 * 60 + 29


def main():
    if os.geteuid() != 0:
        print('full_flow: skipped (needs root)')
        return
    with tempfile.TemporaryDirectory(prefix='bench-full-') as workdir:
        result = subprocess.run(
            [str(LAB), '--full', '--json', '--workdir', workdir],
            capture_output=True, text=True, timeout=3600, check=False)
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    if not summary.get('ok'):
        print(f'full_flow: FAILED: {result.stderr.strip()[-500:]}')
        return
    steps = {step['name']: step['seconds'] for step in summary['steps']}
    print(f'image builds {summary["build_seconds"]:.0f}s (0 = cached)')
    for name, seconds in steps.items():
        print(f'{name:<20} {seconds:7.1f}s')
    to_active = steps['deploy'] + steps['boot_from_disk']
    to_os = to_active + steps['os_network']
    print(f'deploy request -> active:        {to_active:6.0f}s '
          f'(dnsmasq reference {DNSMASQ_ACTIVE}s, '
          f'{to_active / DNSMASQ_ACTIVE:.2f}x)')
    print(f'deploy request -> OS configured: {to_os:6.0f}s '
          f'(dnsmasq reference {DNSMASQ_OS_CONFIGURED}s, '
          f'{to_os / DNSMASQ_OS_CONFIGURED:.2f}x)')
    print(f'whole flow {summary["seconds"]:.0f}s, OS address '
          f'{summary["os_address"]} ({summary["os_address_source"]}), '
          f'allocated {summary["allocated_address"]}')


if __name__ == '__main__':
    main()
