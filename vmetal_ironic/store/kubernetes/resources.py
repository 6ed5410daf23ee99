"""How the store reads and writes the API server's resources, in one place.

* :class:`Collection`: one kind of object, in one namespace or cluster-wide
  (``namespace=None``: the lists of a namespaced kind across namespaces, or
  of a cluster-scoped kind), with the answers the store relies on turned
  into values: 404 on a read is ``None``, 409 on a create is ``None`` (the
  name is taken), a delete is of exactly the object read (UID
  precondition) and idempotent, a list is read page by page;
* :func:`compare_and_swap`: the one retry loop for objects other
  processes write too;
* :func:`watch`: following one label-selected collection from a list's
  ``resourceVersion``.
"""

import random
import time

from kubernetes import watch as k8s_watch
from kubernetes.client import exceptions as k8s_exceptions

from vmetal_ironic import exception
from vmetal_ironic.store.kubernetes import kube_client

MERGE_PATCH = 'application/merge-patch+json'
PAGE = 500
# What the API server answers when the object moved (409 Conflict) or went
# away (404) between the read and the write: read again and decide anew.
RETRY_STATUSES = (404, 409)


# -- one kind of object -------------------------------------------------------

class Collection:
    """The objects of ``resource`` (group, version, plural) named ``kind``.

    :param api: a :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`.
    :param namespace: the namespace, or ``None``: lists read every
        namespace (or a cluster-scoped kind); the verbs on one object need a
        namespace (:meth:`in_namespace`).
    :param unserved_is_error: a 404 that names no object (the resource is
        not served: its CRD missing, or just created) raises
        :class:`~vmetal_ironic.exception.StoreUnavailable` on a read,
        instead of meaning "no such object".
    """

    def __init__(self, api, resource, kind, namespace=None,
                 unserved_is_error=False):
        self.api = api
        self.resource = tuple(resource)
        self.group, self.version, self.plural = resource
        self.kind = kind
        self.namespace = namespace
        self.unserved_is_error = unserved_is_error

    def in_namespace(self, namespace):
        """The same kind in ``namespace`` (one object's verbs)."""
        return Collection(self.api, self.resource, self.kind, namespace,
                          self.unserved_is_error)

    def what(self, name):
        if self.namespace is None:
            return f'{self.kind} {name}'
        return f'{self.kind} {self.namespace}/{name}'

    def _args(self):
        return self.group, self.version, self.namespace, self.plural

    def _call(self, verb, name, method, *args, refused=(), **kwargs):
        """One request about the object ``name`` of this collection.

        :param refused: HTTP statuses that are an answer here (absent, name
            taken), not an error.
        :returns: ``(True, response)``, or ``(False, None)`` when the API
            server answered with a status in ``refused``.
        """
        try:
            return True, self.api.call(f'{verb} {self.what(name)}', method,
                                       *self._args(), *args, **kwargs)
        except kube_client.ApiError as exc:
            if (exc.status == 404 and self.unserved_is_error
                    and not exc.details.get('name')):
                # The resource is not served: an API server that has just
                # started serves its CRDs a moment later (or the CRD is
                # missing). Not "the object is gone".
                raise exception.StoreUnavailable(
                    f'{exc} ({self.plural}.{self.group} are not served)',
                    retry_after=1.0) from None
            if exc.status in refused:
                return False, None
            raise

    def get(self, name):
        """:returns: the object, or ``None`` when there is none."""
        _done, found = self._call(
            'get', name, self.api.custom.get_namespaced_custom_object, name,
            refused=(404,))
        return found

    def create(self, body):
        """:returns: the created object, or ``None`` if the name is taken."""
        _done, created = self._call(
            'create', body['metadata']['name'],
            self.api.custom.create_namespaced_custom_object, body,
            refused=(409,))
        return created

    def patch(self, name, body):
        """Merge patch; a ``metadata.resourceVersion`` in ``body`` makes it
        a compare-and-swap (409 when the object moved)."""
        return self.api.call(
            f'update {self.what(name)}',
            self.api.custom.patch_namespaced_custom_object,
            *self._args(), name, body, _content_type=MERGE_PATCH)

    def swap(self, name, version, body):
        """One compare-and-swap: merge ``body`` into ``name`` only as it
        was at resourceVersion ``version``.

        :returns: the object written, or ``None`` when it moved or went
            since (read it again).
        """
        body = dict(body, metadata=dict(body.get('metadata') or {},
                                        resourceVersion=version))
        try:
            return self.patch(name, body)
        except kube_client.ApiError as exc:
            if exc.status in RETRY_STATUSES:
                return None
            raise

    def replace(self, name, body):
        return self.api.call(
            f'replace {self.what(name)}',
            self.api.custom.replace_namespaced_custom_object,
            *self._args(), name, body)

    def delete(self, obj, exact=False):
        """Delete exactly ``obj`` (its UID); idempotent.

        :param exact: only as read (its resourceVersion too): not if it
            changed since.
        :returns: ``True`` if this call deleted it.
        """
        metadata = obj['metadata']
        preconditions = {'uid': metadata['uid']}
        if exact:
            preconditions['resourceVersion'] = metadata['resourceVersion']
        # 404: gone already; 409: the name was taken anew by someone else
        # since, which is theirs to keep (or, exact, it changed).
        deleted, _ = self._call(
            'delete', metadata['name'],
            self.api.custom.delete_namespaced_custom_object, metadata['name'],
            body={'preconditions': preconditions}, refused=(404, 409))
        return deleted

    def delete_version(self, name, version):
        """Delete ``name`` only as it was at ``version`` (resourceVersion
        precondition): a writer that changed it since keeps it.

        :returns: ``True`` if this call deleted it; ``False`` when it is
            gone already or moved on.
        """
        deleted, _ = self._call(
            'delete', name, self.api.custom.delete_namespaced_custom_object,
            name, body={'preconditions': {'resourceVersion': version}},
            refused=(404, 409))
        return deleted

    def delete_name(self, name):
        """Delete whatever object has this name; idempotent.

        :returns: ``True`` if this call deleted one.
        """
        deleted, _ = self._call(
            'delete', name, self.api.custom.delete_namespaced_custom_object,
            name, refused=(404,))
        return deleted

    # -- lists --------------------------------------------------------------

    def _list_page(self, what, **kwargs):
        if self.namespace is None:
            return self.api.call(
                f'list {self.plural}.{self.group} {what}'.rstrip(),
                self.api.custom.list_cluster_custom_object,
                self.group, self.version, self.plural, **kwargs)
        return self.api.call(
            f'list {self.plural}.{self.group} {self.namespace} {what}'
            .rstrip(), self.api.custom.list_namespaced_custom_object,
            *self._args(), **kwargs)

    def position(self, selector):
        """The collection's current resourceVersion (a list of one item)."""
        page = self._list_page(f'-l {selector} (position)',
                               label_selector=selector, limit=1)
        return (page.get('metadata') or {}).get('resourceVersion') or '0'

    def pages(self, selector=None, cached=False, limit=PAGE, slim=False):
        """The objects matching ``selector`` page by page, so that a
        caller keeping only a digest of each never holds the whole list.

        :param cached: read the API server's watch cache (possibly a moment
            old, but without reading etcd): for hints only.
        :param limit: objects per page (pages after the first come from the
            first one's snapshot, so its resourceVersion is the list's).
        :param slim: drop each object's ``metadata.managedFields`` as its
            page arrives (bookkeeping of the API server's, often the
            largest part of a small object): for lists kept in memory
            whole, such as a reconcile pass's.
        :yields: ``(revision, items)`` per page; the revision is the
            first page's.
        """
        token, revision = None, None
        while True:
            kwargs = {}
            if selector:
                kwargs['label_selector'] = selector
            if cached:
                kwargs['resource_version'] = '0'
            else:
                kwargs['limit'] = limit
            if token:
                kwargs['_continue'] = token
            page = self._list_page(f'-l {selector}' if selector else '',
                                   **kwargs)
            found = page.get('items') or []
            if slim:
                for item in found:
                    (item.get('metadata') or {}).pop('managedFields', None)
            metadata = page.get('metadata') or {}
            revision = revision or metadata.get('resourceVersion') or '0'
            yield revision, found
            token = metadata.get('continue')
            if not token:
                return

    def list(self, selector=None, cached=False, limit=PAGE, slim=False,
             unserved=None):
        """``(revision, items)`` of every object matching ``selector``
        (see :meth:`pages`).

        :param unserved: what a resource that is not served (404) lists as
            (an optional source: no objects), or ``None``: an error.
        """
        items, revision = [], '0'
        try:
            for page_revision, found in self.pages(selector, cached, limit,
                                                   slim):
                revision = page_revision
                items.extend(found)
        except kube_client.ApiError as exc:
            if exc.status != 404 or unserved is None:
                raise
            return '0', list(unserved)
        return revision, items


