"""Which claimed hosts a reconcile pass gives their network, on plain
dicts."""

import pytest

from vmetal_ironic.ipam_controller import follower
from vmetal_ironic.ipam_controller import reconciler as rec
from vmetal_ironic.store.kubernetes import patches

OURS = 'vmetal-nd-baremetalhost-h'


def host(annotations=None, **spec):
    return {'metadata': {'namespace': 'ns', 'name': 'h',
                         'annotations': annotations or {}},
            'spec': spec}


@pytest.mark.parametrize('the_host, missing', [
    (host(), True),
    # One reference filled, the other not: the patch never went through.
    (host(preprovisioningNetworkDataName=OURS), True),
    (host(networkData={'name': OURS},
          preprovisioningNetworkDataName=OURS), False),
    # The user's own references on both: the written record tells.
    (host(networkData={'name': 'mine'},
          preprovisioningNetworkDataName='mine'), True),
    (host({patches.WRITTEN_ANNOTATION: '{}'}, networkData={'name': 'mine'},
          preprovisioningNetworkDataName='mine'), False),
])
def test_outputs_missing(the_host, missing):
    assert follower.outputs_missing(the_host) is missing


def view(consumer='Machine/ns/m', detached=False, deleting=False,
         outputs_missing=False):
    return rec.HostView(consumer, 'available', detached, mac=None,
                        deleting=deleting, outputs_missing=outputs_missing)


@pytest.mark.parametrize('the_view, held, expected', [
    # Claimed, its Machine holds nothing yet.
    (view(), set(), True),
    # Holds an address and the outputs are there: nothing to do.
    (view(), {'Machine/ns/m'}, False),
    # Holds one, outputs cut short: complete them.
    (view(outputs_missing=True), {'Machine/ns/m'}, True),
    # Unclaimed, detached or paused, being deleted: left alone.
    (view(consumer=None), set(), False),
    (view(detached=True), set(), False),
    (view(deleting=True), set(), False),
])
def test_needs_network(the_view, held, expected):
    assert follower.needs_network(the_view, held) is expected


def test_view_of_a_claimed_host_keeps_what_the_follower_needs():
    the_host = host(bootMACAddress='52:54:00:00:00:01',
                    consumerRef={'kind': 'Metal3Machine', 'name': 'm'})
    the_host['metadata']['deletionTimestamp'] = '2026-12-01T11:00:00Z'
    assert rec.view_of(the_host) == rec.HostView(
        'Metal3Machine/ns/m', '', False, mac='52:54:00:00:00:01',
        deleting=True, outputs_missing=True)
