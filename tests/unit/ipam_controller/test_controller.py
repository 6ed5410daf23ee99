"""The controller's reconcile, host by host, on the fake API (the watches
are the real API server's: tests/functional/k8s/test_ipam_controller.py)."""

from tests.unit.store.kubernetes import cluster as cl
from vmetal_ironic.ipam_controller import controller as controller_mod
from vmetal_ironic.ipam_controller import events

KEY = f'{cl.HOSTS}/h1'


def setup(**options):
    world = cl.Cluster(**options)
    store = world.store()
    controller = controller_mod.Controller(store, 'test-replica')
    return world, store, controller


def two_holding_hosts():
    """``setup()``'s world and controller with h1 claimed by a Machine and h2 holding an address
    of its own, both followed already."""
    world, store, controller = setup()
    world.host('h1', consumer='Machine/m3/w1')
    world.host('h2')
    cl.give(store, 'h2')
    feed(world, controller)
    drain(controller, world)
    return world, controller


def feed(world, controller):
    """What the watches would deliver now: every host and claim."""
    controller.hosts_synced([controller.host_digest(obj)
                             for obj in world.kube.items(cl.BMH)])
    controller.claims_synced(world.kube.items(cl.CLAIMS, cl.NAMESPACE))


def drain(controller, world=None):
    """Work the queue until empty (keys failing are left to their retry
    delay), the claims' watch delivering what changed after each key;
    :returns: the keys worked on, in order."""
    worked = []
    while True:
        key = controller.queue.get(timeout=0)
        if key is None:
            return worked
        worked.append(key)
        controller.work_on(key)
        if world is not None:
            watch_claims(world, controller)


def watch_claims(world, controller):
    """The claims' watch: one event per claim that changed."""
    now = {obj['metadata']['name']: obj
           for obj in world.kube.items(cl.CLAIMS, cl.NAMESPACE)}
    for name in set(controller.claims) - set(now):
        controller.claim_changed('DELETED', {'metadata': {'name': name}})
    for name, obj in now.items():
        seen = controller.claims.get(name)
        if seen != (controller_mod.rules._host_of(obj), obj['spec']['owner']):
            controller.claim_changed('MODIFIED', obj)


def host_events(world, name='h1'):
    found = sorted(world.kube.items('events', cl.HOSTS),
                   key=lambda e: int(e['metadata']['resourceVersion']))
    return [(e['reason'], e['type'], e['message']) for e in found
            if e['involvedObject']['name'] == name]


def test_a_claimed_host_gets_its_address_and_says_so():
    world, _, controller = setup()
    world.host('h1', consumer='Machine/m3/w1')
    feed(world, controller)

    assert drain(controller, world)[0] == KEY

    assert world.claims() == {'192.0.2.2': 'Machine/m3/w1'}
    assert host_events(world) == [(events.ALLOCATED, 'Normal',
                                   '192.0.2.2 allocated to Machine/m3/w1')]
    annotations = world.get_host('h1')['metadata']['annotations']
    assert annotations[events.VERDICT_ANNOTATION] == (
        'AddressAllocated: 192.0.2.2 allocated to Machine/m3/w1')
    # Judged again (the annotation's own event, a resync): nothing new.
    controller.host_changed('MODIFIED', world.get_host('h1'))
    drain(controller, world)
    assert len(host_events(world)) == 1
    assert controller.counts['follow.ok'] == 1


def test_a_host_let_go_or_deleted_gives_its_address_back():
    world, controller = two_holding_hosts()

    world.let_go('h1')
    controller.host_changed('MODIFIED', world.get_host('h1'))
    world.delete_host('h2')
    controller.host_changed('DELETED', {'metadata': {
        'namespace': cl.HOSTS, 'name': 'h2'}, 'spec': {}})
    drain(controller, world)

    assert world.claims() == {}
    assert [reason for reason, _, _ in host_events(world)] == [
        events.ALLOCATED, events.RELEASED]
    assert controller.counts['released'] == 2
    assert controller.gone == {}


