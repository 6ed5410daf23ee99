"""Which address an owner holds: one small ``AddressOwner`` per owner.

Named ``<scope>.<owner hash>``, it points at the owner's AddressClaim by
name and UID. Looking an owner up is therefore one GET by name, never a
list (a label-selected list is served from etcd by reading every claim of
the namespace: at 10,000 hosts, one second per allocation). The record is
also what makes "one owner, one address" hold under races: it is created
once (409 AlreadyExists: someone bound the owner first) and changed only
by compare-and-swap on its resourceVersion, so of two writers binding one
owner to two addresses exactly one wins, and the loser gives its claim
back.

A record whose claim is gone or is another object (a crash between the
two deletes of a release) is stale: lookups ignore it and the next bind
replaces it by compare-and-swap.
"""

from vmetal_ironic.store import kube_client
from vmetal_ironic.store import kube_names as names
from vmetal_ironic.store.kubernetes import collection


def record_name(scope, owner):
    """``default.<40 hex>``: the owner's hash, as labels and names allow
    neither its length nor its characters."""
    return f'{scope}.{owner.label}'


def record_body(namespace, scope, owner, claim):
    """The ``AddressOwner`` binding ``owner`` to ``claim``."""
    labels = dict(names.MANAGED_BY)
    labels.update({names.LABEL_COMPONENT: names.COMPONENT_ADDRESS_OWNER,
                   names.LABEL_SCOPE: scope,
                   names.LABEL_OWNER_KIND: owner.kind.lower()})
    return {'apiVersion': f'{names.API_GROUP}/{names.API_VERSION}',
            'kind': names.OWNER_KIND,
            'metadata': {'name': record_name(scope, owner),
                         'namespace': namespace, 'labels': labels},
            'spec': binding(owner, claim)}


def binding(owner, claim):
    metadata = claim['metadata']
    return {'owner': str(owner), 'claim': metadata['name'],
            'claimUID': metadata['uid'],
            'address': (claim.get('spec') or {}).get('address')}


class Owners:
    """The owner records of one scope.

    :param api: a :class:`~vmetal_ironic.store.kube_client.Api`.
    :param namespace: where they live (the claims' namespace).
    :param scope: ``[vmetal]address_scope``.
    """

    def __init__(self, api, namespace, scope):
        self.namespace = namespace
        self.scope = scope
        self.records = collection.Collection(api, names.OWNER_API,
                                             names.OWNER_KIND, namespace)

    def get(self, owner):
        """:returns: the owner's record, or ``None``."""
        return self.records.get(record_name(self.scope, owner))

    def bind(self, owner, claim, record=None):
        """Point ``owner`` at ``claim``: create the record, or replace the
        binding of ``record`` (as read) by compare-and-swap.

        :returns: ``True`` if this call bound it, ``False`` if someone else
            wrote the record first (read it again).
        """
        if record is None:
            return self.records.create(record_body(
                self.namespace, self.scope, owner, claim)) is not None
        try:
            self.records.patch(record['metadata']['name'], {
                'metadata': {'resourceVersion':
                             record['metadata']['resourceVersion']},
                'spec': binding(owner, claim)})
        except kube_client.ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def delete(self, record):
        """Delete exactly this record (UID precondition); idempotent."""
        self.records.delete(record)

    def all(self):
        """Every record of the scope, page by page (the reconciler)."""
        return self.records.list(
            f'{names.LABEL_COMPONENT}={names.COMPONENT_ADDRESS_OWNER},'
            f'{names.LABEL_SCOPE}={self.scope}')[1]
