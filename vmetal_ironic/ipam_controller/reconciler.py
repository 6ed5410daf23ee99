"""Automatic release: addresses go back once their holder let go of the
host and the host no longer runs with them.

A pass lists the address claims first and the BareMetalHosts after, both
page by page; every claim judged was therefore created before the host
listing, and its host (which must exist before an address is given for
it) is in that listing unless it was deleted. Releasing deletes exactly
the claim listed (UID precondition), so a claim created meanwhile for the
same address is never touched.

The rules (:func:`verdict`, pure):

* a claim held by a host itself (``BareMetalHost/<ns>/<name>``, no
  Machine claimed it) goes when the host is gone;
* a claim held by a Machine (any kind) goes when the host it is used on no
  longer names that Machine in ``spec.consumerRef`` and is not
  provisioned, being provisioned or deprovisioned; or when the host is
  gone;
* a host that is detached or paused keeps its address: its server may be
  running without Metal3 watching. The claim is labelled
  ``vmetal-ironic.io/retain``, and is kept even once the host is gone
  (``vmetal-ipam release`` frees it by hand); the label is taken off again
  once the host is seen neither detached nor paused;
* claims of other owners (``Node/<uuid>``, addresses given by the CLI, the
  gateways and reserved addresses) are not judged here;
* a claim no AddressOwner record binds (its writer stopped between the
  claim's create and the record's bind, or before giving back a claim it
  lost with) is settled by :func:`~vmetal_ironic.store.kubernetes.
  addresses.collect_claim`: bound to its owner when the owner holds
  nothing else, freed when it does. No clock decides it: a writer still
  on its way wins by taking the collector's mark off (see
  :mod:`vmetal_ironic.store.kubernetes.addresses`). A record whose claim is
  gone (a release stopped between its two deletes) holds nothing and is
  deleted exactly as read.

After the releases the pass follows the claims (:mod:`.follower`): a
host a Machine claims whose Machine holds no address yet, or that lacks
the store's outputs, is given them as Ironic would give them at a PXE
boot.

The controller (:mod:`.controller`, one active replica) applies these
rules host by host as events arrive; :meth:`Reconciler.run_once` is a
whole pass on demand (``KubernetesStore.reconcile()``: the CLI, tests,
benchmarks).
"""

import dataclasses

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.ipam_controller import follower as follower_mod
from vmetal_ironic.store.kubernetes import addresses
from vmetal_ironic.store.kubernetes import kube_names as names

LOG = log.getLogger(__name__)

LABEL_RETAIN = names.LABEL_PREFIX + 'retain'
DETACHED = 'baremetalhost.metal3.io/detached'
PAUSED = 'baremetalhost.metal3.io/paused'
# States in which the server may boot or run with the address.
IN_USE_STATES = frozenset({'provisioning', 'provisioned', 'deprovisioning',
                           'externally provisioned'})

KEEP = 'keep'
RELEASE = 'release'
RETAIN = 'retain'
UNRETAIN = 'unretain'


@dataclasses.dataclass(frozen=True)
class HostView:
    """What a pass keeps of one BareMetalHost (not the whole object)."""

    consumer: str | None
    state: str
    detached: bool
    mac: str | None = None
    deleting: bool = False
    outputs_missing: bool = True


def view_of(host):
    metadata = host.get('metadata') or {}
    annotations = metadata.get('annotations') or {}
    ref = (host.get('spec') or {}).get('consumerRef') or {}
    consumer = None
    if ref.get('kind') and ref.get('name'):
        consumer = (f'{ref["kind"]}/'
                    f'{ref.get("namespace") or metadata.get("namespace")}/'
                    f'{ref["name"]}')
    state = (((host.get('status') or {}).get('provisioning') or {})
             .get('state') or '')
    return HostView(consumer, state,
                    DETACHED in annotations or PAUSED in annotations,
                    mac=(host.get('spec') or {}).get('bootMACAddress'),
                    deleting=bool(metadata.get('deletionTimestamp')),
                    outputs_missing=follower_mod.outputs_missing(host))


def verdict(claim, hosts):
    """What to do with one claim.

    :param claim: an ``AddressClaim`` dict.
    :param hosts: ``{"<ns>/<name>": HostView}`` of every host.
    :returns: :data:`KEEP`, :data:`RELEASE`, :data:`RETAIN` (keep, and
        label the claim so it is kept once the host is gone) or
        :data:`UNRETAIN` (keep, and take that label off).
    """
    spec = addresses.spec_of(claim)
    retained = LABEL_RETAIN in ((claim.get('metadata') or {}).get('labels')
                                or {})
    try:
        owner = owner_mod.parse(spec.get('owner'))
    except exception.InvalidProperty:
        return KEEP
    if owner.is_infrastructure or owner.kind == owner_mod.NODE:
        return KEEP
    if owner.kind == owner_mod.BAREMETALHOST:
        where = f'{owner.namespace}/{owner.name}'
    else:
        where = spec.get('host')
        if not where:
            return KEEP
    host = hosts.get(where)
    if host is None:
        return KEEP if retained else RELEASE
    if host.detached:
        return KEEP if retained else RETAIN
    if retained:
        # Seen neither detached nor paused any more: the mark was for
        # then, not for good.
        return UNRETAIN
    if owner.kind == owner_mod.BAREMETALHOST:
        return KEEP
    if host.consumer == str(owner) or host.state in IN_USE_STATES:
        return KEEP
    return RELEASE


