"""A Redfish BMC for the lab machine: sushy-tools' emulator over libvirt.

It runs in the lab's server namespace, on that namespace's loopback, next
to Ironic's conductor, and reaches libvirtd over its unix socket. Only the
lab's own domain is exposed (``SUSHY_EMULATOR_ALLOWED_INSTANCES`` must
list the domain's UUID: a name gives an empty Systems collection). The
UEFI loader map pins the plain 4M OVMF build: with sushy's defaults a
``BootSourceOverrideMode: UEFI`` switches the domain to the secure-boot
build, which never PXE boots under TCG. HTTP basic authentication with a
bcrypt htpasswd file makes wrong credentials fail as on a real BMC.
"""

import pathlib
import secrets
import sys

from vmetal_ironic.lab import libvirt
from vmetal_ironic.lab import observe

PORT = 8000
ADDRESS = f'http://127.0.0.1:{PORT}'
USERNAME = 'lab-admin'
EMULATOR = pathlib.Path(sys.executable).parent / 'sushy-emulator'
START_TIMEOUT = 30.0

CONFIG = """\
SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = {port}
SUSHY_EMULATOR_LIBVIRT_URI = '{uri}'
SUSHY_EMULATOR_ALLOWED_INSTANCES = ['{uuid}']
SUSHY_EMULATOR_AUTH_FILE = '{auth}'
SUSHY_EMULATOR_IGNORE_BOOT_DEVICE = False
SUSHY_EMULATOR_BOOT_LOADER_MAP = {{
    'UEFI': {{'x86_64': '{code}'}},
    'Legacy': {{'x86_64': None}},
}}
SUSHY_EMULATOR_FEATURE_SET = 'full'
"""


class RedfishError(Exception):
    """The emulator could not start; the message holds its log's end."""


class Emulator:
    """One ``sushy-emulator`` process serving one domain.

    :param topology: the lab's topology (the process is spawned in it).
    :param namespace: namespace to run in (Ironic's).
    :param workdir: directory for its config, password file and log.
    :param domain: the :class:`~vmetal_ironic.lab.libvirt.Domain`.
    """

    def __init__(self, topology, namespace, workdir, domain):
        import bcrypt  # sushy-tools' own dependency, in the lab's venv

        self.workdir = pathlib.Path(workdir)
        self.domain = domain
        self.password = secrets.token_urlsafe(12)
        auth = self.workdir / 'sushy.htpasswd'
        digest = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(4))
        auth.write_text(f'{USERNAME}:{digest.decode()}\n')
        config = self.workdir / 'sushy.conf'
        config.write_text(CONFIG.format(
            port=PORT, uri=libvirt.URI, uuid=domain.uuid, auth=auth,
            code=libvirt.OVMF_CODE))
        self.log = self.workdir / 'sushy.log'
        if not EMULATOR.exists():
            raise RedfishError(f'{EMULATOR} is missing: sushy-tools is not '
                               'installed in this environment')
        self.proc = topology.spawn(
            namespace, [str(EMULATOR), '--config', str(config)], 'sushy.log')
        if not observe.wait_for(lambda: 'Running on' in self.log_text(),
                                START_TIMEOUT,
                                failed=lambda: self.proc.poll() is not None):
            raise RedfishError('sushy-emulator did not start:\n'
                               + self.log_text()[-1500:])

    @property
    def system_id(self):
        return f'/redfish/v1/Systems/{self.domain.uuid}'

    def driver_info(self, password=None):
        """Ironic ``driver_info`` for this BMC (optionally a bad password)."""
        return {'redfish_address': ADDRESS,
                'redfish_system_id': self.system_id,
                'redfish_username': USERNAME,
                'redfish_password': password or self.password,
                'redfish_verify_ca': False}

    def log_text(self):
        return self.log.read_text(errors='replace') if self.log.exists() \
            else ''

    def requests(self, needle):
        """Request lines of the emulator's log that contain ``needle``."""
        return [line for line in self.log_text().splitlines()
                if needle in line and 'HTTP/1.1' in line]