# -- compare-and-swap -------------------------------------------------------

def conflict_pause(attempt):
    """Jittered, growing pause before attempt ``attempt`` (1-based)."""
    time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6))))  # noqa: S311


def compare_and_swap(read, build, write, what, attempts):
    """Read, build a change, write it conditionally; retry on a conflict.

    Every update of an object another process may write too (a
    BareMetalHost's annotations and spec) is: read it, decide the change
    from what was read, write the change carrying the ``resourceVersion``
    read. The API server applies it only if nobody wrote in between and
    answers 409 otherwise; then the loop reads again, a bounded number of
    times, pausing a little longer each time with jitter so that losers
    do not come back together.

    :param read: ``() -> current`` (``None`` when the object is absent).
    :param build: ``current -> change``; ``None`` means nothing to write.
    :param write: ``(current, change) -> result``; must make the write
        conditional on what ``current`` was (its resourceVersion).
    :param what: the object, for the error, e.g. ``BareMetalHost ns/a``.
    :param attempts: the bound, ``[vmetal_kubernetes]max_conflict_retries``.
    :returns: ``write``'s result, or ``None`` when nothing was written.
    :raises vmetal_ironic.exception.StoreConflict: every attempt lost.
    """
    for attempt in range(attempts):
        if attempt:
            conflict_pause(attempt)
        current = read()
        change = build(current)
        if change is None:
            return None
        try:
            return write(current, change)
        except kube_client.ApiError as exc:
            if exc.status in RETRY_STATUSES:
                continue
            raise
    raise exception.StoreConflict(
        f'{what}: update lost to concurrent writers {attempts} times; '
        'try again')


