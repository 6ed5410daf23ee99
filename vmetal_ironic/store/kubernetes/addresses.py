"""Held addresses: one ``AddressClaim`` per address, one ``AddressOwner``
record per owner, and the one claim-first protocol that binds them.

An address is held by creating the object named after the L2 scope and
the address (:func:`~vmetal_ironic.store.kubernetes.kube_names.claim_name`),
in ``[vmetal_kubernetes]namespace``. The name is the uniqueness: the API
server creates one object per name, so whatever pool, prefix or range two
writers allocate from, only one of them gets ``192.0.2.7`` and the other
is told 409 AlreadyExists and tries the next address. Every address the
store holds is such a claim (a Machine's or a host's allocation, a custom
network-data document's address, an inspection lease of
:mod:`.inspection`, the gateways and ``[vmetal]reserved_addresses``), so
no pool hands out one of the others.

One owner holds at most one address: its record, named ``<scope>.<owner
hash>``, binds it to one claim by the claim's UID (``spec.claimUID``).
Looking an owner up is two GETs by name (record, claim), never a list (a
label-selected list is served from etcd by reading every claim of the
namespace: at 10,000 hosts, one second per allocation). The record is
created once (409: the owner is bound already) and changed only by
compare-and-swap. An owner holds the claim its record binds while that
claim exists with that UID and names the owner (:func:`holds`); UIDs are
never reused, so a record whose claim went holds nothing, for good, and
the next bind moves it.

The protocol (:func:`bind`): the claim is always created first, then the
owner's record bound to it: created (201: the owner's first address) or,
when it holds nothing any more, moved by compare-and-swap. A writer whose
bind finds the record holding another live claim of the owner lost: it
gives its own claim back and answers with the one held. An uncontended
allocation is three requests: the claim's create, the record's create,
and one read of the claim (below).

A lost answer is recognised by reading back, never by counting requests
or by time: a claim carries its writer's token (:data:`WRITER`), so a
create retried after its answer was lost meets 409, reads the claim and
finds its own token; a record retried meets its own bind (the claim's
UID).

A writer stopped between its create and its bind leaves a claim no
record binds. The controller's collect step (:func:`collect_claim`)
settles such a claim without a clock: it marks the claim
(:data:`COLLECTING`, a compare-and-swap, so the claim's resourceVersion
moves), then reads the owner's record. A record that is absent or holds
nothing is bound to the claim, as its writer would have (the owner keeps
the address; the release rules then judge it like any other). A record
holding another live claim of the owner makes this one surplus: it is
deleted exactly at the marked version. A writer that was only slow binds
the record and then reads its claim (:func:`confirm`): unmarked, it is
held; marked, the writer takes the mark off by compare-and-swap, which
makes the collector's delete at the marked version fail; gone, its bind
names nothing and it starts over. Every interleaving of the two
therefore ends with the claim held and bound, or deleted and bound by
nobody: a slow writer and a dead one need not be told apart, so no grace
period is needed. This read is why an allocation costs three requests
rather than the two creates: without it, only a clock (a grace period
long enough for every slow writer) would tell the collector which
unbound claims it may free.

Claims are deleted with a UID precondition, so a release never removes a
claim someone else created for the same address meanwhile; a release
deletes the claim first and the record second, so a record may name a
claim that is gone (it holds nothing), never the reverse.
"""

import random
import threading
import time
import uuid

import netaddr
from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.ipam import allocator as ipam_allocator
from vmetal_ironic.ipam import errors as ipam_errors
from vmetal_ironic.store import base
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import resources

LOG = log.getLogger(__name__)

# The token of the allocation that created a claim (an annotation): a
# create whose answer was lost and whose retry met 409 knows its own.
WRITER = names.LABEL_PREFIX + 'writer'
# Put on an unbound claim by the controller before it decides whether to
# free it; taken off by the claim's writer, which wins.
COLLECTING = names.LABEL_PREFIX + 'collecting'
# Free addresses above which a writer that lost a race moves elsewhere in
# the pool.
ROOMY = 1024
# Rounds of one bind or one confirmation against concurrent writers.
ROUNDS = 8
# What of a claim its owner's record repeats, for people reading it
# (``kubectl get vao`` prints the address); the UID is what binds.
BINDING_KEYS = ('address', 'purpose', 'pool', 'mac', 'host')

