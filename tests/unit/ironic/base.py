"""Ironic's own test base with the vmetal plugins on a real local store.

:class:`PluginTestCase` is Ironic's ``DbTestCase`` (Ironic's schema in an
in-memory SQLite database, Ironic's configuration defaults, real
``objects.Node``/``Port`` rows and real ``task_manager`` locks), plus the
vmetal store of the plugins: a :class:`~vmetal_ironic.store.local.LocalStore`
in a temporary file, loaded by
:func:`vmetal_ironic.ironic.store_access.get_store` from ``[vmetal]store``
as a conductor would. Nothing is mocked.
"""

import os

import fixtures
from oslo_utils import uuidutils
from ironic.conductor import task_manager
# Imported now, not when the first task loads the drivers: importing
# zeroconf (through Ironic's conductor) runs ldconfig, and Ironic's test
# base forbids subprocesses while a test runs.
from ironic.drivers import fake_hardware  # noqa: F401
from ironic.tests.unit.db import base as db_base
from ironic.tests.unit.objects import utils as obj_utils

from tests import store_lock
from vmetal_ironic import properties as props
from vmetal_ironic.ironic import hardware  # noqa: F401
from vmetal_ironic.ironic import network  # noqa: F401
from vmetal_ironic.ironic import store_access

CIDR = '192.0.2.1/24'
DNS = '198.51.100.53'
MAC = '52:54:00:12:34:56'
NODE_PROPERTIES = {props.NETWORK_CIDR: CIDR, props.DNS_SERVERS: DNS}
TFTP = '192.0.2.10'
SCRIPT = 'http://192.0.2.10:8080/boot.ipxe'
# What Ironic's pxe_utils.dhcp_options_for_instance gives an iPXE boot in
# UEFI mode with tag support.
IPXE_OPTIONS = [
    {'opt_name': 'tag:!ipxe,67', 'opt_value': 'snponly.efi', 'ip_version': 4},
    {'opt_name': 'tag:ipxe,67', 'opt_value': SCRIPT, 'ip_version': 4},
    {'opt_name': '66', 'opt_value': TFTP, 'ip_version': 4},
    {'opt_name': '150', 'opt_value': TFTP, 'ip_version': 4},
    {'opt_name': 'server-ip-address', 'opt_value': TFTP, 'ip_version': 4},
]


class PluginTestCase(db_base.DbTestCase):

    def setUp(self):
        super().setUp()
        self.config(enabled_hardware_types=['fake-hardware',
                                            'manual-management',
                                            'vmetal-manual-management'])
        self.config(enabled_network_interfaces=['noop', 'flat', 'vmetal'])
        self.database = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'vmetal.sqlite')
        self.config(store='local', group='vmetal')
        self.config(database=self.database, busy_timeout=0.2,
                    group='vmetal_local_store')
        self._reset_store()
        self.addCleanup(self._reset_store)
        self.store = store_access.get_store()

    def _clear_attrs(self):
        # Ironic's base deletes the test's public attributes at clean-up
        # to free memory under stestr; under pytest that includes the test
        # method pytest put on the instance, so they stay.
        pass

    @staticmethod
    def _reset_store():
        store = store_access._store
        store_access._store = None
        if store is not None:
            store.close()

    def make_node(self, properties=None, mac=MAC, pxe_enabled=True, **fields):
        fields.setdefault('uuid', uuidutils.generate_uuid())
        fields.setdefault('driver', 'fake-hardware')
        fields.setdefault('network_interface', 'vmetal')
        node = obj_utils.create_test_node(
            self.context,
            properties=NODE_PROPERTIES if properties is None else properties,
            **fields)
        if mac is not None:
            obj_utils.create_test_port(self.context, node_id=node.id,
                                       uuid=uuidutils.generate_uuid(),
                                       address=mac, pxe_enabled=pxe_enabled)
        return node

    def task(self, node, shared=False):
        return task_manager.acquire(self.context, node.uuid, shared=shared)

    def store_locked(self):
        """The store's write lock held by another connection (a real
        lock: the store's calls give up after ``busy_timeout``)."""
        return store_lock.held(self.database)
