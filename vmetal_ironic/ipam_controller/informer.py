"""List, then watch, one kind of object, and hand every change on.

The list is read page by page and delivered whole (:meth:`Handler.synced`
with every object: what is not in it was deleted while nobody watched);
the watch then starts from the list's resourceVersion, with bookmarks, in
windows of :data:`WINDOW` seconds. An expired position (410) lists again;
any other failure is reported once while it lasts and retried after
``retry`` seconds, listing again, so that no change is lost across it.
"""

from kubernetes import watch as k8s_watch
from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic.store.kubernetes import resources

LOG = log.getLogger(__name__)

WINDOW = 60     # seconds of one watch request
PAGE = resources.PAGE


class Informer:
    """Feeds ``handler`` with the objects of one list call.

    :param api: a :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`.
    :param what: a short name for messages, e.g. ``BareMetalHosts``.
    :param list_func: the typed client's list call (custom objects).
    :param args: its positional arguments (group, version, [namespace,]
        plural).
    :param handler: ``synced(objects)``, ``changed(kind, obj)``
        (``ADDED``/``MODIFIED``/``DELETED``).
    :param selector: a label selector, or ``None``.
    :param digest: ``obj -> what synced receives for it``, applied page
        by page as the list is read (the whole objects of a long list are
        never held at once); ``None``: the objects themselves.
    """

    def __init__(self, api, what, list_func, args, handler, selector=None,
                 retry=5.0, digest=None):
        self.api = api
        self.what = what
        self.list_func = list_func
        self.args = args
        self.handler = handler
        self.selector = selector
        self.retry = retry
        self.digest = digest
        self.events = 0
        self.relists = 0
        self.failures = 0
        # Called at each failure (the controller's metric).
        self.on_failure = lambda: None

    def _kwargs(self):
        return {'label_selector': self.selector} if self.selector else {}

    def relist(self):
        """Deliver every object; :returns: the list's resourceVersion."""
        items, token, revision = [], None, None
        while True:
            kwargs = dict(self._kwargs(), limit=PAGE)
            if token:
                kwargs['_continue'] = token
            page = self.api.call(f'list {self.what}', self.list_func,
                                 *self.args, **kwargs)
            for item in page.get('items') or []:
                (item.get('metadata') or {}).pop('managedFields', None)
                items.append(item if self.digest is None
                             else self.digest(item))
            metadata = page.get('metadata') or {}
            revision = revision or metadata.get('resourceVersion')
            token = metadata.get('continue')
            if not token:
                break
        self.relists += 1
        self.handler.synced(items)
        return revision or '0'

    def _stream(self, revision, stop):
        watcher = k8s_watch.Watch()
        try:
            for event in watcher.stream(
                    self.list_func, *self.args, resource_version=revision,
                    allow_watch_bookmarks=True, timeout_seconds=WINDOW,
                    _request_timeout=(self.api.group.connect_timeout,
                                      WINDOW + 5), **self._kwargs()):
                if stop.is_set():
                    return revision
                kind, obj = event['type'], event['object']
                if kind == 'ERROR':
                    if (obj or {}).get('code') == 410:
                        return None
                    raise exception.StoreUnavailable(f'{self.what}: {obj}')
                revision = ((obj.get('metadata') or {}).get('resourceVersion')
                            or revision)
                if kind in ('ADDED', 'MODIFIED', 'DELETED'):
                    self.events += 1
                    (obj.get('metadata') or {}).pop('managedFields', None)
                    self.handler.changed(kind, obj)
        finally:
            watcher.stop()
        return revision

    def run(self, stop):
        """List and watch until ``stop`` is set; never raises."""
        revision, broken = None, False
        while not stop.is_set():
            try:
                if revision is None:
                    revision = self.relist()
                revision = self._stream(revision, stop)
                broken = False
            except Exception as exc:
                revision = None
                if stop.is_set():
                    return
                self.failures += 1
                self.on_failure()
                if not broken:
                    LOG.warning('Watching %(what)s failed (%(err)s); '
                                'listing again every %(retry)s s until it '
                                'works', {'what': self.what, 'err': exc,
                                          'retry': self.retry})
                broken = True
                stop.wait(self.retry)
