"""Giving an owner an address: the claim first, then the owner's record.

Every address the store holds (a Machine's or a host's allocation, a
custom document's address, an inspection lease, the infrastructure
addresses) is an ``AddressClaim`` named after the address, so creating it
is what takes the address: of two writers only one gets 201. An owner's
allocation then binds the owner's ``AddressOwner`` record
(:mod:`.owners`) to the claim's UID: created (201: the owner's first
address) or, when the record holds nothing any more, moved by
compare-and-swap. A writer whose bind finds the record holding another
live claim of the owner lost: it gives its own claim back and answers
with the one held. An uncontended allocation is three requests: the
claim's create, the record's create, and one read of the claim (below).

A lost answer is recognised by reading back, never by counting requests
or by time: a claim carries its writer's token (:data:`WRITER`), so a
create retried after its answer was lost meets 409, reads the claim and
finds its own token; a record retried meets its own bind (the claim's
UID).

A writer stopped between its create and its bind leaves a claim no
record binds. The controller's collect step
(:func:`collect_claim`) settles such a claim without a clock: it marks
the claim (:data:`COLLECTING`, a compare-and-swap, so the claim's
resourceVersion moves), then reads the owner's record. A record that is
absent or holds nothing is bound to the claim, as its writer would have
(the owner keeps the address; the release rules then judge it like any
other). A record holding another live claim of the owner makes this one
surplus: it is deleted exactly at the marked version. A writer that was
only slow binds the record and then reads its claim (:func:`confirm`):
unmarked, it is held; marked, the writer takes the mark off by
compare-and-swap, which makes the collector's delete at the marked
version fail; gone, its bind names nothing and it starts over. Every
interleaving of the two therefore ends with the claim held and bound, or
deleted and bound by nobody: a slow writer and a dead one need not be
told apart, so no grace period is needed. This read is why an allocation
costs three requests rather than the two creates: without it, only a
clock (a grace period long enough for every slow writer) would tell the
collector which unbound claims it may free.
"""

import random
import uuid

import netaddr
from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic.ipam import errors as ipam_errors
from vmetal_ironic.store.kubernetes import kube_client
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import owners as owners_mod
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

BOUND = 'bound'
ADOPTED = 'adopted'
FREED = 'freed'


def annotations_of(claim):
    return ((claim or {}).get('metadata') or {}).get('annotations') or {}


def _mark(claims, claim, value):
    """Put :data:`COLLECTING` on ``claim`` (``value`` ``'true'``) or take
    it off (``None``), at the version read.

    :returns: the claim written, or ``None`` when it moved or went.
    """
    try:
        return claims.patch(claim['metadata']['name'], {'metadata': {
            'resourceVersion': claim['metadata']['resourceVersion'],
            'annotations': {COLLECTING: value}}})
    except kube_client.ApiError as exc:
        if exc.status in resources.RETRY_STATUSES:
            return None
        raise


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


def bind(book, owner, claim, replaces=lambda held: False):
    """Bind ``owner``'s record to ``claim`` (which exists and names
    ``owner``).

    :param replaces: ``held -> bool``: whether ``claim`` replaces a claim
        the owner holds (the record is moved; the caller frees ``held``).
    :returns: ``(standing, replaced)``: the claim the owner holds now
        (``claim``, or one it held already: then the caller gives its own
        back) or ``None`` when ``claim`` went before the bind landed; and
        the held claim ``claim`` replaced, if any.
    :raises vmetal_ironic.exception.StoreConflict: every round lost.
    """
    spec = owners_mod.binding(owner, claim)
    record, replaced = None, None
    for _round in range(ROUNDS):
        if record is None:
            written = book.owners.create(owner, spec)
        else:
            written = book.owners.rebind(record, spec)
        if written is not None:
            return confirm(book, claim), replaced
        record = book.owners.get(owner)
        if record is None:
            continue
        if owners_mod.binds(record, claim):
            # Its own bind whose answer was lost, or the collector bound
            # it on its behalf.
            return confirm(book, claim), replaced
        held = book.read((record.get('spec') or {}).get('claim'))
        if owners_mod.holds(record, held):
            if not replaces(held):
                return held, None
            replaced = held
        # else: the record holds nothing (its claim went): moved next.
    raise exception.StoreConflict(
        f'{owner}: its address record changed {ROUNDS} times while it was '
        'bound; try again')


