"""The Lease rules, two replicas on one fake Lease with a clock of the
test's (a real API server's Lease takeover is in tests/functional/k8s/
test_ipam_controller.py; here the clock and a lost renew are the test's)."""

import copy
import itertools
import types

import pytest
from kubernetes.client import exceptions as k8s_exceptions

from vmetal_ironic.ipam_controller import leader
from vmetal_ironic.ipam_controller import metrics as metrics_mod


class FakeLeases:
    """The three Lease calls, with the API server's compare-and-swap:
    a fake, to run two replicas' looks in an order of the test's."""

    def __init__(self):
        self.lease = None
        self.versions = itertools.count(1)
        self.down = False

    def _check(self):
        if self.down:
            raise OSError('connection refused (fake outage)')

    def read_namespaced_lease(self, name, namespace, **_kwargs):
        self._check()
        if self.lease is None:
            raise k8s_exceptions.ApiException(status=404)
        return copy.deepcopy(self.lease)

    def _store(self, body):
        spec = body['spec']
        self.lease = types.SimpleNamespace(
            metadata=types.SimpleNamespace(
                resource_version=str(next(self.versions))),
            spec=types.SimpleNamespace(
                holder_identity=spec['holderIdentity'],
                renew_time=spec['renewTime'],
                acquire_time=None,
                lease_duration_seconds=spec['leaseDurationSeconds'],
                lease_transitions=spec['leaseTransitions']))

    def create_namespaced_lease(self, namespace, body, **_kwargs):
        self._check()
        if self.lease is not None:
            raise k8s_exceptions.ApiException(status=409)
        self._store(body)

    def replace_namespaced_lease(self, name, namespace, body, **_kwargs):
        self._check()
        if body['metadata']['resourceVersion'] != (
                self.lease.metadata.resource_version):
            raise k8s_exceptions.ApiException(status=409)
        self._store(body)


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def replica(leases, clock, name, metrics=None):
    elector = leader.LeaseElector(None, 'ns', name, lease_duration=15,
                                  renew_deadline=10, retry_period=2,
                                  clock=clock, metrics=metrics)
    elector.api = leases
    return elector


def test_one_leads_the_other_waits_for_the_lease_duration():
    leases, clock = FakeLeases(), Clock()
    first, second = replica(leases, clock, 'a'), replica(leases, clock, 'b')
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    # The leader keeps renewing: the standby never takes over.
    for _ in range(10):
        clock.now += 2
        assert first.try_acquire_or_renew()
        assert not second.try_acquire_or_renew()
    # The leader dies: the record stops changing; after the lease
    # duration by the standby's own clock, it takes over.
    clock.now += 14
    assert not second.try_acquire_or_renew()
    clock.now += 2
    assert second.try_acquire_or_renew()
    assert leases.lease.spec.holder_identity == 'b'
    assert leases.lease.spec.lease_transitions == 1
    # The old leader, back, finds it taken.
    assert not first.try_acquire_or_renew()


def test_a_leader_that_cannot_renew_stops_before_a_standby_may_start():
    leases, clock = FakeLeases(), Clock()
    metrics = metrics_mod.Metrics()
    elector = replica(leases, clock, 'a', metrics)
    calls = []

    class Stop:
        """Lets the loop run a fixed number of looks."""

        looks = 0

        def is_set(self):
            return self.looks >= 12

        def wait(self, seconds):
            self.looks += 1
            clock.now += 2
            leases.down = self.looks >= 2

    elector.run(Stop(), lambda: calls.append(('started', clock.now)),
                lambda: calls.append(('stopped', clock.now)))

    assert calls[0] == ('started', 0.0)
    assert calls[1][0] == 'stopped'
    # Last renew at t=2; stopped once more than renew_deadline passed
    # without one, before the lease (15 s after that renew) expired.
    assert 2 + 10 < calls[1][1] < 2 + 15
    assert len(calls) == 2
    # Said in its metrics: it started, stopped and no longer leads.
    assert [metrics.registry.get_sample_value(
        'vmetal_ipam_controller_leadership_changes_total', {'change': c})
        for c in ('started', 'stopped')] == [1, 1]
    assert metrics.registry.get_sample_value(
        'vmetal_ipam_controller_leading') == 0


def test_the_metrics_follow_leading_and_the_leases_transitions():
    leases, clock = FakeLeases(), Clock()
    metrics = metrics_mod.Metrics()
    first = replica(leases, clock, 'a')
    second = replica(leases, clock, 'b', metrics)
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    assert metrics.registry.get_sample_value(
        'vmetal_ipam_controller_leading') == 0
    clock.now += 16
    assert second.try_acquire_or_renew()
    second.leading = True
    assert metrics.registry.get_sample_value(
        'vmetal_ipam_controller_leading') == 1
    # Read at the next look: the takeover's own transition.
    second.try_acquire_or_renew()
    assert metrics.registry.get_sample_value(
        'vmetal_ipam_controller_lease_transitions') == 1


def test_a_clean_stop_gives_the_lease_up():
    leases, clock = FakeLeases(), Clock()
    first, second = replica(leases, clock, 'a'), replica(leases, clock, 'b')
    assert first.try_acquire_or_renew()
    first.leading = True
    first.release()
    assert leases.lease.spec.holder_identity is None
    assert second.try_acquire_or_renew()


def test_timings_that_do_not_hold_together_are_refused():
    with pytest.raises(ValueError, match='renew_deadline'):
        leader.LeaseElector(None, 'ns', 'a', lease_duration=10,
                            renew_deadline=10, retry_period=2)
