"""The provisioning hook: a node about to boot on the provisioning network
gets its address and its network_data.

Plug point
----------
Ironic has no "node is about to boot" entry point that every hardware
type calls. The plug points a plugin can use without patching Ironic are:

* the network interface - per node, and a hardware type accepts only the
  network interface classes it lists, so the stock ``manual-management``,
  ``ipmi`` and ``redfish`` types that Metal3's baremetal-operator registers
  can never run ours;
* inspection hooks (``ironic.inspection.hooks``) - global, but they run
  only when an inspection finishes, after the boot;
* the DHCP provider (``ironic.dhcp``) - one per conductor, whatever the
  hardware type, and Ironic calls its ``update_dhcp_opts`` each time it
  prepares a PXE/iPXE/HTTP boot on the provisioning network: deploy
  (``prepare_ramdisk`` or, for the ramdisk deploy, ``prepare_instance``),
  cleaning, inspection, rescue and servicing.

So the hook is :func:`prepare`, run by the ``vmetal`` DHCP provider from
``update_dhcp_opts`` (the path stock hardware types take) and by the
``vmetal`` network interface when it adds the provisioning, cleaning,
inspection, rescuing or servicing network (the path of the vmetal
hardware types, which also covers boots that do not go through DHCP
options, e.g. virtual media). Both calls are idempotent. The inspection
hooks add nothing: the inspection boot already passes through the DHCP
provider.

What it writes
--------------
* ``node.network_data`` (what the ramdisk configures itself with), when it
  is empty, or when it still holds exactly the document this hook wrote
  last time (a fingerprint in ``driver_internal_info`` tells) and the
  document has changed;
* ``instance_info['configdrive']['network_data']`` when a deploy was given
  a config drive as a dict without ``network_data``; Ironic builds the
  config drive from that dict when it writes the image.

Network data a caller supplied - in the node field or in the config
drive - is never overwritten.
"""

import functools
import hashlib
import json

import jsonschema
from ironic.conf import CONF as IRONIC_CONF
from oslo_log import log

from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic.ironic import nodes

LOG = log.getLogger(__name__)

CONF = vmetal_conf.CONF

# driver_internal_info key: fingerprint of the network_data we wrote.
FINGERPRINT_KEY = 'vmetal_network_data_sha256'


def fingerprint(document):
    """A stable digest of a network_data document."""
    text = json.dumps(document, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode()).hexdigest()


def supplied_by_caller(node):
    """Whether ``node.network_data`` is a caller's, never to be replaced.

    It is ours when it is exactly the document this hook wrote last (the
    fingerprint in ``driver_internal_info`` tells); an empty field is
    nobody's.
    """
    current = node.network_data or {}
    if not current:
        return False
    return node.driver_internal_info.get(FINGERPRINT_KEY) != fingerprint(
        current)


@functools.cache
def _ironic_schema():
    with open(IRONIC_CONF.api.network_data_schema) as schema_file:
        return json.load(schema_file)


def acceptable_to_ironic(document):
    """Tell whether Ironic's API would accept ``document`` as network_data.

    Ironic validates a node's network_data on every PATCH of the node; a
    document it rejects would make the node impossible to update, so such
    a document (e.g. a link without a MAC) is not written.
    """
    try:
        jsonschema.validate(document, _ironic_schema())
    except jsonschema.ValidationError as exc:
        LOG.warning('vmetal: network_data not written to the node, Ironic '
                    'would reject it: %s', exc.message)
        return False
    except (OSError, ValueError, jsonschema.SchemaError) as exc:
        LOG.warning('vmetal: cannot read Ironic\'s network_data schema '
                    '(%s); writing the document unchecked', exc)
    return True


def _inject_node_field(node, document):
    if (node.network_data or {}) == document:
        return False
    if supplied_by_caller(node):
        LOG.debug('Node %s carries caller-supplied network_data; left as is',
                  node.uuid)
        return False
    if not acceptable_to_ironic(document):
        return False
    node.network_data = document
    node.set_driver_internal_info(FINGERPRINT_KEY, fingerprint(document))
    return True


def _inject_configdrive(node, document):
    configdrive = (node.instance_info or {}).get('configdrive')
    if not isinstance(configdrive, dict) or configdrive.get('network_data'):
        # Absent, a prebuilt ISO / URL, or network data the caller gave.
        return False
    updated = dict(configdrive)
    updated['network_data'] = document
    node.set_instance_info('configdrive', updated)
    return True


def inject(task, document):
    """Put ``document`` where the ramdisk and the config drive read it.

    :param task: a TaskManager holding an exclusive lock on the node.
    :param document: the network_data.json dict.
    :returns: a tuple of the places written (``'network_data'``,
        ``'configdrive'``); the node is saved when it is not empty.
    """
    node = task.node
    written = []
    if _inject_node_field(node, document):
        written.append('network_data')
    if _inject_configdrive(node, document):
        written.append('configdrive')
    if written:
        node.save()
        LOG.info('vmetal: wrote network data of node %(node)s into '
                 '%(where)s', {'node': node.uuid,
                               'where': ', '.join(written)})
    return tuple(written)


def prepare(task):
    """The hook: ensure the allocation, then inject the network data.

    :param task: a TaskManager holding an exclusive lock on the node.
    :returns: the :class:`vmetal_ironic.host_network.HostNetwork`.
    :raises ironic.common.exception.InvalidParameterValue: bad properties.
    :raises ironic.common.exception.NetworkError: store trouble.
    """
    host = nodes.ensure(task)
    if CONF.vmetal_ironic.inject_network_data:
        inject(task, host.network_data)
    return host
