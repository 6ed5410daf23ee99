"""Which address an owner holds: one small ``AddressOwner`` per owner.

Named ``<scope>.<owner hash>``, it names the owner's AddressClaim. Looking
an owner up is therefore one GET by name, never a list (a label-selected
list is served from etcd by reading every claim of the namespace: at
10,000 hosts, one second per allocation). The record is also what makes
"one owner, one address" hold under races: it is created once (409
AlreadyExists: someone else is binding the owner) and changed only by
compare-and-swap on its resourceVersion.

The record is written *before* the claim it names (see
:mod:`.allocation`): it carries everything the claim is made of (address,
pool, MAC, host, purpose), who is binding it (``binder``, a token of one
allocation) and since when (``boundAt``). Against the claim it names, a
record is (:func:`standing`):

* ``held``: the claim exists and is the owner's;
* ``pending``: the claim does not exist (yet): its binder is about to
  create it, or stopped before it did;
* ``lost``: the claim is someone else's; its binder moves the record to
  another address.
"""

import calendar
import time

from vmetal_ironic.store import kube_client
from vmetal_ironic.store import kube_names as names
from vmetal_ironic.store.kubernetes import collection

HELD = 'held'
PENDING = 'pending'
LOST = 'lost'

TIME_FORMAT = '%Y-%m-%dT%H:%M:%SZ'
# What of a claim its owner's record carries, so that the claim can be
# made from the record alone.
BINDING_KEYS = ('address', 'purpose', 'pool', 'mac', 'host')


def record_name(scope, owner):
    """``default.<40 hex>``: the owner's hash, as labels and names allow
    neither its length nor its characters."""
    return f'{scope}.{owner.label}'


def now_text(now=None):
    """``now`` (seconds since the epoch) as Kubernetes writes times."""
    return time.strftime(TIME_FORMAT, time.gmtime(
        time.time() if now is None else now))


def parse_time(text):
    """Seconds since the epoch of a Kubernetes time, or ``None``."""
    try:
        return calendar.timegm(time.strptime(text, TIME_FORMAT))
    except (TypeError, ValueError):
        return None


def binding(owner, claim_spec, binder, now=None):
    """The record's ``spec`` naming the claim made of ``claim_spec``.

    :param claim_spec: the ``spec`` of the claim (address, purpose, pool,
        mac, host).
    :param binder: the token of the allocation writing it, ``None`` when
        the claim exists already.
    """
    spec = {'owner': str(owner),
            'claim': names.claim_name(claim_spec['scope'],
                                      claim_spec['address']),
            'boundAt': now_text(now)}
    if binder:
        spec['binder'] = binder
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


def standing(record, claim):
    """:data:`HELD`, :data:`PENDING` or :data:`LOST` (pure).

    :param record: an owner record.
    :param claim: the claim it names as read, ``None`` when absent.
    """
    if claim is None:
        return PENDING
    owner = (record.get('spec') or {}).get('owner')
    return HELD if (claim.get('spec') or {}).get('owner') == owner else LOST


def bound_since(record):
    """When the record was last bound (``boundAt``; the creation time of
    records written before it existed), or ``None``."""
    spec = record.get('spec') or {}
    return parse_time(spec.get('boundAt') or (
        record.get('metadata') or {}).get('creationTimestamp'))


def settled(record, now, grace):
    """Whether every create its binders may have sent has been answered
    (``grace`` seconds passed since the last bind): the record may then be
    moved by anyone."""
    since = bound_since(record)
    return since is None or now - since > grace


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
        change = dict.fromkeys((*BINDING_KEYS, 'claimUID', 'binder',
                                'completer'))
        change.update(spec)
        return self._swap(record, change)

    def touch(self, record, token):
        """Mark ``record`` (as read) as being completed by ``token``, by
        compare-and-swap: its binder's next compare-and-swap fails.

        :returns: the record written, or ``None`` when it moved or went.
        """
        return self._swap(record, {'completer': token})

    def _swap(self, record, spec_change):
        """Merge ``spec_change`` into ``record`` (as read) by
        compare-and-swap; ``None`` when it moved or went since."""
        try:
            return self.records.patch(record['metadata']['name'], {
                'metadata': {'resourceVersion':
                             record['metadata']['resourceVersion']},
                'spec': spec_change})
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
        ``slim``: see :meth:`~.collection.Collection.list`)."""
        return self.records.list(
            f'{names.LABEL_COMPONENT}={names.COMPONENT_ADDRESS_OWNER},'
            f'{names.LABEL_SCOPE}={self.scope}', slim=slim)[1]
