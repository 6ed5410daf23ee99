"""One namespaced kind of the store's objects, with the answers the store
relies on turned into values: 404 on a read is ``None``, 409 on a create
is ``None`` (the name is taken), a delete is of exactly the object read
(UID precondition) and idempotent, a list is read page by page."""

from vmetal_ironic.store.kubernetes import kube_client

MERGE_PATCH = 'application/merge-patch+json'
PAGE = 500


class Collection:
    """The objects of ``api`` (group, version, plural) named ``kind`` in
    one namespace.

    :param api: a :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`.
    """

    def __init__(self, api, resource, kind, namespace):
        self.api = api
        self.group, self.version, self.plural = resource
        self.kind = kind
        self.namespace = namespace

    def what(self, name):
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

    def position(self, selector):
        """The collection's current resourceVersion (a list of one item)."""
        page = self.api.call(
            f'list {self.plural}.{self.group} {self.namespace} '
            f'-l {selector} (position)',
            self.api.custom.list_namespaced_custom_object,
            *self._args(), label_selector=selector, limit=1)
        return (page.get('metadata') or {}).get('resourceVersion') or '0'

    def list(self, selector, cached=False, limit=PAGE, slim=False):
        """``(revision, items)`` of every object matching ``selector``.

        :param cached: read the API server's watch cache (possibly a moment
            old, but without reading etcd): for hints only.
        :param limit: objects per page (pages after the first come from the
            first one's snapshot, so its resourceVersion is the list's).
        :param slim: drop each object's ``metadata.managedFields`` as its
            page arrives (bookkeeping of the API server's, often the
            largest part of a small object): for lists kept in memory
            whole, such as a reconcile pass's.
        """
        items, token, revision = [], None, None
        while True:
            kwargs = {'label_selector': selector}
            if cached:
                kwargs['resource_version'] = '0'
            else:
                kwargs['limit'] = limit
            if token:
                kwargs['_continue'] = token
            page = self.api.call(
                f'list {self.plural}.{self.group} {self.namespace} '
                f'-l {selector}',
                self.api.custom.list_namespaced_custom_object,
                *self._args(), **kwargs)
            found = page.get('items') or []
            if slim:
                for item in found:
                    (item.get('metadata') or {}).pop('managedFields', None)
            items.extend(found)
            metadata = page.get('metadata') or {}
            revision = revision or metadata.get('resourceVersion')
            token = metadata.get('continue')
            if not token:
                return revision or '0', items
