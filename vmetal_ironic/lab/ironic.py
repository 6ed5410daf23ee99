"""A real Ironic in one process (API + conductor, SQLite, noauth).

Used by the lab, the functional tests and the benchmarks: it writes an
ironic.conf that enables the vmetal plugins the way an operator would,
creates the schema with ``ironic-dbsync``, starts ``ironic`` and waits for
its API. Stopping sends SIGTERM, then SIGKILL: a conductor that failed to
start ignores SIGTERM.

Nodes are driven through the REST API only (:meth:`IronicService.enroll`,
:meth:`~IronicService.deploy`, :meth:`~IronicService.provision`), so the
shipped lab needs no client library.
"""

import contextlib
import json
import os
import pathlib
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

BIN = pathlib.Path(sys.executable).parent
START_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
PROVISION_TIMEOUT = 90.0
# Target state -> the state the node settles in.
SETTLES_IN = {'manage': 'manageable', 'provide': 'available',
              'active': 'active', 'deleted': 'available',
              'abort': None, 'clean': None, 'inspect': None}


class IronicError(RuntimeError):
    """Ironic refused a request or a node failed to reach its state."""


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def render_conf(sections):
    """Render ``{section: {option: value}}`` as an ini file."""
    lines = []
    for section, options in sections.items():
        lines.append(f'[{section}]')
        lines.extend(f'{key} = {value}' for key, value in options.items())
        lines.append('')
    return '\n'.join(lines)


