"""Events and the verdict annotation, on the fake API."""

import datetime

from tests.unit.store.kubernetes import cluster as cl
from vmetal_ironic.ipam_controller import events


def test_an_event_names_the_host_and_is_a_warning_only_when_refused():
    host = {'metadata': {'namespace': 'm3', 'name': 'h', 'uid': 'u1'}}
    now = datetime.datetime(2026, 12, 6, tzinfo=datetime.timezone.utc)
    body = events.event_body(host, events.REFUSED, 'pool\n  exhausted',
                             'replica-a', now)
    assert body['involvedObject'] == {
        'apiVersion': 'metal3.io/v1alpha1', 'kind': 'BareMetalHost',
        'name': 'h', 'namespace': 'm3', 'uid': 'u1'}
    assert (body['type'], body['message'], body['lastTimestamp']) == (
        'Warning', 'pool exhausted', '2026-12-06T00:00:00Z')
    assert body['reportingInstance'] == 'replica-a'
    assert events.event_body(host, events.ALLOCATED, 'x', 'a')[
        'type'] == 'Normal'
    assert len(events.verdict_text('R', 'x' * 5000)) == events.MESSAGE_LIMIT


def test_a_verdict_is_written_once_and_a_failure_is_counted_not_raised():
    world = cl.Cluster()
    store = world.store()
    reporter = events.Reporter(store.api, 'replica-a')
    world.host('h1')
    assert reporter.report(world.get_host('h1'), events.ALLOCATED, 'one')
    assert not reporter.report(world.get_host('h1'), events.ALLOCATED, 'one')
    assert reporter.report(world.get_host('h1'), events.RELEASED, 'two')
    assert len(world.kube.items('events', cl.HOSTS)) == 2
    assert world.get_host('h1')['metadata']['annotations'][
        events.VERDICT_ANNOTATION] == 'AddressReleased: two'
    world.kube.deny('create', 'events', cl.HOSTS)
    assert not reporter.report(world.get_host('h1'), events.REFUSED, 'bad')
    assert (reporter.events, reporter.failures) == (2, 1)
    assert not reporter.report(None, events.RELEASED, 'gone')


def test_a_warning_on_any_object_is_written_once_per_fault():
    world = cl.Cluster()
    store = world.store()
    written = []
    reporter = events.Reporter(store.api, 'replica-a',
                               on_written=written.append)
    provider = {'metadata': {'name': 'team-a', 'uid': 'u1'}}
    claim = {'metadata': {'name': 'c', 'namespace': cl.NAMESPACE}}
    api = 'management.loft.sh/v1'
    assert reporter.warn(api, 'NodeProvider', provider, 'bad selector')
    assert not reporter.warn(api, 'NodeProvider', provider, 'bad selector')
    assert reporter.warn(api, 'NodeProvider', provider, 'worse selector')
    assert reporter.warn('vmetal-ironic.io/v1alpha1', 'AddressClaim', claim,
                         'bad owner')
    # A cluster-scoped object's Event goes to the default namespace.
    [first, second] = sorted(world.kube.items('events', 'default'),
                             key=lambda event: event['message'])
    assert first['involvedObject'] == {
        'apiVersion': api, 'kind': 'NodeProvider', 'name': 'team-a',
        'uid': 'u1'}
    assert (first['type'], first['reason']) == ('Warning', events.SKIPPED)
    assert (first['message'], second['message']) == (
        'bad selector', 'worse selector')
    [on_claim] = world.kube.items('events', cl.NAMESPACE)
    assert on_claim['involvedObject']['namespace'] == cl.NAMESPACE
    # Forgotten once deleted: the same fault on a new object is said.
    reporter.forget('AddressClaim', claim)
    world.kube.deny('create', 'events', cl.NAMESPACE)
    assert not reporter.warn('vmetal-ironic.io/v1alpha1', 'AddressClaim',
                             claim, 'bad owner')
    assert written == [True, True, True, False]
    assert (reporter.events, reporter.failures) == (3, 1)


def test_an_announced_verdict_is_one_event_and_an_annotation_to_write():
    world = cl.Cluster()
    store = world.store()
    reporter = events.Reporter(store.api, 'replica-a')
    world.host('h1')
    said = {events.VERDICT_ANNOTATION: 'AddressAllocated: one'}

    assert reporter.announce(world.get_host('h1'), events.ALLOCATED,
                             'one') == said
    # Nothing patched here: the caller writes it with its own patch.
    assert world.kube.requests.get(('patch', cl.BMH)) is None
    world.change_host('h1', metadata={'annotations': said})
    assert reporter.announce(world.get_host('h1'), events.ALLOCATED,
                             'one') == said
    assert len(world.kube.items('events', cl.HOSTS)) == 1
    world.kube.deny('create', 'events', cl.HOSTS)
    assert reporter.announce(world.get_host('h1'), events.REFUSED,
                             'bad') == {}
    assert (reporter.events, reporter.failures) == (1, 1)
