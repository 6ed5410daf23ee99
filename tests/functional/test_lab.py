"""vmetal-lab as a newcomer runs it: every step observed, nothing left.

The lab is slow (a UEFI PXE boot and a Linux boot under TCG), so the whole
flow runs once; the interruption test stops it early.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.functional import lab_checks

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='the lab needs root')

LAB = str(pathlib.Path(sys.executable).parent / 'vmetal-lab')
STEPS = ('provisioning L2', 'Ironic', 'HTTP server', 'vmetal-dhcp-agent',
         'node enrolled', 'address allocated', 'node deployed',
         'VM powered on', 'DHCP (firmware PXE)', 'TFTP', 'DHCP (iPXE)',
         'iPXE script', 'kernel and ramdisk', 'booted system', 'undeploy')


def _lab_namespaces():
    out = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines()
            if line.startswith('vlab')}


def test_lab_boots_a_machine_and_cleans_up(tmp_path):
    before = _lab_namespaces()
    result = subprocess.run([LAB, '--workdir', str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    titles = [line.split('. ', 1)[1].split(':', 1)[0]
              for line in result.stdout.splitlines() if ' ok ' in line]
    assert tuple(titles) == STEPS
    booted = next(line for line in result.stdout.splitlines()
                  if 'booted system' in line)
    allocated = next(line for line in result.stdout.splitlines()
                     if 'address allocated' in line)
    address = allocated.split(': ', 1)[1].split('/')[0]
    assert f'Linux ramdisk got {address}/24 router 192.0.2.1' in booted
    assert 'All 15 steps observed' in result.stdout
    assert _lab_namespaces() == before


def test_interrupted_lab_removes_everything(tmp_path):
    before = _lab_namespaces()
    proc = subprocess.Popen([LAB, '--workdir', str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 180
        seen = ''
        while time.monotonic() < deadline and 'vmetal-dhcp-agent' not in seen:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert 'vmetal-dhcp-agent' in seen, seen
        assert len(_lab_namespaces() - before) == 2
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        lab_checks.stop_if_running(proc, 60)
    lab_checks.assert_interrupted_cleanly(proc, err, tmp_path, _lab_namespaces,
                                          before)
