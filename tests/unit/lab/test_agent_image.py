"""The agent image build's pure parts: its cache key, its podman
configuration (never the machine's, never a network)."""

import os
import pathlib
import tomllib

import pytest

from vmetal_ironic.lab import agent_image


@pytest.fixture
def tree(tmp_path):
    """A miniature source tree with the inputs the key reads."""
    (tmp_path / 'etc/container/podman').mkdir(parents=True)
    (tmp_path / 'etc/container/Containerfile').write_text('FROM x\n')
    (tmp_path / 'requirements.txt').write_text('scapy\n')
    (tmp_path / 'vmetal_ironic/dhcp_agent').mkdir(parents=True)
    (tmp_path / 'vmetal_ironic/dhcp_agent/agent.py').write_text('A = 1\n')
    return tmp_path


def test_the_key_follows_the_sources_and_only_them(tree):
    first = agent_image.inputs_key(tree)
    assert agent_image.inputs_key(tree) == first
    (tree / 'README.rst').write_text('not an input\n')
    assert agent_image.inputs_key(tree) == first
    (tree / 'vmetal_ironic/dhcp_agent/agent.py').write_text('A = 2\n')
    changed = agent_image.inputs_key(tree)
    assert changed != first
    (tree / 'etc/container/Containerfile').write_text('FROM y\n')
    assert agent_image.inputs_key(tree) not in (first, changed)


def test_a_renamed_module_changes_the_key(tree):
    first = agent_image.inputs_key(tree)
    os.rename(tree / 'vmetal_ironic/dhcp_agent/agent.py',
              tree / 'vmetal_ironic/dhcp_agent/agent2.py')
    assert agent_image.inputs_key(tree) != first


def test_the_real_inputs_exist():
    names = {str(path.relative_to(agent_image.TOP))
             for path in agent_image.source_files()}
    assert set(agent_image.INPUTS) <= names
    assert 'vmetal_ironic/cmd/dhcp_agent.py' in names


def test_podman_uses_the_lab_configuration_and_storage(tmp_path,
                                                       monkeypatch):
    monkeypatch.setattr(agent_image, 'CACHE', tmp_path / 'cache')
    env = agent_image.podman_env()
    assert env['CONTAINERS_CONF'] == str(agent_image.PODMAN_CONF)
    storage = pathlib.Path(env['CONTAINERS_STORAGE_CONF'])
    assert storage.parent == tmp_path / 'cache'
    settings = tomllib.loads(storage.read_text())['storage']
    assert settings['graphroot'] == str(tmp_path / 'cache' / 'storage')
    assert settings['runroot'].startswith(str(agent_image.RUN_ROOT))
    # Written once: a second call leaves the file as it is.
    before = storage.stat().st_mtime_ns
    agent_image.podman_env()
    assert storage.stat().st_mtime_ns == before


def test_podman_configuration_creates_no_network():
    settings = tomllib.loads(agent_image.PODMAN_CONF.read_text())
    # No default bridge with an address on the root namespace.
    assert settings['containers']['netns'] == 'none'
    # podman's state stays apart from a machine's podman.
    assert settings['engine']['tmp_dir'].startswith(
        str(agent_image.RUN_ROOT))
    assert settings['network']['network_config_dir'].startswith(
        str(agent_image.RUN_ROOT))
    assert settings['engine']['runtime'] == 'runc'
    assert settings['engine']['cgroup_manager'] == 'cgroupfs'


def test_the_base_key_is_stable():
    assert agent_image.base_key() == agent_image.base_key()
    assert len(agent_image.base_key()) == 12


def test_build_refuses_without_podman(monkeypatch):
    monkeypatch.setattr(agent_image.os, 'geteuid', lambda: 0)
    monkeypatch.setattr(agent_image.shutil, 'which', lambda name: None)
    with pytest.raises(agent_image.debian.BuildError, match='podman is '
                       'missing'):
        agent_image.build()
