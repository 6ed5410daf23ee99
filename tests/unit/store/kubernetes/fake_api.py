"""A fake Kubernetes API for the store's unit tests.

This is a fake, on purpose and only for what a real kube-apiserver cannot
be made to do on demand: run another writer's code at an exact point
between two of ours (an interleaving), or apply a write and then lose its
answer (the caller sees a timeout, retries, and meets its own write). The
functional tests (``tests/functional/k8s``) run the same store against a
real API server for everything else.

It keeps the rules the store relies on, as the API server does:

* a create of a name that exists answers 409 AlreadyExists;
* a merge patch or a replace carrying ``metadata.resourceVersion`` is a
  compare-and-swap: 409 Conflict when the object moved since;
* a delete honours ``preconditions`` on ``uid`` and ``resourceVersion``
  (409 when they do not match), 404 when the object is gone;
* lists are filtered by equality label selectors (``k=v``, ``k!=v``,
  ``k``); every write bumps one cluster-wide resourceVersion.

It stands in for the ``CustomObjectsApi`` and ``CoreV1Api`` objects of a
real :class:`~vmetal_ironic.store.kubernetes.kube_client.Api` (:func:`api_on`), so
the store's retry policy, error mapping and timeouts are its real code.
"""

import copy
import itertools
import json
import threading
import types
import uuid

import urllib3
from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exceptions
from oslo_config import cfg

from vmetal_ironic.conf import kubernetes as kube_conf
from vmetal_ironic.conf import vmetal as vmetal_conf
from vmetal_ironic.store.kubernetes import kube_client

WRITES = ('create', 'patch', 'replace', 'delete')


def _error(status, reason, message='', details=None):
    exc = k8s_exceptions.ApiException(status=status, reason=reason)
    exc.body = json.dumps({'kind': 'Status', 'reason': reason,
                           'message': message, 'details': details or {}})
    return exc


