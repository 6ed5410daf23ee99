"""Shared libvirt daemons: the last lab out stops what a lab started.

The "daemon" is a real process named ``libvirtd`` (a copy of ``sleep``);
libvirtd's answer is the one thing replaced (``answering``), so that
registration does not need a running libvirt.
"""

import os
import shutil
import subprocess

import pytest

from vmetal_ironic.lab import libvirt


@pytest.fixture
def fake_libvirtd(tmp_path):
    binary = tmp_path / 'bin' / 'libvirtd'
    binary.parent.mkdir()
    shutil.copy(shutil.which('sleep'), binary)
    proc = subprocess.Popen([str(binary), '60'])
    yield proc
    proc.kill()
    proc.wait()


def _daemons(tmp_path, monkeypatch):
    daemons = libvirt.Daemons(tmp_path / 'state')
    monkeypatch.setattr(daemons, 'answering', lambda: True)
    return daemons


def test_daemons_stay_while_another_lab_is_registered(
        tmp_path, monkeypatch, fake_libvirtd):
    daemons = _daemons(tmp_path, monkeypatch)
    assert daemons.ensure() is False          # libvirtd already answers
    (daemons.state / 'libvirtd.pid').write_text(f'{fake_libvirtd.pid}\n')
    other = subprocess.Popen(['sleep', '60'])
    try:
        (daemons.users / str(other.pid)).touch()
        assert daemons.stop() is False
        assert fake_libvirtd.poll() is None
        assert daemons.live_users() == [other.pid]
    finally:
        other.kill()
        other.wait()
    # That lab is gone without unregistering: the next last one stops it.
    daemons.ensure()
    assert daemons.stop() is True
    assert fake_libvirtd.wait(10) is not None
    assert not (daemons.state / 'libvirtd.pid').exists()


def test_a_stale_pid_file_never_kills_another_process(tmp_path, monkeypatch):
    daemons = _daemons(tmp_path, monkeypatch)
    daemons.ensure()
    bystander = subprocess.Popen(['sleep', '60'])
    try:
        (daemons.state / 'libvirtd.pid').write_text(f'{bystander.pid}\n')
        assert daemons.stop() is False
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_dead_registrations_are_dropped(tmp_path, monkeypatch):
    daemons = _daemons(tmp_path, monkeypatch)
    daemons.ensure()
    gone = subprocess.Popen(['true'])
    gone.wait()
    (daemons.users / str(gone.pid)).touch()
    assert daemons.live_users() == [os.getpid()]


def test_a_lab_that_never_registered_stops_nothing(tmp_path, monkeypatch,
                                                   fake_libvirtd):
    daemons = _daemons(tmp_path, monkeypatch)
    daemons.users.mkdir(parents=True)
    (daemons.state / 'libvirtd.pid').write_text(f'{fake_libvirtd.pid}\n')
    assert daemons.stop() is False
    assert fake_libvirtd.poll() is None