def collect_claim(book, claim):
    """The controller's side of the protocol for a claim that no record
    bound when it was listed (see the module's docstring).

    :returns: :data:`BOUND` (bound meanwhile: its writer finished),
        :data:`ADOPTED` (bound here to its owner) or :data:`FREED`
        (deleted: its owner holds another address); ``None`` when it
        moved or went meanwhile.
    """
    owner = owners_mod.owner_of(claim)
    if owner is None:
        return None
    marked = _mark(book.claims, claim, 'true')
    if marked is None:
        return None
    record = book.owners.get(owner)
    if record is not None and owners_mod.binds(record, marked):
        if (record.get('spec') or {}).get('claimUID') != (
                marked['metadata']['uid']):
            # A record of the old form: it gets the claim's UID.
            book.owners.rebind(record, owners_mod.binding(owner, marked))
        _mark(book.claims, marked, None)
        return BOUND
    held = None
    if record is not None:
        held = book.read((record.get('spec') or {}).get('claim'))
    if owners_mod.holds(record, held):
        if book.claims.delete(marked, exact=True):
            return FREED
        return None     # its writer took the mark off: it is bound
    spec = owners_mod.binding(owner, marked)
    written = (book.owners.create(owner, spec) if record is None
               else book.owners.rebind(record, spec))
    _mark(book.claims, marked, None)
    return ADOPTED if written is not None else None


class Allocation:
    """One call of :meth:`~.addresses.Addresses.allocate`.

    :param book: the :class:`~.addresses.Addresses`.
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
        for _attempt in range(self.book.attempts + self.taken):
            value = self._candidate()
            body = self.book.claim_body(
                str(netaddr.IPAddress(value)), self.owner, self.pool.key,
                self.mac, self.host)
            body['metadata']['annotations'] = {WRITER: self.token}
            created = self.book.create(body)
            if created is not None:
                return created
            found = self.book.read(body['metadata']['name'])
            if annotations_of(found).get(WRITER) == self.token:
                return found    # its create's answer was lost
            if found is None:
                # Freed between the create and the read: free again.
                self.allocator.release(value)
                continue
            self._taken(value)
        raise exception.StoreConflict(
            f'pool {self.pool.name}: {self.book.attempts} attempts lost to '
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

    def _adopt(self):
        """Take over ``previous``'s address: the claim is handed to the
        owner (compare-and-swap), the owner's record bound to it, then
        ``previous``'s record goes.

        :returns: the claim the owner holds, or ``None`` when there is
            nothing to adopt.
        """
        old_record, claim = self.book.current(self.previous)
        spec = (claim or {}).get('spec') or {}
        if claim is None or spec.get('purpose') != names.PURPOSE_ALLOCATION \
                or not self.pool.contains(spec.get('address')):
            return None
        try:
            claim = self.book.hand_over(claim, self.owner, self.host)
        except kube_client.ApiError as exc:
            if exc.status not in resources.RETRY_STATUSES:
                raise
            # The claim changed since it was read. A hand-over whose
            # answer was lost and whose retry met its own write reads as
            # the owner's now: it is done. Otherwise the caller allocates.
            again = self.book.read(claim['metadata']['name'])
            if (again is None or again['metadata']['uid'] != claim[
                    'metadata']['uid'] or (again.get('spec') or {}).get(
                    'owner') != str(self.owner)):
                return None
            claim = again
        standing, _ = bind(self.book, self.owner, claim)
        if standing is None:
            return None
        if standing['metadata']['uid'] != claim['metadata']['uid']:
            # The owner held an address already: the host's goes back.
            self.book.delete(claim)
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

    def _replaces(self, held):
        # The owner's custom document address: the pool's address
        # replaces it (an owner holds one address).
        return (held.get('spec') or {}).get(
            'purpose') == names.PURPOSE_NETWORK_DATA

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
            standing = self._give_back(claim) or standing
            return standing
        raise exception.StoreConflict(
            f'pool {self.pool.name}: the claims made for {self.owner} were '
            f'freed {ROUNDS} times before they were bound; try again')