def test_a_refusal_names_the_value_and_the_layer_once():
    world, _, controller = setup()
    world.host('h1', consumer='Machine/m3/w1', annotations={
        'metal3.vcluster.com/network-cidr': '192.0.2.300/24'})
    feed(world, controller)
    drain(controller, world)
    controller.queue.add(KEY)
    drain(controller, world)

    [(reason, kind, message)] = host_events(world)
    assert (reason, kind) == (events.REFUSED, 'Warning')
    assert '192.0.2.300/24' in message and 'BareMetalHost' in message
    assert world.claims() == {}


def test_a_failing_step_is_retried_later_and_others_go_on():
    world, controller = two_holding_hosts()
    # h1's release cannot take its outputs off (a webhook refusing the
    # patch); h2's release goes through all the same.
    world.kube.deny('patch', cl.BMH, cl.HOSTS)
    world.let_go('h1')
    controller.host_changed('MODIFIED', world.get_host('h1'))
    world.delete_host('h2')
    controller.host_changed('DELETED', {'metadata': {
        'namespace': cl.HOSTS, 'name': 'h2'}, 'spec': {}})
    drain(controller, world)

    assert world.claims() == {'192.0.2.3': 'Machine/m3/w1'}
    assert controller.counts['released'] == 1
    assert controller.counts['release.failed'] == 1
    assert controller.queue.failures(KEY) == 1
    # Once the webhook lets it through, the retry releases it.
    world.kube.denied.clear()
    controller.queue.add(KEY)
    drain(controller, world)
    assert world.claims() == {}


def warnings_on(world, namespace, kind, name):
    return [(e['reason'], e['type'], e['message'])
            for e in world.kube.items('events', namespace)
            if (e['involvedObject']['kind'], e['involvedObject']['name'])
            == (kind, name)]


def sample(controller, name, **labels):
    return controller.metrics.registry.get_sample_value(name, labels) or 0


def test_a_bad_consumer_ref_is_skipped_counted_and_said_on_its_host():
    world, store, controller = setup()
    world.host('h1', consumer='Machine/m3/w1')
    world.host('h2', consumer='Machine/m3/w2')
    cl.give(store, 'h2')
    # Someone writes a reference no Machine can have: h2 keeps what it
    # holds (nothing released, nothing given) and h1 is served.
    world.change_host('h2', spec={'consumerRef': {'kind': 'Machine',
                                                  'name': 'w2/../w9'}})
    feed(world, controller)
    drain(controller, world)
    controller.queue.add(f'{cl.HOSTS}/h2')
    drain(controller, world)

    assert sorted(world.claims().values()) == [
        'Machine/m3/w1', 'Machine/m3/w2']
    [(reason, kind, message)] = warnings_on(world, cl.HOSTS,
                                            'BareMetalHost', 'h2')
    assert (reason, kind) == (events.SKIPPED, 'Warning')
    assert message == ("BareMetalHost m3/h2 spec.consumerRef.name "
                       "'w2/../w9' is not an object name")
    # Skipped at the listing and at each reconcile; said once.
    assert controller.counts['skipped.BareMetalHost.consumer_ref'] == 3
    assert sample(controller, 'vmetal_ipam_controller_skipped_objects_total',
                  kind='BareMetalHost', reason='consumer_ref') == 3
    assert controller.counts['follow.ok'] == 1


def test_a_malformed_claim_or_record_is_skipped_and_the_rest_indexed():
    world, _, controller = setup()
    world.host('h1', consumer='Machine/m3/w1')
    # Wrong types and values the CRD schemas refuse on an API server that
    # has them: written here as by a client of a cluster with older CRDs.
    world.kube.put(cl.CLAIMS, {'metadata': {
        'name': 'x.192.0.2.77', 'namespace': cl.NAMESPACE},
        'spec': {'owner': 'Machine', 'address': '192.0.2.77'}})
    world.kube.put(cl.CLAIMS, {'metadata': {
        'name': 'x.192.0.2.78', 'namespace': cl.NAMESPACE},
        'spec': {'owner': 'Machine/m3/w8', 'address': '192.0.2.78',
                 'host': ['m3', 'h1']}})
    feed(world, controller)
    controller.record_changed('ADDED', {'metadata': {
        'name': 'r', 'namespace': cl.NAMESPACE}, 'spec': 'owner=Machine'})
    drain(controller, world)

    assert world.claims()['192.0.2.2'] == 'Machine/m3/w1'
    assert ('x.192.0.2.77', 'x.192.0.2.78') not in controller.claims
    [(_, _, owner)] = warnings_on(world, cl.NAMESPACE, 'AddressClaim',
                                  'x.192.0.2.77')
    assert owner.startswith("AddressClaim vmetal-system/x.192.0.2.77 "
                            "spec.owner: owner 'Machine' is not")
    [(_, _, host)] = warnings_on(world, cl.NAMESPACE, 'AddressClaim',
                                 'x.192.0.2.78')
    assert "spec.host ['m3', 'h1'] is not <namespace>/<name>" in host
    [(_, _, record)] = warnings_on(world, cl.NAMESPACE, 'AddressOwner', 'r')
    assert "spec 'owner=Machine' is not an object" in record
    assert sample(controller, 'vmetal_ipam_controller_skipped_objects_total',
                  kind='AddressClaim', reason='owner') >= 1
    assert controller.counts['skipped.AddressOwner.spec'] == 1


