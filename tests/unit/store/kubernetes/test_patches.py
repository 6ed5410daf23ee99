"""Host patches of the Kubernetes store, on plain dicts."""

import json

from vmetal_ironic import network_data
from vmetal_ironic import properties as props
from vmetal_ironic.store.kubernetes import patches

SECRET = 'vmetal-nd-baremetalhost-h'  # noqa: S105 - a name
PRIMARY = network_data.PrimaryIPv4('192.0.2.2', 24, '192.0.2.1',
                                   ('192.0.2.53',))


def host(annotations=None, spec=None):
    return {'metadata': {'name': 'h', 'namespace': 'ns',
                         'annotations': dict(annotations or {})},
            'spec': dict(spec or {})}


def apply(obj, patch):
    """Merge-patch semantics, as the API server applies them."""
    result = json.loads(json.dumps(obj))
    for section, changes in (patch or {}).items():
        target = result.setdefault(section, {})
        if section == 'metadata':
            target = target.setdefault('annotations', {})
            changes = changes.get('annotations', {})
        for key, value in changes.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return result


def test_save_writes_outputs_records_and_references():
    patch = patches.save_patch(host(), patches.outputs_of(PRIMARY), SECRET,
                               'ns')
    annotations = patch['metadata']['annotations']
    assert annotations[props.IP_ADDRESS] == '192.0.2.2/24'
    assert annotations[props.GATEWAY] == '192.0.2.1'
    assert annotations[props.DNS_SERVERS] == '192.0.2.53'
    assert json.loads(annotations[patches.WRITTEN_ANNOTATION]) == {
        props.IP_ADDRESS: '192.0.2.2/24', props.GATEWAY: '192.0.2.1',
        props.DNS_SERVERS: '192.0.2.53'}
    assert patch['spec'] == {'networkData': {'name': SECRET,
                                             'namespace': 'ns'},
                             'preprovisioningNetworkDataName': SECRET}


def test_saving_again_changes_nothing():
    first = apply(host(), patches.save_patch(
        host(), patches.outputs_of(PRIMARY), SECRET, 'ns'))
    assert patches.save_patch(first, patches.outputs_of(PRIMARY), SECRET,
                              'ns') is None


def test_a_users_equal_value_stays_the_users():
    user = host({props.DNS_SERVERS: '192.0.2.53'})
    saved = apply(user, patches.save_patch(user, patches.outputs_of(PRIMARY),
                                           SECRET, 'ns'))
    assert props.DNS_SERVERS not in json.loads(
        saved['metadata']['annotations'][patches.WRITTEN_ANNOTATION])
    released = apply(saved, patches.release_patch(saved, SECRET))
    assert released['metadata']['annotations'] == {
        props.DNS_SERVERS: '192.0.2.53'}
    assert released['spec'] == {}


def test_an_overwritten_user_value_comes_back_on_release():
    user = host({props.GATEWAY: '192.0.2.254'})
    saved = apply(user, patches.save_patch(user, patches.outputs_of(PRIMARY),
                                           SECRET, 'ns'))
    assert saved['metadata']['annotations'][props.GATEWAY] == '192.0.2.1'
    released = apply(saved, patches.release_patch(saved, SECRET))
    assert released['metadata']['annotations'] == {
        props.GATEWAY: '192.0.2.254'}


def test_a_document_without_a_value_removes_only_the_stores_own():
    saved = apply(host(), patches.save_patch(
        host(), patches.outputs_of(PRIMARY), SECRET, 'ns'))
    saved['metadata']['annotations'][props.DNS_SERVERS] = '9.9.9.9'  # user
    bare = network_data.PrimaryIPv4('203.0.113.7', 24)
    again = apply(saved, patches.save_patch(saved, patches.outputs_of(bare),
                                            SECRET, 'ns'))
    annotations = again['metadata']['annotations']
    assert annotations[props.DNS_SERVERS] == '9.9.9.9'
    assert props.GATEWAY not in annotations
    assert annotations[props.IP_ADDRESS] == '203.0.113.7/24'


def test_a_value_the_user_changed_after_us_is_left_on_release():
    saved = apply(host(), patches.save_patch(
        host(), patches.outputs_of(PRIMARY), SECRET, 'ns'))
    saved['metadata']['annotations'][props.GATEWAY] = '192.0.2.99'
    released = apply(saved, patches.release_patch(saved, SECRET))
    assert released['metadata']['annotations'] == {props.GATEWAY: '192.0.2.99'}


def test_user_references_are_neither_replaced_nor_cleared():
    mine = {'networkData': {'name': 'user-nd', 'namespace': 'ns'},
            'preprovisioningNetworkDataName': 'user-pre'}
    user = host(spec=mine)
    patch = patches.save_patch(user, patches.outputs_of(PRIMARY), SECRET,
                               'ns')
    assert 'spec' not in patch
    saved = apply(user, patch)
    assert 'spec' not in (patches.release_patch(saved, SECRET) or {})


def test_extra_annotations_ride_on_the_save_and_stay_at_release():
    verdict = {'vmetal-ironic.io/ipam-verdict': 'AddressAllocated: x'}
    saved = apply(host(), patches.save_patch(
        host(), patches.outputs_of(PRIMARY), SECRET, 'ns', verdict))
    annotations = saved['metadata']['annotations']
    assert annotations['vmetal-ironic.io/ipam-verdict'] == (
        'AddressAllocated: x')
    assert 'vmetal-ironic.io/ipam-verdict' not in json.loads(
        annotations[patches.WRITTEN_ANNOTATION])
    # Said already: nothing to write.
    assert patches.save_patch(saved, patches.outputs_of(PRIMARY), SECRET,
                              'ns', verdict) is None
    released = apply(saved, patches.release_patch(saved, SECRET))
    assert released['metadata']['annotations'] == verdict