def default_sections(workdir, port, tftp_server, http_url, vmetal_db):
    """ironic.conf for the vmetal plugins, fake power and SQLite.

    :param workdir: directory for Ironic's state.
    :param port: API port on 127.0.0.1.
    :param tftp_server: address Ironic hands out as TFTP server.
    :param http_url: base URL of ``[deploy]http_root`` as clients see it.
    :param vmetal_db: path of the local vmetal store.
    """
    work = pathlib.Path(workdir)
    url = f'http://127.0.0.1:{port}'
    return {
        'DEFAULT': {
            'auth_strategy': 'noauth',
            'rpc_transport': 'none',
            'host': 'vmetal-lab-conductor',
            'debug': 'true',
            'log_file': str(work / 'ironic.log'),
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
        'api': {'host_ip': '127.0.0.1', 'port': str(port)},
        'database': {'connection': f'sqlite:///{work / "ironic.sqlite"}'},
        'dhcp': {'dhcp_provider': 'vmetal'},
        'conductor': {
            'automated_clean': 'false',
            'file_url_allowed_paths': str(work / 'images'),
            'sync_power_state_interval': '-1',
        },
        'pxe': {
            'tftp_root': str(work / 'tftp'),
            'tftp_master_path': str(work / 'tftp-master'),
            'tftp_server': tftp_server,
        },
        'deploy': {
            'http_root': str(work / 'http'),
            'http_url': http_url,
        },
        'service_catalog': {'auth_type': 'none', 'endpoint_override': url},
        'oslo_concurrency': {'lock_path': str(work / 'locks')},
        'vmetal': {'store': 'local'},
        'vmetal_local_store': {'database': str(vmetal_db)},
    }


class IronicService:
    """One Ironic process.

    :param workdir: a fresh directory for config, databases and logs.
    :param sections: the full ironic.conf as ``{section: {option: value}}``
        (see :func:`default_sections`).
    :param port: the API port the sections configure.
    :param command_prefix: argv put before ``ironic`` (e.g. ``ip netns
        exec <ns>`` to run it in a namespace); :attr:`url` must still
        reach its API.
    """

    def __init__(self, workdir, sections, port, command_prefix=()):
        self.workdir = pathlib.Path(workdir)
        self.command_prefix = list(command_prefix)
        self.sections = sections
        self.port = port
        self.url = f'http://127.0.0.1:{port}'
        #: An ``ssl.SSLContext`` trusting the API's certificate when it
        #: serves TLS (``[api]enable_ssl_api``; :attr:`url` is https).
        self.tls_context = None
        self.conf_path = self.workdir / 'ironic.conf'
        self.log_path = self.workdir / 'ironic.log'
        self.images = self.workdir / 'images'
        self.proc = None

    def start(self):
        """Create the schema, start Ironic and wait for its API.

        :raises RuntimeError: Ironic exited or its API did not come up;
            the message holds the end of its log.
        """
        for name in ('tftp', 'tftp-master', 'http', 'locks', 'images'):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(render_conf(self.sections))
        subprocess.run([str(BIN / 'ironic-dbsync'), '--config-file',
                        str(self.conf_path), 'create_schema'],
                       check=True, capture_output=True, timeout=120)
        with open(self.workdir / 'ironic.out', 'wb') as out:
            self.proc = subprocess.Popen(
                [*self.command_prefix, str(BIN / 'ironic'), '--config-file',
                 str(self.conf_path)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
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

    def trust(self, ca_file):
        """Call the API over TLS (``[api]enable_ssl_api``), checking its
        certificate against ``ca_file``; it must name 127.0.0.1."""
        self.url = f'https://127.0.0.1:{self.port}'
        self.tls_context = ssl.create_default_context(cafile=str(ca_file))

    def api_up(self):
        try:
            # Always our own API on 127.0.0.1.
            with urllib.request.urlopen(self.url + '/v1', timeout=2,  # noqa: S310
                                        context=self.tls_context) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Stop Ironic and everything in its session."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)

    def log_tail(self, lines=60):
        text = ''
        for path in (self.workdir / 'ironic.out', self.log_path):
            if path.exists():
                text += '\n'.join(path.read_text(errors='replace')
                                  .splitlines()[-lines:]) + '\n'
        return text

    def api(self, method, path, body=None):
        """Call the REST API at the latest microversion.

        :returns: ``(status, decoded JSON body or None)``.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310
            self.url + '/v1' + path, data=data, method=method,
            headers={'X-OpenStack-Ironic-API-Version': 'latest',
                     'Content-Type': 'application/json'})
        try:
            with urllib.request.urlopen(request, timeout=30,  # noqa: S310
                                        context=self.tls_context) as resp:
                text, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            text, status = exc.read(), exc.code
        return status, (json.loads(text) if text else None)

    def request(self, method, path, body=None, expect=(200, 201, 202, 204)):
        """:meth:`api`, for answers that must succeed.

        :returns: the decoded JSON body or ``None``.
        :raises IronicError: another status, with Ironic's answer.
        """
        status, data = self.api(method, path, body)
        if status not in expect:
            raise IronicError(f'Ironic {method} {path} answered {status}: '
                              f'{data}')
        return data

    def wait_state(self, uuid, states, timeout=PROVISION_TIMEOUT,
                   interval=0.3):
        """Wait until the node is in one of ``states`` with no conductor
        lock held (the work behind the state change is done).

        :returns: the node as the API shows it.
        :raises IronicError: the node failed (``... failed`` or ``error``
            when that is not a state waited for) or the time ran out.
        """
        states = (states,) if isinstance(states, str) else tuple(states)
        deadline = time.monotonic() + timeout
        while True:
            node = self.request('GET', f'/nodes/{uuid}')
            state = node['provision_state']
            if state in states and not node['reservation']:
                return node
            if state not in states and (state.endswith('failed')
                                        or state == 'error'):
                raise IronicError(f'node {uuid} {state}: '
                                  f'{node["last_error"]}')
            if time.monotonic() > deadline:
                raise IronicError(f'node {uuid} not {"/".join(states)} '
                                  f'after {timeout:.0f}s: {state} '
                                  f'{node["last_error"]}')
            time.sleep(interval)

    def provision(self, uuid, target, wait=True, timeout=PROVISION_TIMEOUT,
                  interval=0.3, **body):
        """Ask for the provision ``target`` (``manage``, ``provide``,
        ``active``, ``deleted``...), with extra ``body`` fields such as
        ``configdrive`` or ``clean_steps``.

        :returns: the node once settled (see :data:`SETTLES_IN`), or
            ``None`` without ``wait``.
        """
        self.request('PUT', f'/nodes/{uuid}/states/provision',
                     dict(body, target=target))
        if not wait or SETTLES_IN.get(target) is None:
            return None
        return self.wait_state(uuid, SETTLES_IN[target], timeout, interval)

    def enroll(self, mac=None, **fields):
        """Enroll a node, give it a PXE port, make it available.

        :param mac: the PXE-enabled port's MAC; no port when ``None``.
        :param fields: the node's fields (``driver``, ``name``,
            interfaces, ``properties``...).
        :returns: the available node as the API shows it.
        """
        node = self.request('POST', '/nodes', fields)
        if mac is not None:
            self.request('POST', '/ports', {'node_uuid': node['uuid'],
                                            'address': mac,
                                            'pxe_enabled': True})
        self.provision(node['uuid'], 'manage')
        return self.provision(node['uuid'], 'provide')

    def deploy(self, uuid, instance_info=None, config_drive=None, wait=True,
               timeout=PROVISION_TIMEOUT, interval=0.3):
        """A ramdisk deploy of the images in :attr:`images` (kernel,
        ramdisk), plus ``instance_info``.

        :returns: the active node, or ``None`` without ``wait``.
        """
        info = {'kernel': self.image_url('kernel'),
                'ramdisk': self.image_url('ramdisk'),
                **(instance_info or {})}
        self.request('PATCH', f'/nodes/{uuid}', [
            {'op': 'add', 'path': f'/instance_info/{key}', 'value': value}
            for key, value in info.items()])
        extra = {} if config_drive is None else {'configdrive': config_drive}
        return self.provision(uuid, 'active', wait=wait, timeout=timeout,
                              interval=interval, **extra)

    def enroll_and_deploy(self, mac, instance_info=None, config_drive=None,
                          **fields):
        """:meth:`enroll`, then :meth:`deploy`.

        :returns: the active node.
        """
        node = self.enroll(mac, **fields)
        return self.deploy(node['uuid'], instance_info, config_drive)

    def image_url(self, name):
        return f'file://{self.images / name}'
