"""One active controller: a ``coordination.k8s.io/v1`` Lease.

The replica whose identity is the Lease's ``holderIdentity`` leads; it
renews ``renewTime`` every ``retry_period`` seconds by compare-and-swap
(a replace carrying the resourceVersion read). A standby reads the Lease
as often; it takes the Lease over only once the holder's record has not
changed for ``lease_duration`` seconds *by its own clock* (it times what
it observed, never compares its clock with the holder's). A leader that
could not renew for ``renew_deadline`` seconds (shorter than the lease
duration) stops its work before any standby may start. On a clean stop the
leader gives the Lease up (empty holder) so a standby takes over at its
next look.

Why not the kubernetes client's ``leaderelection`` package: it has a
``LeaseLock`` in the pinned client (37) and a renew deadline, but its
lock calls the API without a request timeout (a hung renew holds the
leader past its deadline while a standby takes over), its loops sleep
without a way to stop them, it leads once and returns, and bad settings
``sys.exit`` the process. kopf's peering uses its own custom resources,
not a Lease, and an asyncio runtime the store does not use. The rules
here are client-go's.
"""

import datetime
import threading
import time

from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exceptions
from oslo_log import log
import urllib3

LOG = log.getLogger(__name__)

NAME = 'vmetal-ipam-controller'


def _micro_time(moment):
    return moment.strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


class LeaseElector:
    """Campaigns for, holds and gives up the Lease.

    :param api_client: a ``kubernetes.client.ApiClient``.
    :param namespace: the store's namespace (where the Lease lives).
    :param identity: this replica's name (the pod name).
    :param lease_duration: seconds a standby waits on an unchanged record.
    :param renew_deadline: seconds the leader keeps leading without a
        successful renew; less than ``lease_duration``.
    :param retry_period: seconds between two looks (and renews).
    :param clock: monotonic seconds (tests).
    :param metrics: a :class:`~.metrics.Metrics` to keep (leading, the
        Lease's transitions, this replica's changes), or ``None``.
    """

    def __init__(self, api_client, namespace, identity, lease_duration=15,
                 renew_deadline=10, retry_period=2, name=NAME,
                 clock=time.monotonic, metrics=None):
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(
                f'lease timing must be 0 < retry_period ({retry_period}) < '
                f'renew_deadline ({renew_deadline}) < lease_duration '
                f'({lease_duration})')
        self.api = k8s_client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.identity = identity
        self.name = name
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        # The record last seen and when (our clock) it was first seen.
        self._observed = None
        self._observed_at = 0.0
        self._renewed_at = None
        self.leading = False
        self.transitions = 0
        self.metrics = metrics
        if metrics is not None:
            metrics.follow_leading(lambda: self.leading)

    def _timeout(self):
        # A hung renew must not hold a leader past its deadline: half of
        # it per request, so that one more try fits after a timeout.
        half = self.renew_deadline / 2
        return (min(5.0, half), half)

    def _body(self, lease, acquired):
        now = _micro_time(_now())
        spec = lease.spec if lease is not None else None
        holder = getattr(spec, 'holder_identity', None)
        transitions = getattr(spec, 'lease_transitions', None) or 0
        if lease is not None and holder != self.identity:
            transitions += 1
        body = {'apiVersion': 'coordination.k8s.io/v1', 'kind': 'Lease',
                'metadata': {'name': self.name, 'namespace': self.namespace},
                'spec': {'holderIdentity': self.identity,
                         'leaseDurationSeconds': int(self.lease_duration),
                         'acquireTime': acquired or now, 'renewTime': now,
                         'leaseTransitions': transitions}}
        if lease is not None:
            body['metadata']['resourceVersion'] = (
                lease.metadata.resource_version)
        return body

    def try_acquire_or_renew(self):
        """One look: :returns: whether this replica holds the Lease now."""
        try:
            lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout())
        except k8s_exceptions.ApiException as exc:
            if exc.status != 404:
                LOG.debug('Reading Lease %s failed: %s', self.name, exc.status)
                return False
            lease = None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            LOG.debug('Reading Lease %s failed: %s', self.name, exc)
            return False
        acquired = None
        if lease is not None:
            spec = lease.spec
            if self.metrics is not None:
                self.metrics.lease_transitions.set(
                    spec.lease_transitions or 0)
            record = (spec.holder_identity, spec.renew_time,
                      spec.lease_duration_seconds)
            if record != self._observed:
                self._observed, self._observed_at = record, self.clock()
            holder = spec.holder_identity
            if holder == self.identity:
                acquired = (_micro_time(spec.acquire_time)
                            if spec.acquire_time else None)
            elif holder and (self.clock() - self._observed_at
                             < (spec.lease_duration_seconds
                                or self.lease_duration)):
                return False
        body = self._body(lease, acquired)
        try:
            if lease is None:
                self.api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self._timeout())
            else:
                self.api.replace_namespaced_lease(
                    self.name, self.namespace, body,
                    _request_timeout=self._timeout())
        except k8s_exceptions.ApiException as exc:
            # 409: someone else wrote it first; look again next period.
            LOG.debug('Writing Lease %s failed: %s', self.name, exc.status)
            return False
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            LOG.debug('Writing Lease %s failed: %s', self.name, exc)
            return False
        if lease is None or lease.spec.holder_identity != self.identity:
            self.transitions += 1
        if self.metrics is not None:
            # The record as this replica just wrote it.
            self.metrics.lease_transitions.set(
                body['spec']['leaseTransitions'])
        return True

    def release(self):
        """Give the Lease up if held (a clean stop): a standby need not
        wait the lease duration."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout())
            if lease.spec.holder_identity != self.identity:
                return
            body = self._body(lease, None)
            body['spec'].update(holderIdentity=None, leaseDurationSeconds=1,
                                leaseTransitions=lease.spec.lease_transitions)
            self.api.replace_namespaced_lease(
                self.name, self.namespace, body,
                _request_timeout=self._timeout())
        except (k8s_exceptions.ApiException, urllib3.exceptions.HTTPError,
                OSError) as exc:
            LOG.warning('Giving up Lease %s failed (%s); a standby takes '
                        'over once it expires', self.name, exc)

    def run(self, stop, on_started, on_stopped):
        """Campaign and lead until ``stop`` is set: ``on_started()`` when
        this replica starts leading, ``on_stopped()`` when it stops
        (renew deadline passed, or ``stop``); campaigns again after."""
        while not stop.is_set():
            start = self.clock()
            held = self.try_acquire_or_renew()
            if held:
                self._renewed_at = self.clock()
                if not self.leading:
                    self.leading = True
                    LOG.info('%s leads (Lease %s/%s)', self.identity,
                             self.namespace, self.name)
                    self._changed('started')
                    on_started()
            elif self.leading and (self.clock() - self._renewed_at
                                   > self.renew_deadline):
                self.leading = False
                LOG.warning('%s could not renew Lease %s for %s s: it stops '
                            'leading', self.identity, self.name,
                            self.renew_deadline)
                self._changed('stopped')
                on_stopped()
            stop.wait(max(0.0, self.retry_period - (self.clock() - start)))
        if self.leading:
            self._changed('stopped')
            on_stopped()
            self.release()

    def _changed(self, change):
        if self.metrics is not None:
            self.metrics.leadership.labels(change).inc()

    def start(self, stop, on_started, on_stopped):
        thread = threading.Thread(target=self.run, name='vmetal-lease',
                                  args=(stop, on_started, on_stopped),
                                  daemon=True)
        thread.start()
        return thread
