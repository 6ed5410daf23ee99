"""Following one label-selected collection: a watch from a list's
``resourceVersion`` with bookmarks, its failures turned into the store's
exceptions (shared by the reservations and the inspection leases)."""

from kubernetes import watch as k8s_watch
from kubernetes.client import exceptions as k8s_exceptions

from vmetal_ironic import exception
from vmetal_ironic.store.kubernetes import kube_client


def watch(api, resource, namespace, selector, revision, timeout,
          connect_timeout, what):
    """Events after ``revision``, for at most ``timeout`` seconds.

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