def merge(target, patch):
    """RFC 7386 JSON merge patch of ``patch`` into ``target`` (a copy)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def matches(labels, selector):
    """Whether ``labels`` match an equality-based ``selector``."""
    for term in filter(None, (selector or '').split(',')):
        if '!=' in term:
            key, value = term.split('!=', 1)
            if labels.get(key) == value:
                return False
        elif '=' in term:
            key, value = term.split('=', 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


class Hook:
    """One injected step at a write: ``action()`` runs before or after the
    write is applied, and ``lose`` makes the caller not see its answer."""

    def __init__(self, verb, plural, name, when, action, lose, times):
        self.verb, self.plural, self.name = verb, plural, name
        self.when, self.action, self.lose = when, action, lose
        self.times = times

    def fits(self, verb, plural, name):
        return (self.times != 0 and self.verb in (verb, None)
                and self.plural in (plural, None)
                and self.name in (name, None))


class FakeKube:
    """The objects of a fake cluster, and the hooks of a test.

    ``custom`` and ``core`` are the two API objects the store calls.
    ``requests`` counts calls by ``(verb, plural)``.
    """

    def __init__(self):
        self.objects = {}       # (plural, namespace, name) -> object
        self._version = itertools.count(1)
        self._lock = threading.RLock()
        self.hooks = []
        self.requests = {}
        self.selectors = []     # (plural, label selector) of every list
        self.denied = set()     # (verb, plural, namespace): answer 403
        self.custom = _Custom(self)
        self.core = _Core(self)

    # -- what a test arranges --------------------------------------------------

    def at(self, verb, plural, action=None, name=None, when='before',
           lose=False, times=1):
        """Run ``action()`` at the next ``times`` writes (``verb`` among
        create, patch, replace, delete, or ``list``/``get``; ``None``:
        any) of ``plural`` (``None``: any), ``when`` ``before`` or
        ``after`` it is applied; ``lose``: apply it, then answer the
        caller with a read timeout (its answer was lost on the way)."""
        hook = Hook(verb, plural, name, when, action, lose, times)
        self.hooks.append(hook)
        return hook

    def deny(self, verb, plural, namespace):
        """Answer 403 to ``verb`` of ``plural`` in ``namespace``."""
        self.denied.add((verb, plural, namespace))

    def put(self, plural, obj):
        """Store ``obj`` as if created by someone else; returns it."""
        metadata = obj['metadata']
        return self._create(plural, metadata.get('namespace'), obj)

    def get(self, plural, namespace, name):
        found = self.objects.get((plural, namespace, name))
        return copy.deepcopy(found)

    def items(self, plural, namespace=None):
        return [copy.deepcopy(obj) for (kind, space, _), obj in
                sorted(self.objects.items())
                if kind == plural and namespace in (None, space)]

    # -- the API server's rules ----------------------------------------------

    def _stamp(self, obj):
        obj['metadata']['resourceVersion'] = str(next(self._version))

    def _create(self, plural, namespace, body):
        obj = copy.deepcopy(body)
        metadata = obj.setdefault('metadata', {})
        metadata['namespace'] = namespace
        key = (plural, namespace, metadata['name'])
        if key in self.objects:
            raise _error(409, 'AlreadyExists',
                         f'{plural} "{metadata["name"]}" already exists',
                         {'name': metadata['name'], 'kind': plural})
        metadata['uid'] = str(uuid.uuid4())
        metadata['creationTimestamp'] = '2026-12-06T00:00:00Z'
        metadata.pop('resourceVersion', None)
        self._stamp(obj)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def _current(self, plural, namespace, name):
        found = self.objects.get((plural, namespace, name))
        if found is None:
            raise _error(404, 'NotFound', f'{plural} "{name}" not found',
                         {'name': name, 'kind': plural})
        return found

    def _patch(self, plural, namespace, name, body):
        current = self._current(plural, namespace, name)
        wanted = ((body or {}).get('metadata') or {}).get('resourceVersion')
        if wanted and wanted != current['metadata']['resourceVersion']:
            raise _error(409, 'Conflict', 'the object has been modified')
        obj = merge(current, body)
        obj['metadata']['uid'] = current['metadata']['uid']
        self._stamp(obj)
        self.objects[(plural, namespace, name)] = obj
        return copy.deepcopy(obj)

    def _replace(self, plural, namespace, name, body):
        current = self._current(plural, namespace, name)
        wanted = ((body or {}).get('metadata') or {}).get('resourceVersion')
        if wanted and wanted != current['metadata']['resourceVersion']:
            raise _error(409, 'Conflict', 'the object has been modified')
        obj = copy.deepcopy(body)
        obj['metadata'].update(namespace=namespace,
                               uid=current['metadata']['uid'],
                               creationTimestamp=current['metadata'].get(
                                   'creationTimestamp'))
        self._stamp(obj)
        self.objects[(plural, namespace, name)] = obj
        return copy.deepcopy(obj)

    def _delete(self, plural, namespace, name, body):
        current = self._current(plural, namespace, name)
        wanted = (body or {}).get('preconditions') or {}
        for key in ('uid', 'resourceVersion'):
            if wanted.get(key) and wanted[key] != current['metadata'][key]:
                raise _error(409, 'Conflict', f'precondition {key} failed')
        del self.objects[(plural, namespace, name)]
        return {'kind': 'Status', 'status': 'Success'}

    def _list(self, plural, namespace, label_selector=None, **_kwargs):
        self.selectors.append((plural, label_selector))
        items = [copy.deepcopy(obj) for (kind, space, _), obj in
                 sorted(self.objects.items())
                 if kind == plural and namespace in (None, space)
                 and matches((obj['metadata'].get('labels') or {}),
                             label_selector)]
        return {'items': items, 'metadata': {
            'resourceVersion': str(next(self._version))}}

    def serve(self, verb, plural, namespace, name, apply):
        """Run one request: the hooks around ``apply()``."""
        self.requests[(verb, plural)] = self.requests.get(
            (verb, plural), 0) + 1
        if (verb, plural, namespace) in self.denied:
            raise _error(403, 'Forbidden', f'{verb} {plural} denied')
        hooks = [hook for hook in self.hooks if hook.fits(verb, plural, name)]
        lose = False
        for hook in hooks:
            hook.times -= 1
            lose = lose or hook.lose
            if hook.when == 'before' and hook.action:
                hook.action()
        with self._lock:
            result = apply()
        for hook in hooks:
            if hook.when == 'after' and hook.action:
                hook.action()
        if lose:
            raise urllib3.exceptions.ReadTimeoutError(
                None, f'/{plural}/{name}', 'Read timed out (fake: the '
                'write was applied, its answer lost)')
        return result


class _Custom:
    """``CustomObjectsApi`` of :class:`FakeKube`."""

    def __init__(self, kube):
        self.kube = kube

    def create_namespaced_custom_object(self, group, version, namespace,
                                        plural, body, **_kwargs):
        return self.kube.serve('create', plural, namespace,
                               body['metadata']['name'],
                               lambda: self.kube._create(plural, namespace,
                                                         body))

    def get_namespaced_custom_object(self, group, version, namespace, plural,
                                     name, **_kwargs):
        return self.kube.serve('get', plural, namespace, name, lambda: (
            copy.deepcopy(self.kube._current(plural, namespace, name))))

    def patch_namespaced_custom_object(self, group, version, namespace,
                                       plural, name, body, **_kwargs):
        return self.kube.serve('patch', plural, namespace, name, lambda: (
            self.kube._patch(plural, namespace, name, body)))

    def replace_namespaced_custom_object(self, group, version, namespace,
                                         plural, name, body, **_kwargs):
        return self.kube.serve('replace', plural, namespace, name, lambda: (
            self.kube._replace(plural, namespace, name, body)))

    def delete_namespaced_custom_object(self, group, version, namespace,
                                        plural, name, body=None, **_kwargs):
        return self.kube.serve('delete', plural, namespace, name, lambda: (
            self.kube._delete(plural, namespace, name, body)))

    def list_namespaced_custom_object(self, group, version, namespace,
                                      plural, **kwargs):
        return self.kube.serve('list', plural, namespace, None, lambda: (
            self.kube._list(plural, namespace, **kwargs)))

    def list_cluster_custom_object(self, group, version, plural, **kwargs):
        return self.kube.serve('list', plural, None, None, lambda: (
            self.kube._list(plural, None, **kwargs)))


def _typed(obj):
    """What the typed client returns for a Secret or a ConfigMap:
    attributes, not keys (snake case, as the client names them)."""
    metadata = dict(obj['metadata'])
    metadata.setdefault('labels', None)
    metadata.setdefault('annotations', None)
    metadata.update(resource_version=metadata.get('resourceVersion'),
                    creation_timestamp=metadata.get('creationTimestamp'))
    return types.SimpleNamespace(metadata=types.SimpleNamespace(**metadata),
                                 data=obj.get('data'))


class _Core:
    """The part of ``CoreV1Api`` the store and the controller call."""

    def __init__(self, kube):
        self.kube = kube

    def create_namespaced_secret(self, namespace, body, **_kwargs):
        return self.kube.serve('create', 'secrets', namespace,
                               body['metadata']['name'],
                               lambda: self.kube._create('secrets', namespace,
                                                         body))

    def replace_namespaced_secret(self, name, namespace, body, **_kwargs):
        return self.kube.serve('replace', 'secrets', namespace, name, lambda: (
            self.kube._replace('secrets', namespace, name, body)))

    def read_namespaced_secret(self, name, namespace, **_kwargs):
        return self.kube.serve('get', 'secrets', namespace, name, lambda: (
            _typed(self.kube._current('secrets', namespace, name))))

    def delete_namespaced_secret(self, name, namespace, body=None,
                                 **_kwargs):
        return self.kube.serve('delete', 'secrets', namespace, name, lambda: (
            self.kube._delete('secrets', namespace, name, body)))

    def list_namespaced_config_map(self, namespace, label_selector=None,
                                   **_kwargs):
        return self.kube.serve('list', 'configmaps', namespace, None, lambda: (
            types.SimpleNamespace(items=[_typed(obj) for obj in (
                self.kube._list('configmaps', namespace,
                                label_selector)['items'])])))

    def read_namespaced_config_map(self, name, namespace, **_kwargs):
        return self.kube.serve('get', 'configmaps', namespace, name, lambda: (
            _typed(self.kube._current('configmaps', namespace, name))))

    def delete_namespaced_config_map(self, name, namespace, **_kwargs):
        return self.kube.serve('delete', 'configmaps', namespace, name,
                               lambda: self.kube._delete(
                                   'configmaps', namespace, name, None))

    def create_namespaced_event(self, namespace, body, **_kwargs):
        body = copy.deepcopy(body)
        body.setdefault('metadata', {}).setdefault(
            'name', f'event-{uuid.uuid4().hex[:10]}')
        return self.kube.serve('create', 'events', namespace,
                               body['metadata']['name'],
                               lambda: self.kube._create('events', namespace,
                                                         body))


def conf_for(namespace='vmetal-system', **options):
    """A fresh ``ConfigOpts`` with the store's groups, retries fast."""
    conf = cfg.ConfigOpts()
    kube_conf.register_opts(conf)
    vmetal_conf.register_opts(conf)
    conf([], project='vmetal-test')
    settings = {'api_url': 'https://fake.invalid', 'namespace': namespace,
                'retry_backoff': 0.0, 'retry_backoff_max': 0.0}
    settings.update(options)
    for key, value in settings.items():
        conf.set_override(key, value, group='vmetal_kubernetes')
    return conf


def api_on(kube, conf):
    """A real :class:`~vmetal_ironic.store.kubernetes.kube_client.Api` whose typed
    APIs are ``kube``'s."""
    api = kube_client.Api(conf.vmetal_kubernetes,
                          configuration=k8s_client.Configuration())
    api.custom = kube.custom
    api.core = kube.core
    return api
