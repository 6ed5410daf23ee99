"""Merge patches of a BareMetalHost, as pure functions of the host read.

The store writes its results onto the host: the annotations
``metal3.vcluster.com/ip-address``, ``/gateway`` and ``/dns-servers`` and
the references to its network-data Secret. Two of those annotation keys
are also input properties a user may set, so the store must only ever
take back what it wrote itself:

* ``vmetal-ironic.io/written`` records the values the store wrote; a key
  whose value still equals it is the store's, any other value is the
  user's (a later change by the user makes the key the user's again);
* ``vmetal-ironic.io/overwritten`` records the user's values the store
  replaced, so that release brings them back.

A patch is a dict for ``application/merge-patch+json`` (``None`` deletes
a key) or ``None`` when nothing needs writing. The caller adds the
``resourceVersion`` read, which makes it a compare-and-swap.
"""

import json

from vmetal_ironic import properties as props
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import kube_properties

WRITTEN_ANNOTATION = names.LABEL_PREFIX + 'written'
OVERWRITTEN_ANNOTATION = names.LABEL_PREFIX + 'overwritten'
OUTPUT_ANNOTATIONS = (props.IP_ADDRESS, props.GATEWAY, props.DNS_SERVERS)


def outputs_of(primary):
    """The output annotations describing a host's primary IPv4 network.

    :param primary: a :class:`vmetal_ironic.network_data.PrimaryIPv4`, or
        ``None`` when the document has none.
    :returns: ``{annotation: value or None}`` for every output key.
    """
    outputs = dict.fromkeys(OUTPUT_ANNOTATIONS)
    if primary is None:
        return outputs
    outputs[props.IP_ADDRESS] = (
        f'{primary.address}/{primary.prefixlen or 32}')
    outputs[props.GATEWAY] = primary.gateway
    outputs[props.DNS_SERVERS] = ','.join(primary.dns_servers) or None
    return outputs


def _record(annotations, key):
    try:
        value = json.loads((annotations or {}).get(key) or '{}')
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _encode(record):
    return json.dumps(record, sort_keys=True) if record else None


def _parts(host):
    metadata = (host or {}).get('metadata') or {}
    return dict(metadata.get('annotations') or {}), dict(
        (host or {}).get('spec') or {})


def _patch(annotations, changes, spec_changes):
    changes = {key: value for key, value in changes.items()
               if annotations.get(key) != value}
    patch = {}
    if changes:
        patch['metadata'] = {'annotations': changes}
    if spec_changes:
        patch['spec'] = spec_changes
    return patch or None


def save_patch(host, outputs, secret_name, secret_namespace, extra=None):
    """The patch that puts ``outputs`` and the Secret references on a host.

    :param host: the BareMetalHost dict as read.
    :param outputs: :func:`outputs_of` of the document saved.
    :param secret_name: the store's network-data Secret.
    :param secret_namespace: its namespace (the host's).
    :param extra: other annotations to write in the same patch (the
        controller's verdict), not recorded as written: release leaves
        them.
    :returns: a merge patch, or ``None``.
    """
    annotations, spec = _parts(host)
    written = kube_properties.written_values(annotations, WRITTEN_ANNOTATION)
    overwritten = _record(annotations, OVERWRITTEN_ANNOTATION)
    now_written, now_overwritten = {}, dict(overwritten)
    changes = {}
    for key, value in outputs.items():
        current = annotations.get(key)
        ours = current is not None and written.get(key) == current
        if value is None:
            if ours:
                # The document no longer says it: take back only our own
                # value, and give the user's back if we had replaced it.
                changes[key] = now_overwritten.pop(key, None)
            continue
        if current == value:
            if ours:
                now_written[key] = value
            # Equal to a value the user set: it stays the user's input.
            continue
        if not ours:
            if current is not None:
                now_overwritten[key] = current
            else:
                now_overwritten.pop(key, None)
        changes[key] = value
        now_written[key] = value
    changes[WRITTEN_ANNOTATION] = _encode(now_written)
    changes[OVERWRITTEN_ANNOTATION] = _encode(now_overwritten)
    changes.update(extra or {})
    spec_changes = {}
    # Never replace a reference a user (or Metal3) set on the host.
    if not (spec.get('networkData') or {}).get('name'):
        spec_changes['networkData'] = {'name': secret_name,
                                       'namespace': secret_namespace}
    if not spec.get('preprovisioningNetworkDataName'):
        spec_changes['preprovisioningNetworkDataName'] = secret_name
    return _patch(annotations, changes, spec_changes)


def release_patch(host, secret_name):
    """The patch that takes the store's outputs back off a host: values
    the store wrote go (the user's values it replaced come back), values
    anyone else wrote stay, and only references to the store's own Secret
    are cleared.

    :returns: a merge patch, or ``None``.
    """
    annotations, spec = _parts(host)
    written = kube_properties.written_values(annotations, WRITTEN_ANNOTATION)
    overwritten = _record(annotations, OVERWRITTEN_ANNOTATION)
    changes = {key: overwritten.get(key) for key, value in written.items()
               if key in OUTPUT_ANNOTATIONS and annotations.get(key) == value}
    changes[WRITTEN_ANNOTATION] = None
    changes[OVERWRITTEN_ANNOTATION] = None
    spec_changes = {}
    if (spec.get('networkData') or {}).get('name') == secret_name:
        spec_changes['networkData'] = None
    if spec.get('preprovisioningNetworkDataName') == secret_name:
        spec_changes['preprovisioningNetworkDataName'] = None
    return _patch(annotations, changes, spec_changes)
