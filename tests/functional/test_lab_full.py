"""vmetal-lab --full as a newcomer runs it: Ironic drives a Redfish BMC,
IPA inspects and deploys, the installed OS comes up on its allocated
address from the config drive, and nothing is left behind.

One run covers the faults too (``--faults``): a node enrolled with a
wrong BMC password must fail with a readable ``last_error``, and a deploy
of an image URL that 404s must be refused readably while the address
stays allocated, and so must one whose checksum does not match (the
conductor checks it as it caches the image); vmetal-dhcp-agent
is restarted while IPA deploys, which must change nothing. On a fresh machine
the run builds the IPA ramdisk and the deploy image first (2-4 minutes;
cached afterwards).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from tests.functional import lab_checks

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='the lab needs root')

LAB = str(pathlib.Path(sys.executable).parent / 'vmetal-lab')
PHASES = ('enroll', 'power_on', 'inspection', 'deploy', 'boot_from_disk',
          'os_network', 'undeploy_cleaning')


def test_full_flow_deploys_an_os_on_its_allocated_address(tmp_path):
    result = subprocess.run(
        [LAB, '--full', '--faults', '--json', '--workdir', str(tmp_path)],
        capture_output=True, text=True, timeout=3000)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary['ok'] is True
    assert tuple(step['name'] for step in summary['steps']) == PHASES
    assert summary['allocated_address'].startswith('192.0.2.')
    assert summary['os_address'] == summary['allocated_address']
    assert summary['os_address_source'] == 'static'
    assert 'bad BMC credentials: enrolment refused' in result.stdout
    assert 'Incorrect username or password' in result.stdout
    missing = next(line for line in result.stdout.splitlines()
                   if 'missing image' in line)
    assert '404' in missing
    assert f'address {summary["allocated_address"]} still allocated' \
        in missing
    checksum = next(line for line in result.stdout.splitlines()
                    if 'wrong checksum' in line)
    assert 'deploy failed, last_error:' in checksum
    assert 'checksum' in checksum.split('last_error:', 1)[1].lower()
    assert f'address {summary["allocated_address"]} still allocated' \
        in checksum
    assert 'agent restarted: vmetal-dhcp-agent stopped and started again' \
        in result.stdout
    installed = next(line for line in result.stdout.splitlines()
                     if 'installed OS' in line)
    assert 'datasource DataSourceConfigDrive' in installed
    prefix = lab_checks.run_prefix(result.stdout)
    assert lab_checks.full_lab_leftovers(prefix) == set()


def test_interrupted_full_flow_removes_domain_bridge_and_daemons(tmp_path):
    proc = subprocess.Popen(
        [LAB, '--full', '--workdir', str(tmp_path)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        seen = ''
        while 'powered on by Ironic' not in seen:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert 'powered on by Ironic' in seen, seen + proc.stderr.read()
        # The machine is running under libvirt, the BMC and Ironic too.
        prefix = lab_checks.run_prefix(seen)
        assert len(lab_checks.full_lab_leftovers(prefix)) >= 4
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        lab_checks.stop_if_running(proc, 120)
    lab_checks.assert_interrupted_cleanly(
        proc, err, tmp_path,
        lambda: lab_checks.full_lab_leftovers(prefix), set())


def test_full_flow_across_two_networks(tmp_path):
    """``--two-networks``: the same flow with Ironic on a cluster network of
    its own and the agent bridging it to the machine's L2; the isolation
    facts are read from the lab's namespaces while it runs, and the agent
    is restarted while IPA deploys (``--faults``): the bridge learns the
    ramdisk again from the store and the next heartbeat.

    Ironic's API is plain HTTP here (``--ironic-api http``); the Kubernetes
    store's two-network flow (k8s/test_lab_full_metal3.py) runs it over
    TLS, the default. Read once the machine is inspected: Ironic answers
    plain HTTP and no TLS, and the agent forwarded the ramdisk's calls over
    plain HTTP only (its upstream connection counters).

    From the summary's bridge counters: inspection filled the copies of
    the kernel and ramdisk, the deploy's boot was served from them, and
    the agent restarted during the deploy adopted them and served
    cleaning's boot from them (no new fill)."""
    proc = subprocess.Popen(
        [LAB, '--full', '--two-networks', '--ironic-api', 'http', '--faults',
         '--json', '--workdir', str(tmp_path)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    lines, checked, api = [], [], None
    try:
        for line in proc.stdout:
            lines.append(line)
            # Once the network exists, and again while the installed OS
            # runs (everything the flow needed has crossed by then).
            if 'ok ' in line and ('. Ironic:' in line
                                  or '. installed OS:' in line):
                prefix = lab_checks.run_prefix(''.join(lines))
                checked.append(lab_checks.assert_two_networks(prefix))
            elif 'ok ' in line and '. inspected:' in line:
                # Before --faults restarts the agent (its counters with it).
                api = lab_checks.ironic_api_facts(
                    lab_checks.run_prefix(''.join(lines)))
        err = proc.stderr.read()
        proc.wait(120)
    finally:
        lab_checks.stop_if_running(proc, 120)
    output = ''.join(lines) + err
    assert proc.returncode == 0, output
    assert len(checked) == 2, output
    summary = json.loads(lines[-1])
    assert summary['ok'] is True
    assert summary['topology'] == 'two-networks'
    assert summary['ironic_api'] == 'http'
    assert api is not None, output
    lab_checks.assert_ironic_api(api, 'http')
    assert tuple(step['name'] for step in summary['steps']) == PHASES
    assert summary['os_address'] == summary['allocated_address']
    assert 'agent restarted' in output
    lab_checks.assert_warm_boots(summary, restarted=True)
    prefix = lab_checks.run_prefix(output)
    assert lab_checks.full_lab_leftovers(prefix) == set()