# -- following a collection -------------------------------------------------

def watch(api, resource, namespace, selector, revision, timeout,
          connect_timeout, what):
    """Events after ``revision``, for at most ``timeout`` seconds, with
    bookmarks; the watch's failures turned into the store's exceptions
    (shared by the reservations and the inspection leases).

    :param resource: ``(group, version, plural)``.
    :param what: names the collection in messages (``reservations``).
    :yields: ``(type, object, resourceVersion)``; type is ``ADDED``,
        ``MODIFIED``, ``DELETED`` or ``BOOKMARK`` (only a new position).
    :raises vmetal_ironic.exception.RevisionExpired: the position left the
        API server's window (410): list again.
    :raises vmetal_ironic.store.kubernetes.kube_client.Forbidden: 401/403.
    :raises vmetal_ironic.exception.StoreUnavailable: the watch failed.
    """
    group, version, plural = resource
    seconds = max(1, int(timeout))
    watcher = k8s_watch.Watch()
    kwargs = {'label_selector': selector, 'timeout_seconds': seconds,
              'allow_watch_bookmarks': True,
              '_request_timeout': (connect_timeout, seconds + 5)}
    if revision and revision != '0':
        kwargs['resource_version'] = revision
    try:
        for event in watcher.stream(
                api.custom.list_namespaced_custom_object,
                group, version, namespace, plural, **kwargs):
            kind, obj = event['type'], event['object']
            if kind == 'ERROR':
                if (obj or {}).get('code') == 410:
                    raise exception.RevisionExpired(
                        f'{what} watch from {revision}: 410 Gone')
                raise exception.StoreUnavailable(f'{what} watch: {obj}')
            position = ((obj or {}).get('metadata') or {}).get(
                'resourceVersion')
            yield kind, obj, position
    except k8s_exceptions.ApiException as exc:
        if exc.status == 410:
            raise exception.RevisionExpired(
                f'{what} watch from {revision}: 410 Gone') from None
        if exc.status in (401, 403):
            raise kube_client.Forbidden(
                f'Kubernetes API {api.host} refused to watch '
                f'{plural}.{group} in {namespace}: {exc.status}') from None
        raise exception.StoreUnavailable(
            f'{what} watch failed: {exc.status} {exc.reason}') from None
    except (exception.VmetalError, GeneratorExit):
        raise
    except Exception as exc:
        raise exception.StoreUnavailable(
            f'{what} watch failed: {exc}') from None
    finally:
        watcher.stop()
