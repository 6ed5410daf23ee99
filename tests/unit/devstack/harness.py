"""A fake devstack to run the plugin's phases in: see fake_functions.sh.

Used by tests/unit/devstack (recording only) and tests/functional
(``spawn=True``: run_process starts the command for real, sudo runs it).
"""

import configparser
import getpass
import os
import pathlib
import subprocess

from oslo_config import cfg

from vmetal_ironic.conf import opts as vmetal_opts

TOP = pathlib.Path(__file__).resolve().parents[3]
HERE = pathlib.Path(__file__).resolve().parent
DEVSTACK = TOP / 'devstack'


class Stack:
    """A fake devstack environment in a temporary directory.

    :param spawn: run for real what the plugin asks for: ``run_process``
        starts the command (its PID in ``<tmp>/spawn/<service>.pid``),
        ``stop_process`` stops it, ``sudo`` runs every command. Only for
        root tests in namespaces of their own.
    """

    def __init__(self, tmp_path, spawn=False):
        self.tmp = tmp_path
        self.record = tmp_path / 'record'
        self.ironic_conf = tmp_path / 'etc-ironic' / 'ironic.conf'
        self.ironic_conf.parent.mkdir()
        self.state_dir = tmp_path / 'data' / 'vmetal-ironic'
        self.conf_dir = tmp_path / 'etc-vmetal'
        self.user = getpass.getuser()
        self.env = {
            'PATH': os.environ['PATH'],
            'HOME': str(tmp_path),
            'FAKE_DIR': str(HERE),
            'FAKE_RECORD': str(self.record),
            'FAKE_BIN_DIR': '/opt/stack/bin',
            'DEST': str(tmp_path / 'dest'),
            'DATA_DIR': str(tmp_path / 'data'),
            'STACK_USER': self.user,
            'ENABLED_SERVICES': 'key,ir-api,ir-cond,ironic-dnsmasq',
            'IRONIC_CONF_FILE': str(self.ironic_conf),
            'IRONIC_TFTPBOOT_DIR': str(tmp_path / 'tftpboot'),
            # A real interface every Linux host has; the plugin checks it
            # exists. Address changes go through the recording sudo.
            'IRONIC_VM_NETWORK_BRIDGE': 'lo',
            'PLUGIN_DIR': str(DEVSTACK),
            'VMETAL_DIR': str(TOP),
            'VMETAL_CONF_DIR': str(self.conf_dir),
        }
        self.spawn_dir = None
        if spawn:
            self.spawn_dir = tmp_path / 'spawn'
            self.spawn_dir.mkdir()
            self.env['FAKE_SPAWN_DIR'] = str(self.spawn_dir)

    @property
    def vmetal_conf(self):
        return self.conf_dir / 'vmetal-ironic.conf'

    def run(self, *phase, **env):
        """Run one plugin phase; return the CompletedProcess."""
        script = (
            'set -o errexit -o nounset\n'
            'source "$FAKE_DIR/fake_functions.sh"\n'
            'source "$PLUGIN_DIR/settings"\n'
            'source "$PLUGIN_DIR/plugin.sh" "$@"\n'
        )
        return subprocess.run(
            ['bash', '-c', script, 'stack.sh', *phase],
            env={**self.env, **env}, capture_output=True, text=True,
            timeout=60, check=False)

    def ok(self, *phase, **env):
        result = self.run(*phase, **env)
        assert result.returncode == 0, result.stderr
        return result

    def calls(self, name=None):
        if not self.record.exists():
            return []
        rows = [line.split('\x1f')
                for line in self.record.read_text().splitlines()]
        return [row for row in rows if name is None or row[0] == name]

    def ironic(self):
        """ironic.conf as Ironic's own option definitions read it."""
        from ironic.conf import default
        from ironic.conf import dhcp

        conf = cfg.ConfigOpts()
        default.register_opts(conf)
        dhcp.register_opts(conf)
        for group, options in vmetal_opts.list_opts():
            conf.register_opts(options, group=group)
        conf([], project='ironic', default_config_files=[str(self.ironic_conf)],
             default_config_dirs=[])
        return conf


def read_ini(path):
    parser = configparser.ConfigParser(interpolation=None, default_section='\0')
    parser.optionxform = str
    parser.read(path)
    return parser
