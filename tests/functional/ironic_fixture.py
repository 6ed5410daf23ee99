"""A real Ironic (API + conductor in one process, SQLite, noauth) for tests.

:class:`IronicProcess` writes an ironic.conf that enables the vmetal
plugins exactly as an operator would, creates the schema with
``ironic-dbsync``, starts ``ironic`` on a free 127.0.0.1 port and waits for
the API. Teardown sends SIGTERM and then SIGKILL: a conductor that failed
to start ignores SIGTERM.
"""

import contextlib
import json
import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openstack

BIN = pathlib.Path(sys.executable).parent
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0
# Documentation addresses only: nothing is ever sent to them.
TFTP_SERVER = '192.0.2.10'
HTTP_URL = 'http://192.0.2.10:8080'


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def render_conf(sections):
    lines = []
    for section, options in sections.items():
        lines.append(f'[{section}]')
        lines.extend(f'{key} = {value}' for key, value in options.items())
        lines.append('')
    return '\n'.join(lines)


class IronicProcess:
    """One Ironic process with the vmetal plugins enabled.

    :param workdir: a fresh directory for config, databases and logs.
    :param overrides: ``{section: {option: value}}`` merged over the
        defaults below.
    """

    def __init__(self, workdir, overrides=None):
        self.workdir = pathlib.Path(workdir)
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.conf_path = self.workdir / 'ironic.conf'
        self.log_path = self.workdir / 'ironic.log'
        self.ironic_db = self.workdir / 'ironic.sqlite'
        self.vmetal_db = self.workdir / 'vmetal.sqlite'
        self.images = self.workdir / 'images'
        self.proc = None
        self._output = None
        self.sections = self._defaults()
        for section, options in (overrides or {}).items():
            self.sections.setdefault(section, {}).update(options)

    def _defaults(self):
        work = self.workdir
        return {
            'DEFAULT': {
                'auth_strategy': 'noauth',
                'rpc_transport': 'none',
                'host': 'vmetal-test-conductor',
                'debug': 'true',
                'log_file': str(self.log_path),
                'enabled_hardware_types':
                    'fake-hardware,manual-management,vmetal-manual-management',
                'enabled_bios_interfaces': 'no-bios,fake',
                'enabled_boot_interfaces': 'fake,ipxe,pxe',
                'enabled_console_interfaces': 'no-console,fake',
                'enabled_deploy_interfaces': 'fake,ramdisk,direct',
                'enabled_firmware_interfaces': 'no-firmware,fake',
                'enabled_inspect_interfaces': 'no-inspect,fake',
                'enabled_management_interfaces': 'fake,noop',
                'enabled_network_interfaces': 'vmetal,noop',
                'enabled_power_interfaces': 'fake',
                'enabled_raid_interfaces': 'no-raid,fake',
                'enabled_rescue_interfaces': 'no-rescue,fake',
                'enabled_storage_interfaces': 'noop,fake',
                'enabled_vendor_interfaces': 'no-vendor,fake',
            },
            'api': {'host_ip': '127.0.0.1', 'port': str(self.port)},
            'database': {'connection': f'sqlite:///{self.ironic_db}'},
            'dhcp': {'dhcp_provider': 'vmetal'},
            'conductor': {
                'automated_clean': 'false',
                'file_url_allowed_paths': str(self.images),
                'sync_power_state_interval': '-1',
            },
            'pxe': {
                'tftp_root': str(work / 'tftp'),
                'tftp_master_path': str(work / 'tftp-master'),
                'tftp_server': TFTP_SERVER,
            },
            'deploy': {
                'http_root': str(work / 'http'),
                'http_url': HTTP_URL,
            },
            'service_catalog': {'auth_type': 'none',
                                'endpoint_override': self.url},
            'oslo_concurrency': {'lock_path': str(work / 'locks')},
            'vmetal': {'store': 'local'},
            'vmetal_local_store': {'database': str(self.vmetal_db),
                                   'busy_timeout': '1.0'},
            'vmetal_ironic': {'release_deleted_nodes_interval': '2'},
        }

    def start(self):
        for name in ('tftp', 'tftp-master', 'http', 'locks', 'images'):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        for name in ('kernel', 'ramdisk'):
            (self.images / name).write_bytes(b'not a real ' + name.encode())
        self.conf_path.write_text(render_conf(self.sections))
        subprocess.run([str(BIN / 'ironic-dbsync'), '--config-file',
                        str(self.conf_path), 'create_schema'],
                       check=True, capture_output=True, timeout=120)
        self._output = open(self.workdir / 'ironic.out', 'wb')  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN / 'ironic'), '--config-file', str(self.conf_path)],
            stdout=self._output, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f'ironic exited with {self.proc.returncode}:\n'
                    f'{self.log_tail()}')
            if self.api_up():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f'ironic API not up after {START_TIMEOUT}s:\n'
                           f'{self.log_tail()}')

    def api_up(self):
        try:
            # The URL is always our own http://127.0.0.1 API.
            with urllib.request.urlopen(self.url + '/v1', timeout=2) as resp:  # noqa: S310
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            # The whole session: ironic runs no helpers we want to keep.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)
        if self._output is not None:
            self._output.close()
            self._output = None

    def log_tail(self, lines=60):
        text = ''
        for path in (self.workdir / 'ironic.out', self.log_path):
            if path.exists():
                text += '\n'.join(path.read_text(errors='replace')
                                  .splitlines()[-lines:]) + '\n'
        return text

    def log_text(self):
        return self.log_path.read_text(errors='replace')

    def connect(self):
        return openstack.connect(auth_type='none',
                                 baremetal_endpoint_override=self.url,
                                 baremetal_api_version='1.95')

    def api(self, method, path, body=None):
        """Call the REST API with the latest microversion.

        openstacksdk's Node has no ``network_data`` attribute; the tests
        read and check such fields through the API directly.

        :returns: ``(status, decoded JSON body or None)``.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310
            self.url + '/v1' + path, data=data, method=method,
            headers={'X-OpenStack-Ironic-API-Version': 'latest',
                     'Content-Type': 'application/json'})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
                text = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            text = exc.read()
            status = exc.code
        return status, (json.loads(text) if text else None)

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

    def image_url(self, name):
        return f'file://{self.images / name}'

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
