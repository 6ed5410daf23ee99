"""Which address an owner holds: one small ``AddressOwner`` per owner.

Named ``<scope>.<owner hash>``, the record binds its owner to one
``AddressClaim`` by the claim's UID (``spec.claimUID``). Looking an owner
up is therefore one GET by name, never a list (a label-selected list is
served from etcd by reading every claim of the namespace: at 10,000
hosts, one second per allocation). The record is what makes "one owner,
one address" hold under races: it is created once (409 AlreadyExists:
the owner is bound already) and changed only by compare-and-swap on its
resourceVersion.

The claim always exists before a record binds it (:mod:`.allocation`).
An owner holds the claim its record binds while that claim exists with
that UID and names the owner (:func:`holds`); a record whose claim went
(a release stopped between its two deletes) holds nothing, and the next
bind moves it. UIDs are never reused, so such a record can never hold
again by itself.
"""

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.store.kubernetes import kube_client
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import resources

# What of a claim its owner's record repeats, for people reading it
# (``kubectl get vao`` prints the address); the UID is what binds.
BINDING_KEYS = ('address', 'purpose', 'pool', 'mac', 'host')


def record_name(scope, owner):
    """``default.<40 hex>``: the owner's hash, as labels and names allow
    neither its length nor its characters."""
    return f'{scope}.{owner.label}'


def binding(owner, claim):
    """The record's ``spec`` binding ``owner`` to ``claim`` (an existing
    claim, as read or as its create answered)."""
    claim_spec = claim.get('spec') or {}
    spec = {'owner': str(owner), 'claim': claim['metadata']['name'],
            'claimUID': claim['metadata']['uid']}
    for key in BINDING_KEYS:
        if claim_spec.get(key):
            spec[key] = claim_spec[key]
    return spec


def record_body(namespace, scope, owner, spec):
    """The ``AddressOwner`` of ``owner`` with ``spec``
    (see :func:`binding`)."""
    labels = dict(names.MANAGED_BY)
    labels.update({names.LABEL_COMPONENT: names.COMPONENT_ADDRESS_OWNER,
                   names.LABEL_SCOPE: scope,
                   names.LABEL_OWNER_KIND: owner.kind.lower()})
    return {'apiVersion': f'{names.API_GROUP}/{names.API_VERSION}',
            'kind': names.OWNER_KIND,
            'metadata': {'name': record_name(scope, owner),
                         'namespace': namespace, 'labels': labels},
            'spec': spec}


def binds(record, claim):
    """Whether ``record`` is bound to this very ``claim`` (pure).

    Records written before ``claimUID`` existed name their claim only:
    the name and the owner then stand for the UID (the controller's
    collect step adds the UID to them).
    """
    spec = (record or {}).get('spec') or {}
    metadata = (claim or {}).get('metadata') or {}
    if spec.get('claimUID'):
        return spec['claimUID'] == metadata.get('uid')
    return (spec.get('claim') == metadata.get('name') and spec.get('owner')
            == ((claim or {}).get('spec') or {}).get('owner'))


def holds(record, claim):
    """Whether the owner of ``record`` holds ``claim`` (pure): the record
    binds it and the claim names the owner (a claim handed to another
    owner keeps its UID)."""
    if record is None or claim is None:
        return False
    owner = (record.get('spec') or {}).get('owner')
    return binds(record, claim) and (claim.get('spec') or {}).get(
        'owner') == owner


def owner_of(claim):
    """The :class:`~vmetal_ironic.owner.Owner` a claim names, or ``None``
    when it names none that parses."""
    try:
        return owner_mod.parse(((claim or {}).get('spec') or {}).get('owner'))
    except exception.InvalidProperty:
        return None


def key_of(obj):
    """``(claim UID, owner)`` a record binds, or a claim stands for: the
    pairs a listing of both kinds is matched on (a record of the old
    form, without a UID, matches nothing and is judged one by one)."""
    spec = (obj or {}).get('spec') or {}
    if obj.get('kind') == names.OWNER_KIND or 'claim' in spec:
        return spec.get('claimUID'), spec.get('owner')
    return (obj.get('metadata') or {}).get('uid'), spec.get('owner')


class Owners:
    """The owner records of one scope.

    :param api: a :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`.
    :param namespace: where they live (the claims' namespace).
    :param scope: ``[vmetal]address_scope``.
    """

    def __init__(self, api, namespace, scope):
        self.namespace = namespace
        self.scope = scope
        self.records = resources.Collection(api, names.OWNER_API,
                                             names.OWNER_KIND, namespace)

    def get(self, owner):
        """:returns: the owner's record, or ``None``."""
        return self.records.get(record_name(self.scope, owner))

    def create(self, owner, spec):
        """Create the owner's record.

        :returns: the record, or ``None`` when the owner has one already.
        """
        return self.records.create(record_body(self.namespace, self.scope,
                                               owner, spec))

    def rebind(self, record, spec):
        """Replace the spec of ``record`` (as read) by compare-and-swap.

        :returns: the record written, or ``None`` when it moved or went
            since it was read (read it again).
        """
        # A merge patch keeps the keys it does not name: the ones the new
        # binding lacks are removed (null), so no field of the old claim
        # outlives it.
        change = dict.fromkeys((*BINDING_KEYS, 'claimUID'))
        change.update(spec)
        try:
            return self.records.patch(record['metadata']['name'], {
                'metadata': {'resourceVersion':
                             record['metadata']['resourceVersion']},
                'spec': change})
        except kube_client.ApiError as exc:
            if exc.status in (404, 409):
                return None
            raise

    def delete(self, record):
        """Delete exactly this record as read (UID and resourceVersion
        preconditions).

        :returns: ``True`` if this call deleted it, ``False`` when it had
            changed or was gone.
        """
        return self.records.delete(record, exact=True)

    def all(self, slim=False):
        """Every record of the scope, page by page (the reconciler;
        ``slim``: see :meth:`~.resources.Collection.list`)."""
        return self.records.list(
            f'{names.LABEL_COMPONENT}={names.COMPONENT_ADDRESS_OWNER},'
            f'{names.LABEL_SCOPE}={self.scope}', slim=slim)[1]