BOUND = 'bound'
ADOPTED = 'adopted'
FREED = 'freed'


# -- the objects, as pure functions -----------------------------------------

def address_value(text):
    """The address as an integer, or ``None`` when it is not one."""
    try:
        return int(netaddr.IPAddress(text, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None


def spec_of(obj):
    return (obj or {}).get('spec') or {}


def annotations_of(claim):
    return ((claim or {}).get('metadata') or {}).get('annotations') or {}


def to_allocation(claim, pool_key=None):
    spec = spec_of(claim)
    return base.Allocation(owner=spec.get('owner'),
                           pool_key=pool_key or spec.get('pool') or '',
                           address=spec.get('address'), mac=spec.get('mac'))


def host_ref(host):
    """``<namespace>/<name>`` of a BareMetalHost dict (or that text
    itself), or ``None``."""
    if host is None or isinstance(host, str):
        return host
    return f'{host["metadata"]["namespace"]}/{host["metadata"]["name"]}'


def _body(kind, name, namespace, labels, spec):
    return {'apiVersion': f'{names.API_GROUP}/{names.API_VERSION}',
            'kind': kind,
            'metadata': {'name': name, 'namespace': namespace,
                         'labels': dict(names.MANAGED_BY, **labels)},
            'spec': spec}


def claim_body(namespace, scope, address, owner, purpose, pool_key=None,
               mac=None, host=None):
    """The ``AddressClaim`` object holding ``address`` for ``owner``.

    :param host: the BareMetalHost the address is used on, so that the
        controller can tell when its holder let go of it.
    """
    labels = {names.LABEL_COMPONENT: names.COMPONENT_ADDRESS,
              names.LABEL_SCOPE: scope,
              names.LABEL_OWNER: owner.label,
              names.LABEL_OWNER_KIND: owner.kind.lower(),
              names.LABEL_PURPOSE: purpose}
    spec = {'scope': scope, 'address': str(address), 'owner': str(owner),
            'purpose': purpose}
    if pool_key:
        labels[names.LABEL_POOL] = names.pool_label(pool_key)
        spec['pool'] = pool_key
    if mac:
        spec['mac'] = mac
    if host:
        spec['host'] = host_ref(host)
    return _body(names.ADDRESS_KIND, names.claim_name(scope, address),
                 namespace, labels, spec)


def record_name(scope, owner):
    """``default.<40 hex>``: the owner's hash, as labels and names allow
    neither its length nor its characters."""
    return f'{scope}.{owner.label}'


def binding(owner, claim):
    """The record's ``spec`` binding ``owner`` to ``claim`` (an existing
    claim, as read or as its create answered)."""
    claim_spec = spec_of(claim)
    spec = {'owner': str(owner), 'claim': claim['metadata']['name'],
            'claimUID': claim['metadata']['uid']}
    for key in BINDING_KEYS:
        if claim_spec.get(key):
            spec[key] = claim_spec[key]
    return spec


def record_body(namespace, scope, owner, spec):
    """The ``AddressOwner`` of ``owner`` with ``spec``
    (see :func:`binding`)."""
    return _body(names.OWNER_KIND, record_name(scope, owner), namespace,
                 {names.LABEL_COMPONENT: names.COMPONENT_ADDRESS_OWNER,
                  names.LABEL_SCOPE: scope,
                  names.LABEL_OWNER_KIND: owner.kind.lower()}, spec)


def binds(record, claim):
    """Whether ``record`` is bound to this very ``claim`` (pure).

    Records written before ``claimUID`` existed name their claim only:
    the name and the owner then stand for the UID (the controller's
    collect step adds the UID to them).
    """
    spec = spec_of(record)
    metadata = (claim or {}).get('metadata') or {}
    if spec.get('claimUID'):
        return spec['claimUID'] == metadata.get('uid')
    return (spec.get('claim') == metadata.get('name')
            and spec.get('owner') == spec_of(claim).get('owner'))


def holds(record, claim):
    """Whether the owner of ``record`` holds ``claim`` (pure): the record
    binds it and the claim names the owner (a claim handed to another
    owner keeps its UID), and it is not a declined inspection lease (held
    for nobody; a record left by a decline cut short holds nothing)."""
    if record is None or claim is None:
        return False
    claim_spec = spec_of(claim)
    return (binds(record, claim) and not claim_spec.get('declined')
            and claim_spec.get('owner') == spec_of(record).get('owner'))


def owner_of(claim):
    """The :class:`~vmetal_ironic.owner.Owner` a claim names, or ``None``
    when it names none that parses."""
    try:
        return owner_mod.parse(spec_of(claim).get('owner'))
    except exception.InvalidProperty:
        return None


def key_of(obj):
    """``(claim UID, owner)`` a record binds, or a claim stands for: the
    pairs a listing of both kinds is matched on (a record of the old
    form, without a UID, matches nothing and is judged one by one)."""
    spec = spec_of(obj)
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
        return self.records.swap(record['metadata']['name'],
                                 record['metadata']['resourceVersion'],
                                 {'spec': change})

    def delete(self, record):
        """Delete exactly this record as read (UID and resourceVersion
        preconditions).

        :returns: ``True`` if this call deleted it, ``False`` when it had
            changed or was gone.
        """
        return self.records.delete(record, exact=True)

    def all(self, slim=False):
        """Every record of the scope, page by page (the controller;
        ``slim``: see :meth:`~.resources.Collection.list`)."""
        return self.records.list(
            f'{names.LABEL_COMPONENT}={names.COMPONENT_ADDRESS_OWNER},'
            f'{names.LABEL_SCOPE}={self.scope}', slim=slim)[1]


# -- the protocol -------------------------------------------------------------

def _mark(claims, claim, value):
    """Put :data:`COLLECTING` on ``claim`` (``value`` ``'true'``) or take
    it off (``None``), at the version read.

    :returns: the claim written, or ``None`` when it moved or went.
    """
    return claims.swap(claim['metadata']['name'],
                       claim['metadata']['resourceVersion'],
                       {'metadata': {'annotations': {COLLECTING: value}}})


def confirm(book, claim):
    """Read back ``claim`` after the owner's record was bound to it.

    :returns: the claim as it stands, held; ``None`` when the collector
        freed it before the bind landed (the record then names nothing).
    """
    name, uid = claim['metadata']['name'], claim['metadata']['uid']
    for _round in range(ROUNDS):
        current = book.read(name)
        if current is None or current['metadata']['uid'] != uid:
            return None
        if COLLECTING not in annotations_of(current):
            return current
        # Its mark on the claim's version makes the collector's delete at
        # that version fail: the bound claim stays.
        unmarked = _mark(book.claims, current, None)
        if unmarked is not None:
            return unmarked
    return None


def bind(book, owner, claim, replaces=lambda held: False, record=None,
         read_back=True, rounds=ROUNDS):
    """Bind ``owner``'s record to ``claim`` (which exists and names
    ``owner``).

    :param replaces: ``held -> bool``: whether ``claim`` replaces a claim
        the owner holds (the record is moved; the caller frees ``held``).
    :param record: the owner's record as just read (moved by
        compare-and-swap); ``None``: created.
    :param read_back: read the claim back once bound (:func:`confirm`);
        not for inspection leases, which the collect step never frees.
    :returns: ``(standing, replaced)``: the claim the owner holds now
        (``claim``, or one it held already: then the caller gives its own
        back) or ``None`` when ``claim`` went before the bind landed; and
        the held claim ``claim`` replaced, if any.
    :raises vmetal_ironic.exception.StoreConflict: every round lost.
    """
    spec = binding(owner, claim)
    replaced = None
    for _round in range(rounds):
        if record is None:
            written = book.owners.create(owner, spec)
        else:
            written = book.owners.rebind(record, spec)
        if written is not None:
            return (confirm(book, claim) if read_back else claim), replaced
        record = book.owners.get(owner)
        if record is None:
            continue
        if binds(record, claim):
            # Its own bind whose answer was lost, or the collector bound
            # it on its behalf.
            return (confirm(book, claim) if read_back else claim), replaced
        held = book.read(spec_of(record).get('claim'))
        if holds(record, held):
            if not replaces(held):
                return held, None
            replaced = held
        # else: the record holds nothing (its claim went): moved next.
    raise exception.StoreConflict(
        f'{owner}: its address record changed {rounds} times while it was '
        'bound; try again')


def collect_claim(book, claim):
    """The controller's side of the protocol for a claim that no record
    bound when it was listed (see the module's docstring).

    :returns: :data:`BOUND` (bound meanwhile: its writer finished),
        :data:`ADOPTED` (bound here to its owner) or :data:`FREED`
        (deleted: its owner holds another address); ``None`` when it
        moved or went meanwhile.
    """
    owner = owner_of(claim)
    if owner is None:
        return None
    marked = _mark(book.claims, claim, 'true')
    if marked is None:
        return None
    record = book.owners.get(owner)
    if record is not None and binds(record, marked):
        if spec_of(record).get('claimUID') != marked['metadata']['uid']:
            # A record of the old form: it gets the claim's UID.
            book.owners.rebind(record, binding(owner, marked))
        _mark(book.claims, marked, None)
        return BOUND
    held = None
    if record is not None:
        held = book.read(spec_of(record).get('claim'))
    if holds(record, held):
        if book.claims.delete(marked, exact=True):
            return FREED
        return None     # its writer took the mark off: it is bound
    spec = binding(owner, marked)
    written = (book.owners.create(owner, spec) if record is None
               else book.owners.rebind(record, spec))
    _mark(book.claims, marked, None)
    return ADOPTED if written is not None else None


class Allocation:
    """One call of :meth:`Addresses.allocate`.

    :param book: the :class:`Addresses`.
    :param pool: the pool to allocate from.
    :param owner: the :class:`~vmetal_ironic.owner.Owner`.
    :param previous: an owner whose address the owner takes over when it
        holds none (the host a Machine claims).
    :param host: the BareMetalHost dict the address is used on.
    """

    def __init__(self, book, pool, owner, mac=None, previous=None,
                 host=None):
        self.book = book
        self.pool = pool
        self.owner = owner
        self.mac = mac
        self.previous = previous
        self.host = host
        self.token = uuid.uuid4().hex
        # A copy of its own (conductor threads share the store): this
        # call counts and grows it while others learn theirs.
        self.used = book.used_addresses()
        self.allocator = book.allocator(pool, self.used)
        self.refreshed = False
        # Candidates found taken since the last read of the held
        # addresses, and in all.
        self.lost = 0
        self.taken = 0
        # Whether this call created the claim that stands.
        self.made = False
        # A held claim the pool's address replaces (a custom document's).
        self.replaced = None

    # -- candidates ---------------------------------------------------------

    def _candidate(self):
        """The next address to propose, as an integer.

        :raises vmetal_ironic.ipam.PoolExhausted: none is free.
        """
        while True:
            try:
                return self.allocator.allocate()
            except ipam_errors.PoolExhausted:
                if self.refreshed and not self.lost:
                    raise
                # The cached view may hold addresses freed since, and a
                # move up the pool passes the free ones below.
                self.refreshed, self.lost = True, 0
                self.used = self.book.used_addresses(refresh=True)
                self.allocator = self.book.allocator(self.pool, self.used)

    def _taken(self, value):
        """``value`` is someone else's: learn it, move on in the pool."""
        self.used.add(value)
        self.allocator.mark_used(value)
        self.lost += 1
        self.taken += 1
        if self.pool.size - self.pool.count_used(self.used) > ROOMY:
            # Another writer is most likely taking the next addresses too:
            # rather than queue behind it, move to a random part of a roomy
            # pool and go on upwards from there (lowest first while alone).
            self.allocator.start_at(random.randint(  # noqa: S311
                self.pool.intervals[0][0], self.pool.intervals[-1][1]))
        elif self.lost % 4 == 0:
            # In a nearly full pool, learn address by address; writers
            # ahead take them faster than that: read them all again.
            self.used = self.book.used_addresses(refresh=True)
            self.allocator = self.book.allocator(self.pool, self.used)

    # -- the claim ------------------------------------------------------------

    def _create(self):
        """Take the first free candidate: its claim, created here (or
        found by its token after a lost answer).

        :raises vmetal_ironic.ipam.PoolExhausted: none is free.
        :raises vmetal_ironic.exception.StoreConflict: every candidate
            lost to other writers.
        """
        book = self.book
        for _attempt in range(book.attempts + self.taken):
            value = self._candidate()
            body = claim_body(book.namespace, book.scope,
                              str(netaddr.IPAddress(value)), self.owner,
                              names.PURPOSE_ALLOCATION, self.pool.key,
                              self.mac, self.host)
            body['metadata']['annotations'] = {WRITER: self.token}
            created = book.claims.create(body)
            if created is not None:
                return created
            found = book.read(body['metadata']['name'])
            if annotations_of(found).get(WRITER) == self.token:
                return found    # its create's answer was lost
            if found is None:
                # Freed between the create and the read: free again.
                self.allocator.release(value)
                continue
            self._taken(value)
        raise exception.StoreConflict(
            f'pool {self.pool.name}: {book.attempts} attempts lost to '
            f'concurrent writers while allocating for {self.owner}; '
            'try again')

    def _give_back(self, claim):
        """Delete this call's own claim, exactly as it knows it: if it
        changed, the collector marked it and may have bound it.

        :returns: the claim the owner holds once it is given back (read
            again when the delete did not go through), or ``None``.
        """
        if self.book.claims.delete(claim, exact=True):
            return None
        return self.book.current(self.owner)[1]

    def _hand_over(self, claim):
        """Make ``claim`` (as read) the owner's, by compare-and-swap.

        :returns: the claim handed over, or ``None`` when it changed since
            it was read and is not the owner's.
        """
        handed = self.book.claims.swap(
            claim['metadata']['name'], claim['metadata']['resourceVersion'],
            {'metadata': {'labels': {
                names.LABEL_OWNER: self.owner.label,
                names.LABEL_OWNER_KIND: self.owner.kind.lower()}},
             'spec': {'owner': str(self.owner),
                      'host': host_ref(self.host)}})
        if handed is not None:
            return handed
        # A hand-over whose answer was lost and whose retry met its own
        # write reads as the owner's now: it is done. Otherwise the
        # caller allocates.
        again = self.book.read(claim['metadata']['name'])
        if (again is None or again['metadata']['uid'] != claim[
                'metadata']['uid'] or spec_of(again).get('owner') != str(
                    self.owner)):
            return None
        return again

    def _adopt(self):
        """Take over ``previous``'s address: the claim is handed to the
        owner, the owner's record bound to it, then ``previous``'s record
        goes.

        :returns: the claim the owner holds, or ``None`` when there is
            nothing to adopt.
        """
        old_record, claim = self.book.current(self.previous)
        spec = spec_of(claim)
        if claim is None or spec.get('purpose') != names.PURPOSE_ALLOCATION \
                or not self.pool.contains(spec.get('address')):
            return None
        claim = self._hand_over(claim)
        if claim is None:
            return None
        standing, _ = bind(self.book, self.owner, claim)
        if standing is None:
            return None
        if standing['metadata']['uid'] != claim['metadata']['uid']:
            # The owner held an address already: the host's goes back.
            self.book.claims.delete(claim)
            return standing
        self.book.owners.delete(old_record)
        return standing

    # -- the protocol ---------------------------------------------------------

    def _held(self):
        """The owner's claim when the cached view says it may hold one
        (two reads), or the one it adopts from ``previous``."""
        book = self.book
        if book.may_hold(self.owner):
            claim = book.current(self.owner)[1]
            if claim is not None:
                return claim
        if self.previous is not None and book.may_hold(self.previous):
            return self._adopt()
        return None

    @staticmethod
    def _replaces(held):
        # The owner's custom document address: the pool's address
        # replaces it (an owner holds one address).
        return spec_of(held).get('purpose') == names.PURPOSE_NETWORK_DATA

    def run(self):
        """:returns: the claim that stands for the owner."""
        held = self._held()
        if held is not None and not self._replaces(held):
            return held
        for _round in range(ROUNDS):
            claim = self._create()
            standing, self.replaced = bind(self.book, self.owner, claim,
                                           self._replaces)
            if standing is None:
                continue    # freed before the bind landed: once more
            if standing['metadata']['uid'] == claim['metadata']['uid']:
                self.made = True
                return standing
            # The owner was bound to another address meanwhile (another
            # writer for the same owner): that one stands, ours goes back.
            return self._give_back(claim) or standing
        raise exception.StoreConflict(
            f'pool {self.pool.name}: the claims made for {self.owner} were '
            f'freed {ROUNDS} times before they were bound; try again')


class Addresses:
    """The address claims and owner records of one scope.

    :param api: a :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`.
    :param namespace: where the claims live.
    :param scope: ``[vmetal]address_scope``.
    :param reserved: ``[vmetal]reserved_addresses``.
    :param attempts: bound of attempts per allocation.
    :param cache_seconds: how long the list of held addresses is trusted
        before it is read again; an address seen free in it is only a
        candidate, the create decides, and an owner seen holding nothing
        in it is only a hint (its record is created rather than read
        first; a 409 says otherwise).
    """

    def __init__(self, api, namespace, scope, reserved=(), attempts=50,
                 cache_seconds=30.0):
        self.api = api
        self.namespace = namespace
        self.scope = scope
        self.reserved = tuple(str(netaddr.IPAddress(a)) for a in reserved)
        self.attempts = attempts
        self.cache_seconds = cache_seconds
        self._used = None
        self._used_at = 0.0
        # Owner (text) -> claim name, of the same cached view.
        self._holders = {}
        self._infrastructure = set()
        # Per pool, the allocator proposing candidates; rebuilt whenever
        # the list of held addresses is read again.
        self._allocators = {}
        self._generation = 0
        # Guards the cached view: conductor threads share this object.
        self._lock = threading.Lock()
        self.owners = Owners(api, namespace, scope)
        self.claims = resources.Collection(api, names.ADDRESS_API,
                                            names.ADDRESS_KIND, namespace)
        self.selector = (f'{names.LABEL_COMPONENT}={names.COMPONENT_ADDRESS},'
                         f'{names.LABEL_SCOPE}={scope}')

    # -- lookups -------------------------------------------------------------

    def read(self, name):
        return self.claims.get(name) if name else None

    def current(self, owner, known=None):
        """``(record, claim)`` of ``owner``: its record and the claim it
        holds, ``claim`` ``None`` when the record is missing or holds
        nothing (see :func:`holds`).

        :param known: a claim just read: not read again when the record
            binds it.
        """
        record = self.owners.get(owner)
        if record is None:
            return None, None
        if known is not None and binds(record, known):
            claim = known
        else:
            claim = self.read(spec_of(record).get('claim'))
        return record, (claim if holds(record, claim) else None)

    def all_claims(self, slim=False):
        """Every claim of the scope, page by page (``slim``: see
        :meth:`~.resources.Collection.list`)."""
        return self.claims.list(self.selector, slim=slim)[1]

    def used_addresses(self, refresh=False):
        """A copy of the addresses the cached view says are held
        (integers): the caller may count and grow it while other threads
        of the process learn theirs."""
        now = time.monotonic()
        if (refresh or self._used is None
                or now - self._used_at > self.cache_seconds):
            used, holders = set(), {}
            for claim in self.claims.list(self.selector, cached=True)[1]:
                spec = spec_of(claim)
                value = address_value(spec.get('address'))
                if value is not None:
                    used.add(value)
                    holders[spec.get('owner')] = claim['metadata']['name']
            with self._lock:
                self._used, self._holders = used, holders
                self._used_at = now
                self._generation += 1
        with self._lock:
            return set(self._used)

    def may_hold(self, owner):
        """Whether the cached view has ``owner`` holding an address."""
        self.used_addresses()
        return str(owner) in self._holders

    def allocator(self, pool, used):
        """The pool's candidate allocator, kept between allocations so a
        process that moved up the pool stays there until the next read."""
        generation, allocator = self._allocators.get(pool.name, (None, None))
        if allocator is None or generation != self._generation:
            allocator = ipam_allocator.Allocator(pool, used)
            self._allocators[pool.name] = (self._generation, allocator)
        return allocator

    def _learn(self, owner, claim):
        """Keep the cached view in step with what this process did."""
        if self._used is None:
            return
        value = address_value(spec_of(claim).get('address'))
        if value is None:
            return
        with self._lock:
            if owner is not None:
                self._used.add(value)
                self._holders[str(owner)] = claim['metadata']['name']
                return
            self._used.discard(value)
            self._holders.pop(spec_of(claim).get('owner'), None)
        # Offered again, lowest first, by this process's allocators.
        for _, allocator in self._allocators.values():
            allocator.release(value)

    def _free(self, claim):
        """Delete a claim the owner held and no longer needs (UID
        precondition), and forget it."""
        self.claims.delete(claim)
        self._learn(None, claim)

    # -- infrastructure -----------------------------------------------------

    def _hold_infrastructure(self, kind, purpose, address, pool):
        name = names.claim_name(self.scope, address)
        if name in self._infrastructure:
            return
        holder = owner_mod.for_infrastructure(kind, self.scope, address)
        body = claim_body(self.namespace, self.scope, address, holder, purpose)
        if self.claims.create(body) is None:
            existing = self.read(name)
            owner_text = spec_of(existing).get('owner') if existing else None
            if existing is not None and not owner_mod.parse(
                    owner_text).is_infrastructure:
                what = ('gateway' if purpose == names.PURPOSE_GATEWAY
                        else 'reserved address ([vmetal]reserved_addresses)')
                raise ipam_errors.AddressTaken(
                    f'{what} {address} of pool {pool.name} is held by '
                    f'{owner_text}; release that owner or change the pool')
        self._infrastructure.add(name)

    def hold_infrastructure(self, pool):
        """Claim the pool's gateway and the reserved addresses inside it
        (once per process and address)."""
        self._hold_infrastructure(owner_mod.GATEWAY, names.PURPOSE_GATEWAY,
                                  str(pool.gateway), pool)
        for address in self.reserved:
            if netaddr.IPAddress(address) in pool.network:
                self._hold_infrastructure(owner_mod.RESERVED,
                                          names.PURPOSE_RESERVED, address,
                                          pool)

    # -- allocation -----------------------------------------------------------

    @staticmethod
    def _held(claim, pool, owner):
        spec = spec_of(claim)
        address = spec.get('address')
        if (spec.get('purpose') == names.PURPOSE_ALLOCATION
                and address_value(address) is not None
                and pool.contains(address)):
            return to_allocation(claim, pool.key)
        where = (f'pool {spec.get("pool")}' if spec.get('pool')
                 else 'its network-data document')
        raise ipam_errors.OwnerElsewhere(
            f'owner {owner} already holds {address} from {where}, which '
            f'pool {pool.name} may not hand out; release it first')

    def allocate(self, pool, owner, mac=None, previous=None, host=None):
        """Give ``owner`` an address from ``pool``, or the one it holds
        (see :class:`Allocation`).

        :param previous: an owner whose address in ``pool`` ``owner`` takes
            over when it holds none itself (the host a Machine claims).
        :param host: the BareMetalHost the address is used on.
        :raises vmetal_ironic.ipam.PoolExhausted: no free address.
        :raises vmetal_ironic.ipam.errors.OwnerElsewhere: the owner holds
            an address this pool may not hand out.
        :raises vmetal_ironic.exception.StoreConflict: lost every attempt.
        """
        self.hold_infrastructure(pool)
        attempt = Allocation(self, pool, owner, mac, previous, host)
        claim = attempt.run()
        self._learn(owner, claim)
        if attempt.replaced is not None and attempt.replaced[
                'metadata']['uid'] != claim['metadata']['uid']:
            # A custom document's address the owner held before goes back
            # now that the pool gives it one (it holds only one address).
            self._free(attempt.replaced)
        if attempt.made:
            LOG.info('Allocated %(address)s from pool %(pool)s to %(owner)s',
                     {'address': spec_of(claim).get('address'),
                      'pool': pool.name, 'owner': owner})
        return self._held(claim, pool, owner)

    def hold(self, owner, address, source):
        """Hold an address named explicitly (a custom network-data
        document) for ``owner``, instead of any it held: its claim first,
        then the owner's record moved to it, then the old claim freed.

        :param source: where the address comes from, for the error.
        :raises vmetal_ironic.ipam.errors.AddressTaken: another owner
            holds it.
        :raises vmetal_ironic.exception.StoreConflict: the claim was freed
            before the record was bound to it.
        """
        held = self.current(owner)[1]
        if held is not None and spec_of(held).get('address') == address:
            return to_allocation(held)
        body = claim_body(self.namespace, self.scope, address, owner,
                          names.PURPOSE_NETWORK_DATA)
        mine = self.claims.create(body)
        if mine is None:
            # Taken, or the owner's own (this create's answer lost, or
            # another writer's for the same document): read back.
            mine = self.read(body['metadata']['name'])
            holder = spec_of(mine).get('owner')
            if holder != str(owner):
                raise ipam_errors.AddressTaken(
                    f'{source} names {address}, which {holder} holds; '
                    'choose another address')
        standing, replaced = bind(self, owner, mine,
                                  replaces=lambda _held: True)
        if standing is None:
            raise exception.StoreConflict(
                f'the claim of {address} for {owner} was freed while '
                f'{source} was saved; try again')
        if replaced is not None:
            self._free(replaced)
        self._learn(owner, standing)
        return to_allocation(standing)

    def release(self, owner):
        """Free the owner's address: the claim (its UID), then the record
        (exactly as read: one bound anew meanwhile stays).

        :returns: the released allocation, or ``None``.
        """
        record, claim = self.current(owner)
        if claim is None:
            return None
        if not self.claims.delete(claim):
            again = self.read(claim['metadata']['name'])
            if again is not None and again['metadata']['uid'] == (
                    claim['metadata']['uid']):
                raise exception.StoreConflict(
                    f'{owner}: its claim {claim["metadata"]["name"]} could '
                    'not be deleted; try again')
            # Gone: deleted by this call (its answer lost) or by another.
        self.owners.delete(record)
        self._learn(None, claim)
        return to_allocation(claim)

    def get(self, owner):
        claim = self.current(owner)[1]
        return to_allocation(claim) if claim is not None else None

    def list_allocations(self, pool_key=None):
        result = []
        for claim in self.all_claims():
            spec = spec_of(claim)
            if spec.get('purpose') not in (names.PURPOSE_ALLOCATION,
                                           names.PURPOSE_NETWORK_DATA):
                continue
            if pool_key is not None and spec.get('pool') != pool_key:
                continue
            if address_value(spec.get('address')) is None:
                continue
            result.append(to_allocation(claim))
        result.sort(key=lambda a: (a.pool_key, address_value(a.address)))
        return result