def _host_of(claim):
    """``<ns>/<name>`` of the host a claim's address is used on."""
    spec = addresses.spec_of(claim)
    if spec.get('host'):
        return spec['host']
    try:
        holder = owner_mod.parse(spec.get('owner'))
    except exception.InvalidProperty:
        return None
    if holder.kind == owner_mod.BAREMETALHOST:
        return f'{holder.namespace}/{holder.name}'
    return None


def is_unbound(claim, bound):
    """Whether an owner's claim is bound by none of the records listed
    (pure): the collect step looks at it (see
    :func:`~vmetal_ironic.store.kubernetes.addresses.collect_claim`).

    :param bound: the ``(claim UID, owner)`` pairs the owner records bind
        (:func:`~vmetal_ironic.store.kubernetes.addresses.key_of`).
    """
    spec = addresses.spec_of(claim)
    if spec.get('purpose') not in (names.PURPOSE_ALLOCATION,
                                   names.PURPOSE_NETWORK_DATA):
        return False
    return addresses.key_of(claim) not in bound


class Reconciler:
    """The rules applied to a :class:`~vmetal_ironic.store.kubernetes.
    KubernetesStore`: a whole pass (:meth:`run_once`), one host
    (:meth:`settle_host`), the garbage (:meth:`collect`). It starts no
    thread: the controller (:mod:`.controller`) calls it."""

    def __init__(self, store):
        self.store = store
        self.follower = follower_mod.Follower(store)
        self.passes = 0
        self.failures = 0
        # Claims whose judgement raised, over all passes.
        self.claim_failures = 0
        # Claimed hosts given their network / rejected, over all passes.
        self.claims_followed = 0
        self.claims_rejected = 0
        self.last_follow = follower_mod.FollowReport()

    def hosts(self):
        """``{"<ns>/<name>": HostView}``, listed page by page so memory
        holds one page of full objects at a time."""
        views = {}
        for _revision, page in self.store.outputs.hosts.pages():
            for host in page:
                metadata = host.get('metadata') or {}
                views[f'{metadata.get("namespace")}/{metadata.get("name")}'] = (
                    view_of(host))
        return views

    def _retain(self, claim, retain=True):
        """Put the retain mark on ``claim``, or take it off."""
        name = claim['metadata']['name']
        mark = 'detached' if retain else None
        try:
            self.store.addresses.claims.patch(
                name, {'metadata': {'labels': {LABEL_RETAIN: mark}}})
        except exception.VmetalError as exc:
            LOG.warning('Cannot mark %(name)s retained: %(err)s',
                        {'name': name, 'err': exc})

    def _listed(self):
        """``(claims, records, bound)``: the scope's claims, listed before
        its records (a claim bound since its listing is seen bound), and
        the ``(claim UID, owner)`` pairs the records bind. Both lists are
        kept whole for the pass, without the API server's managedFields,
        which would be most of their memory."""
        book = self.store.addresses
        claims = book.all_claims(slim=True)
        records = book.owners.all(slim=True)
        return claims, records, {addresses.key_of(rec) for rec in records}

    def run_once(self):
        """One pass.

        :returns: the released :class:`~vmetal_ironic.store.base.Allocation`
            list.
        """
        claims, records, bound = self._listed()
        hosts = self.hosts()
        self.passes += 1
        released = []
        for claim in claims:
            # One claim's trouble (a 403 on its Secret, a webhook refusing
            # its host's patch) is counted and reported; the others, the
            # stale-record sweep and the follow-up still run.
            try:
                freed = self._judge(claim, bound, hosts)
            except Exception as exc:
                self.claim_failures += 1
                LOG.warning('Judging %(claim)s failed (%(err)s); the next '
                            'pass tries again',
                            {'claim': (claim.get('metadata') or {}).get(
                                'name'), 'err': exc})
                continue
            if freed is not None:
                released.append(freed)
        live = {addresses.key_of(claim) for claim in claims}
        self._drop_stale(records, live)
        self._follow(hosts, records, live, released)
        return released

    def _judge(self, claim, bound, hosts):
        """Apply the rules to one claim; the released allocation or
        ``None``."""
        spec = addresses.spec_of(claim)
        if is_unbound(claim, bound):
            return self._collect(claim)
        decision = verdict(claim, hosts)
        if decision in (RETAIN, UNRETAIN):
            self._retain(claim, decision == RETAIN)
            return None
        if decision != RELEASE:
            return None
        holder = owner_mod.parse(spec['owner'])
        host = None
        where = _host_of(claim)
        if where and where in hosts:
            namespace, _, name = where.partition('/')
            host = self.store.outputs.get_host(namespace, name)
        LOG.info('Releasing %(address)s of %(owner)s: its host %(host)s '
                 'is no longer held by it',
                 {'address': spec.get('address'), 'owner': holder,
                  'host': where})
        return self.store.release_holder(holder, host)

    def collect(self):
        """Settle the claims no record binds and delete the records that
        hold nothing (writers stopped half way): the controller's garbage
        collection.

        :returns: the released allocations.
        """
        claims, records, bound = self._listed()
        released = []
        for claim in claims:
            if not is_unbound(claim, bound):
                continue
            try:
                freed = self._collect(claim)
            except exception.VmetalError as exc:
                self.claim_failures += 1
                LOG.warning('Collecting %(claim)s failed: %(err)s',
                            {'claim': claim['metadata'].get('name'),
                             'err': exc})
                continue
            if freed is not None:
                released.append(freed)
        self._drop_stale(records, {addresses.key_of(claim)
                                   for claim in claims})
        return released

    def _collect(self, claim):
        """Settle one unbound claim (as listed); the released allocation
        when it was freed, with the reservations of its address."""
        spec = addresses.spec_of(claim)
        outcome = addresses.collect_claim(self.store.addresses, claim)
        if outcome == addresses.ADOPTED:
            LOG.info('Bound %(address)s to %(owner)s: its writer stopped '
                     'before binding it', {'address': spec.get('address'),
                                           'owner': spec.get('owner')})
        if outcome != addresses.FREED:
            return None
        LOG.warning('Freed %(address)s: %(owner)s holds another address '
                    '(a writer stopped before giving this one back)',
                    {'address': spec.get('address'),
                     'owner': spec.get('owner')})
        self.store.reservations.withdraw_matching(address=spec.get('address'))
        return addresses.to_allocation(claim)

    def settle_host(self, where, owners, gone=None):
        """Judge now the claims that ``owners`` hold for host ``where``
        (a watch event: the host went, or its Machine let go), by the
        pass's rules and in the pass's order: the claims are read first,
        then the host, so a claim made after the host was read is never
        judged against it.

        :param owners: owner identities (text) that may hold an address
            used on the host.
        :param gone: the host's last :class:`HostView` when the event said
            it was deleted: detached or paused then, its addresses are
            retained as a pass that saw it so would have.
        :returns: ``(released, kept)``: the released allocations and the
            owners still holding an address used on the host.
        """
        book = self.store.addresses
        judged = []
        for text in sorted(owners):
            try:
                holder = owner_mod.parse(text)
            except exception.InvalidProperty:
                continue
            claim = book.current(holder)[1]
            if claim is not None and _host_of(claim) == where:
                judged.append((holder, claim))
        if not judged:
            return [], set()
        namespace, _, name = where.partition('/')
        host = self.store.outputs.get_host(namespace, name)
        if host is not None:
            hosts = {where: view_of(host)}
        else:
            hosts = {where: gone} if gone is not None and gone.detached else {}
        released, kept = [], set()
        for holder, claim in judged:
            decision = verdict(claim, hosts)
            if decision == RELEASE:
                LOG.info('Releasing %(address)s of %(owner)s: its host '
                         '%(host)s is no longer held by it (seen by the '
                         'watch)', {'address': addresses.spec_of(claim).get(
                             'address'), 'owner': holder, 'host': where})
                freed = self.store.release_holder(holder, host)
                if freed is not None:
                    released.append(freed)
                continue
            if decision in (RETAIN, UNRETAIN):
                self._retain(claim, decision == RETAIN)
            kept.add(str(holder))
        return released, kept

    def _drop_stale(self, records, live):
        """Delete the records that hold nothing (their claim went), each
        exactly as listed: one bound since stays.

        :param live: ``(claim UID, owner)`` of the claims listed before
            the records; a record binding none of them is read again.
        """
        book = self.store.addresses
        for record in records:
            if addresses.key_of(record) in live:
                continue
            claim = book.read((record.get('spec') or {}).get('claim'))
            if not addresses.holds(record, claim):
                book.owners.delete(record)

    def _follow(self, hosts, records, live, released):
        """Give claimed hosts their network (see :mod:`.follower`).

        :param live: ``(claim name, owner)`` of the claims listed; a
            record naming none of them holds nothing.
        """
        gone = {freed.owner for freed in released}
        held = {addresses.key_of(record)[1] for record in records
                if addresses.key_of(record) in live} - gone
        report = self.follower.follow(hosts, held)
        self.claims_followed += len(report.given)
        self.claims_rejected += len(report.rejected)
        self.last_follow = report
