"""A real Ironic (API + conductor in one process, SQLite, noauth) for tests.

:class:`IronicProcess` writes an ironic.conf that enables the vmetal
plugins exactly as an operator would, creates the schema with
``ironic-dbsync``, starts ``ironic`` on a free 127.0.0.1 port and waits for
the API. Teardown sends SIGTERM and then SIGKILL: a conductor that failed
to start ignores SIGTERM.
"""

import json
import pathlib
import sqlite3
import subprocess
import sys

from oslo_config import cfg

from vmetal_ironic import store as store_mod
from vmetal_ironic.conf import opts as vmetal_opts
from vmetal_ironic.lab import ironic as lab_ironic

# Documentation addresses only: nothing is ever sent to them.
TFTP_SERVER = '192.0.2.10'
HTTP_URL = 'http://192.0.2.10:8080'


class IronicProcess(lab_ironic.IronicService):
    """The lab's Ironic, configured for the plugin tests.

    :param workdir: a fresh directory for config, databases and logs.
    :param overrides: ``{section: {option: value}}`` merged over the
        lab's defaults.
    """

    def __init__(self, workdir, overrides=None):
        workdir = pathlib.Path(workdir)
        port = lab_ironic.free_port()
        self.ironic_db = workdir / 'ironic.sqlite'
        self.vmetal_db = workdir / 'vmetal.sqlite'
        sections = lab_ironic.default_sections(workdir, port, TFTP_SERVER,
                                               HTTP_URL, self.vmetal_db)
        sections['DEFAULT']['host'] = 'vmetal-test-conductor'
        # Short waits so the store-locked tests fail fast, and a quick
        # sweep so the deleted-node test need not wait minutes.
        sections['vmetal_local_store']['busy_timeout'] = '1.0'
        sections['vmetal_ironic'] = {'release_deleted_nodes_interval': '2'}
        for section, options in (overrides or {}).items():
            sections.setdefault(section, {}).update(options)
        super().__init__(workdir, sections, port)

    def start(self):
        self.images.mkdir(parents=True, exist_ok=True)
        for name in ('kernel', 'ramdisk'):
            (self.images / name).write_bytes(b'not a real ' + name.encode())
        return super().start()

    def open_store(self):
        """The store the conductor uses, loaded from the same ironic.conf.

        Only the vmetal groups are registered; oslo.config ignores the rest
        of the file, so the test reads whichever store ``[vmetal]store``
        names, through the Store API.
        """
        conf = cfg.ConfigOpts()
        for group, options in vmetal_opts.list_opts():
            conf.register_opts(options, group=group)
        conf(['--config-file', str(self.conf_path)], project='vmetal-test',
             default_config_files=[], default_config_dirs=[])
        return store_mod.get_store(conf)

    def log_text(self):
        return self.log_path.read_text(errors='replace')

    def call_network_interface(self, node_uuid, method):
        """Run ``task.driver.network.<method>(task)`` via ironic_task.py.

        :returns: the decoded JSON result.
        """
        script = pathlib.Path(__file__).with_name('ironic_task.py')
        done = subprocess.run(
            [sys.executable, str(script), str(self.conf_path), node_uuid,
             method], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f'{method} failed: {done.stderr[-2000:]}')
        return json.loads(done.stdout.strip().splitlines()[-1])

    def instance_info_in_db(self, node_uuid):
        """Read instance_info from Ironic's database.

        The API masks ``instance_info['configdrive']``; the test needs to
        see what the conductor stored.
        """
        db = sqlite3.connect(self.ironic_db, timeout=10)
        try:
            row = db.execute('SELECT instance_info FROM nodes WHERE uuid = ?',
                             (node_uuid,)).fetchone()
        finally:
            db.close()
        return json.loads(row[0]) if row and row[0] else {}