def test_a_node_type_with_a_bad_selector_is_said_on_its_node_provider():
    world, _, controller = setup()
    provider = {'metadata': {'name': 'team-a', 'uid': 'u-a'},
                'spec': {'metal3': {'nodeTypes': [
                    {'name': 'small', 'bareMetalHosts': {'selector': {
                        'matchExpressions': [{'key': 'tier',
                                              'operator': 'Near'}]}}},
                    {'name': 'large', 'bareMetalHosts': {'selector': {
                        'matchLabels': {'tier': 'large'}}}}]}}}
    controller.providers_synced([provider])
    controller.provider_changed('MODIFIED', provider)

    [(reason, kind, message)] = warnings_on(world, 'default', 'NodeProvider',
                                            'team-a')
    assert (reason, kind) == (events.SKIPPED, 'Warning')
    assert "NodeProvider team-a node type 'small'" in message
    assert "'Near'" in message
    assert controller.counts['skipped.NodeProvider.selector'] == 2
    # Deleted and made again with the same fault: said again.
    controller.provider_changed('DELETED', provider)
    controller.provider_changed('ADDED', provider)
    assert len(warnings_on(world, 'default', 'NodeProvider', 'team-a')) == 2


def test_the_metrics_count_steps_retries_verdicts_and_time():
    world, controller = two_holding_hosts()
    world.kube.deny('patch', cl.BMH, cl.HOSTS)
    world.let_go('h1')
    controller.host_changed('MODIFIED', world.get_host('h1'))
    drain(controller, world)

    assert sample(controller, 'vmetal_ipam_controller_steps_total',
                  step='release', result='failed') == 1
    assert sample(controller, 'vmetal_ipam_controller_steps_total',
                  step='follow', result='ok') == 1
    assert sample(controller, 'vmetal_ipam_controller_verdicts_total',
                  outcome='allocated') == 1
    assert sample(controller, 'vmetal_ipam_controller_events_total',
                  result='written') == 1
    assert sample(controller, 'vmetal_ipam_controller_queue_retries_total'
                  ) == 1
    # Every host key worked on was timed: read, or judged settled from
    # the watches' copy.
    assert sample(controller, 'vmetal_ipam_controller_reconcile_seconds_count',
                  kind='host') == sum(sample(
                      controller, 'vmetal_ipam_controller_steps_total',
                      step=step, result='ok') for step in ('read', 'settled'))
    # The failed key waits for its retry.
    assert sample(controller, 'vmetal_ipam_controller_queue_depth') == 1


def test_a_resync_reads_no_host_that_needs_nothing():
    world, controller = two_holding_hosts()
    gets = world.kube.requests.get(('get', cl.BMH), 0)
    # The watches' copies as they are now (outputs written), every host
    # queued: each holds what it should.
    feed(world, controller)
    drain(controller, world)
    assert world.kube.requests.get(('get', cl.BMH), 0) == gets
    assert controller.counts['settled'] >= 2
    # A change the watch delivers (h1 let go) is read and acted on.
    world.let_go('h1')
    controller.host_changed('MODIFIED', world.get_host('h1'))
    drain(controller, world)
    assert world.kube.requests[('get', cl.BMH)] > gets
    assert list(world.claims().values()) == ['BareMetalHost/m3/h2']


