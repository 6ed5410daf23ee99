"""Retry policy of the Kubernetes API wrapper.

The failures are raised by plain callables standing in for API methods:
an API server answering 503 or 403 on demand cannot be arranged from a
unit test (the functional outage test stops a real one).
"""

import json
import types

import pytest
import urllib3
from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exceptions

from vmetal_ironic import deadline
from vmetal_ironic import exception
from vmetal_ironic.store.kubernetes import kube_client


def make_api(max_retries=2):
    group = types.SimpleNamespace(
        max_retries=max_retries, retry_backoff=0.0, retry_backoff_max=0.0,
        connect_timeout=1.0, request_timeout=2.0)
    configuration = k8s_client.Configuration()
    configuration.host = 'https://192.0.2.1:6443'
    return kube_client.Api(group, configuration)


def api_exception(status, reason, message=''):
    exc = k8s_exceptions.ApiException(status=status, reason=reason)
    exc.body = json.dumps({'reason': reason, 'message': message})
    return exc


def failing(*errors, result='ok'):
    errors = list(errors)

    def call(**kwargs):
        assert kwargs['_request_timeout'] == (1.0, 2.0)
        if errors:
            raise errors.pop(0)
        return result
    return call


def test_retries_5xx_429_and_connection_errors_then_succeeds():
    api = make_api(max_retries=3)
    func = failing(api_exception(503, 'ServiceUnavailable'),
                   api_exception(429, 'TooManyRequests'),
                   urllib3.exceptions.NewConnectionError(None, 'refused'))
    assert api.call('get thing', func) == 'ok'
    assert api.requests == 4


def test_exhausted_retries_raise_one_line_temporary_error():
    api = make_api(max_retries=1)
    func = failing(api_exception(500, 'InternalError'),
                   api_exception(502, 'BadGateway'))
    with pytest.raises(exception.StoreUnavailable) as info:
        api.call('get ConfigMap ns/x', func)
    assert str(info.value) == (
        'Kubernetes API https://192.0.2.1:6443 unavailable: get ConfigMap '
        'ns/x failed 2 time(s), last: HTTP 502 BadGateway')
    assert info.value.retry_after >= 1.0


def test_conflict_is_returned_at_once():
    api = make_api()
    func = failing(api_exception(409, 'Conflict', 'the object has been\n'
                                 'modified'))
    with pytest.raises(kube_client.ApiError) as info:
        api.call('update ConfigMap ns/x', func)
    assert info.value.status == 409
    assert info.value.reason == 'Conflict'
    assert '\n' not in str(info.value)
    assert api.requests == 1


def test_forbidden_is_deployment_trouble_and_says_what_to_fix():
    api = make_api()
    func = failing(api_exception(403, 'Forbidden', 'cannot list secrets'))
    with pytest.raises(kube_client.Forbidden) as info:
        api.call('list Secrets', func)
    assert str(info.value) == (
        'Kubernetes API https://192.0.2.1:6443 refused to list Secrets: 403 '
        'Forbidden: cannot list secrets; grant the store\'s identity the '
        'roles of etc/kubernetes/rbac')
    assert api.requests == 1
    func = failing(api_exception(401, 'Unauthorized'))
    with pytest.raises(kube_client.Forbidden, match='check the credentials'):
        api.call('list Secrets', func)
    assert issubclass(kube_client.Forbidden, exception.DeploymentError)
    assert not issubclass(kube_client.Forbidden, exception.PermanentError)


def _not_found(kind, name):
    exc = k8s_exceptions.ApiException(status=404, reason='NotFound')
    exc.body = json.dumps({'reason': 'NotFound', 'message': f'{kind} "{name}" '
                           'not found', 'details': {'name': name, 'kind': kind}})
    return exc


def test_missing_namespace_is_deployment_trouble():
    # The body the API server sends for a create in a missing namespace
    # (tests/functional/k8s/test_kubernetes_deployment.py causes it).
    api = make_api()
    with pytest.raises(kube_client.NamespaceNotFound) as info:
        api.call('create ConfigMap nowhere/x',
                 failing(_not_found('namespaces', 'nowhere')))
    assert str(info.value) == (
        "Kubernetes API https://192.0.2.1:6443: create ConfigMap nowhere/x "
        "failed: namespace 'nowhere' does not exist; create it "
        "(etc/kubernetes/rbac) or set [vmetal_kubernetes]namespace")
    assert isinstance(info.value, exception.DeploymentError)
    assert api.requests == 1
    # An absent object is the store's business, not the deployment's.
    with pytest.raises(kube_client.ApiError) as info:
        api.call('get ConfigMap ns/x', failing(_not_found('configmaps', 'x')))
    assert info.value.status == 404


def test_13_an_operations_deadline_bounds_every_call_and_its_retries():
    api = make_api(max_retries=5)
    api.group.retry_backoff = 30.0
    api.group.retry_backoff_max = 30.0
    timeouts = []

    def unavailable(**kwargs):
        timeouts.append(kwargs['_request_timeout'])
        raise api_exception(503, 'ServiceUnavailable')

    with deadline.within(1.5):
        # The request timeout is cut to what is left, and a backoff that
        # would outlast the deadline is not slept: one attempt, at once.
        with pytest.raises(exception.StoreUnavailable, match='1 time'):
            api.call('get thing', unavailable)
        assert len(timeouts) == 1
        assert all(part <= 1.5 for part in timeouts[0])
    with deadline.within(0), pytest.raises(exception.StoreUnavailable, match='deadline'):
        api.call('get thing', unavailable)
    assert len(timeouts) == 1


def too_many(retry_after):
    exc = api_exception(429, 'TooManyRequests')
    exc.headers = {'Retry-After': retry_after}
    return exc


def test_a_429_holds_back_every_thread_of_the_client_as_long_as_asked(
        monkeypatch):
    """Priority and fairness answers 429 with Retry-After: no request of
    the client goes out before then, bounded by retry_backoff_max."""
    api = make_api(max_retries=2)
    api.group.retry_backoff_max = 8.0
    slept = []
    # Sleeping is observed, not done (no time passes in the test).
    monkeypatch.setattr(kube_client.time, 'sleep', slept.append)

    assert api.call('create thing', failing(too_many('3'))) == 'ok'
    assert api.requests == 2
    assert 2.9 < max(slept) <= 3.0
    # Another call (another thread's) waits out the same pause.
    slept.clear()
    assert api.call('get other', failing()) == 'ok'
    assert 2.9 < max(slept) <= 3.0

    api = make_api(max_retries=1)
    api.group.retry_backoff_max = 8.0
    slept.clear()
    assert api.call('create thing', failing(too_many('60'))) == 'ok'
    assert 7.9 < max(slept) <= 8.0   # the bound, not a minute


def test_a_429_without_retry_after_backs_off_as_any_retry(monkeypatch):
    api = make_api(max_retries=1)
    slept = []
    monkeypatch.setattr(kube_client.time, 'sleep', slept.append)
    assert api.call('create thing', failing(too_many(None))) == 'ok'
    assert all(pause == 0 for pause in slept)


def test_the_client_keeps_a_connection_per_request_a_bulk_keeps_in_flight():
    assert make_api().configuration.connection_pool_maxsize >= (
        kube_client.CONNECTIONS)