def _requests_of_following(world, controller, name, machine):
    """The API requests (by verb and plural) following one newly claimed
    host costs, the process warm (held addresses read, gateway claimed)."""
    world.host(name, consumer=machine)
    feed(world, controller)
    before = dict(world.kube.requests)
    # Each queued key once (the others need nothing and cost nothing);
    # the watches' news of what the follow wrote come after.
    assert f'{cl.HOSTS}/{name}' in drain(controller)
    spent = {key: count - before.get(key, 0)
             for key, count in world.kube.requests.items()
             if count != before.get(key, 0)}
    feed(world, controller)
    drain(controller, world)
    return spent


def test_a_followed_host_lists_no_property_source_the_informers_hold():
    world, _, controller = setup()
    controller.providers_synced([])
    controller.environments_synced([])
    _requests_of_following(world, controller, 'h0', 'Machine/m3/w0')

    spent = _requests_of_following(world, controller, 'h1', 'Machine/m3/w1')

    # The host read once; the claim and the owner record (two creates,
    # the claim read back); the Secret; the Event; one host patch with the
    # outputs and the verdict. No NodeProvider or environment listed.
    assert spent == {('get', cl.BMH): 1,
                     ('create', cl.CLAIMS): 1, ('create', cl.OWNERS): 1,
                     ('get', cl.CLAIMS): 1, ('create', 'secrets'): 1,
                     ('create', 'events'): 1, ('patch', cl.BMH): 1}
    assert sum(spent.values()) == 7
    assert world.claims()['192.0.2.3'] == 'Machine/m3/w1'
    annotations = world.get_host('h1')['metadata']['annotations']
    assert annotations[events.VERDICT_ANNOTATION] == (
        'AddressAllocated: 192.0.2.3 allocated to Machine/m3/w1')
    assert annotations['metal3.vcluster.com/ip-address'] == '192.0.2.3/24'
    assert host_events(world) == [(events.ALLOCATED, 'Normal',
                                   '192.0.2.3 allocated to Machine/m3/w1')]


def test_until_the_informers_listed_the_store_lists_the_sources_itself():
    world, store, controller = setup()
    controller.providers_synced([])
    _requests_of_following(world, controller, 'h0', 'Machine/m3/w0')

    spent = _requests_of_following(world, controller, 'h1', 'Machine/m3/w1')

    assert controller.sources() is None
    assert spent[('list', store._providers_api[2])] == 1
    assert spent[('list', store._environments_api[2])] == 1
    assert sum(spent.values()) == 9


def test_a_followed_host_uses_the_node_type_the_informers_hold():
    world, store, controller = setup()
    provider = {'metadata': {'name': 'p'}, 'spec': {'metal3': {'nodeTypes': [{
        'name': 't', 'properties': {
            'metal3.vcluster.com/network-cidr': '198.51.100.1/24'},
        'bareMetalHosts': {'selector': {'matchLabels': {'rack': 'r1'}}}}]}}}
    controller.providers_synced([provider])
    controller.environments_synced([])
    world.host('h1', consumer='Machine/m3/w1')
    world.change_host('h1', metadata={'labels': {'rack': 'r1'}})
    feed(world, controller)
    drain(controller, world)

    assert world.claims() == {'198.51.100.2': 'Machine/m3/w1'}
    listed = {plural for verb, plural in world.kube.requests if verb == 'list'}
    assert not listed & {store._providers_api[2], store._environments_api[2]}


def test_an_event_that_cannot_be_written_leaves_the_verdict_unsaid():
    world, _, controller = setup()
    controller.providers_synced([])
    controller.environments_synced([])
    world.kube.deny('create', 'events', cl.HOSTS)
    world.host('h1', consumer='Machine/m3/w1')
    feed(world, controller)
    drain(controller, world)

    annotations = world.get_host('h1')['metadata']['annotations']
    # The outputs are written; the annotation never says what no Event
    # said.
    assert annotations['metal3.vcluster.com/ip-address'] == '192.0.2.2/24'
    assert events.VERDICT_ANNOTATION not in annotations
    assert controller.reporter.failures == 1
    assert controller.counts['follow.ok'] == 1
