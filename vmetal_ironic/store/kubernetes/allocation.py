"""Giving an owner an address: the owner's record first, then the claim.

An uncontended allocation for an owner that holds nothing is two creates:
its ``AddressOwner`` record naming a candidate address (201: nobody else is
binding the owner), then the ``AddressClaim`` of that address (201: the
address is the owner's). No read comes first: a 409 on the record says
the owner has one, and only then is it read.

The record is written before the claim exists, so a reader may find a
record whose claim is not there (:data:`~.owners.PENDING`) or is someone
else's (:data:`~.owners.LOST`). The rules that keep "one address, one
owner" (the claim's name) and "one owner, one address" (the record's
name) by construction:

* the writer that bound the record (its token is the record's
  ``binder``) creates the claim; on 409 it reads the claim: the owner's
  means held, someone else's means lost, and the binder moves the record
  to another candidate by compare-and-swap on the version it wrote. No one
  else can be creating that claim then (see the next rule), so nothing
  can create it for the owner once the record names another address;
* any other writer finding the record pending creates the claim the
  record describes (the same object the binder would create: whoever is
  first, the other gets 409 and reads the owner's claim), then reads the
  record again: if it names another address by then, it deletes the claim
  it made; a lost record it does not move but waits for the binder;
* a record that is not held may be moved by anyone once its binder's
  create can no longer land unchecked: :data:`SETTLE_GRACE` after
  ``boundAt``. A binder whose create was answered later than
  :data:`CHECK_AFTER` after it bound the record reads the record again
  before trusting the claim (and gives the claim back if the record moved
  on meanwhile), so only the fast creates go unchecked and they have
  landed by then, whatever happened to their writer. This allows clocks
  of different writers to differ by up to ``SETTLE_GRACE - CHECK_AFTER
  - 1`` seconds (``boundAt`` has whole seconds);
* a release deletes the held record first (exactly the version read) and
  the claim last; it leaves a record that is not held alone (an
  allocation is in flight: it wins).

A writer stopped between the two creates leaves a pending record: the
owner's next allocation, from any process, creates its claim. A writer
stopped after them leaves nothing to repair.
"""

import random
import time
import uuid

import netaddr
from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic.ipam import errors as ipam_errors
from vmetal_ironic.store import kube_client
from vmetal_ironic.store import kube_names as names
from vmetal_ironic.store.kubernetes import cas
from vmetal_ironic.store.kubernetes import owners as owners_mod

LOG = log.getLogger(__name__)

# Seconds after its last bind that a record holding nothing may be moved
# by any writer (its binder stopped or is stuck): a writer killed between
# the two creates holds its owner up for this long at most.
SETTLE_GRACE = 60
# Seconds from binding the record to the answer of the claim's create
# after which the binder checks the record before trusting the claim.
CHECK_AFTER = 20
# Free addresses above which a writer that lost a race moves elsewhere in
# the pool.
ROOMY = 1024


def claim_spec_of(record, scope):
    """The ``spec`` of the claim ``record`` names (pure)."""
    spec = record.get('spec') or {}
    claim = {'scope': scope, 'owner': spec.get('owner'),
             'address': spec.get('address')}
    for key in owners_mod.BINDING_KEYS:
        if spec.get(key):
            claim[key] = spec[key]
    return claim


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
        self.waited = 0
        # Whether this call created the claim that stands.
        self.made = False
        # When this call last bound the record (time.monotonic()).
        self.bound_at = None
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

    def _spec(self, value):
        address = str(netaddr.IPAddress(value))
        claim = self.book.claim_body(address, self.owner, self.pool.key,
                                     self.mac, self.host)['spec']
        return owners_mod.binding(self.owner, claim, self.token)

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

    def _taken_address(self, address):
        value = self.book.value_of(address)
        if value is not None and self.pool.contains(address):
            self._taken(value)

    # -- the record -----------------------------------------------------------

    def _propose(self, record):
        """Bind the owner's record to a new candidate: create it
        (``record`` ``None``) or move it by compare-and-swap.

        :returns: the record as it now stands (ours, or the one someone
            else wrote first), ``None`` when there is none.
        """
        value = self._candidate()
        spec = self._spec(value)
        self.bound_at = time.monotonic()
        if record is None:
            written = self.book.owners.create(self.owner, spec)
        else:
            written = self.book.owners.rebind(record, spec)
        if written is not None:
            return written
        # Someone else bound the owner meanwhile: the candidate stays free.
        self.allocator.release(value)
        return self.book.owners.get(self.owner)

    def _claim_body_of(self, record):
        """The claim exactly as the owner's ``record`` describes it."""
        spec = claim_spec_of(record, self.book.scope)
        return self.book.claim_body(
            spec['address'], self.owner, spec.get('pool'), spec.get('mac'),
            spec.get('host'), spec.get('purpose'))

    def _complete(self, record):
        """Create the claim of a pending record someone else bound: mark
        the record first (so that its binder, whose next compare-and-swap
        fails, looks at the claim before moving on), create the claim,
        then check the record still names it.

        :returns: ``(claim, record)``: the owner's claim if it stands, or
            ``None`` with the record read again.
        """
        touched = self.book.owners.touch(record, self.token)
        if touched is None:
            return None, self.book.owners.get(self.owner)
        record = touched
        created = self.book.create(self._claim_body_of(record))
        if created is None:
            # Made by the binder (or taken) meanwhile.
            found = self.book.read(record['spec']['claim'])
            if owners_mod.standing(record, found) == owners_mod.HELD:
                return found, record
            return None, record
        claim, record = self._check(created, record)
        self.made = claim is not None
        return claim, record

    def _check(self, claim, record):
        """``(claim, record)``: the claim this call just created if the
        owner's record (read again) still names it; otherwise the claim
        is given back and ``claim`` is ``None``."""
        again = self.book.owners.get(self.owner)
        if again is not None and (again.get('spec') or {}).get('claim') == (
                claim['metadata']['name']):
            return claim, again
        # The record moved on while this create was on its way: the claim
        # names an address the owner no longer wants.
        self.book.delete(claim)
        return None, again

    def _trust(self, claim, record):
        """The binder's own claim: trusted when its create was answered
        soon after the bind (no one may have moved the record yet),
        checked otherwise."""
        if time.monotonic() - self.bound_at <= CHECK_AFTER:
            return claim, record
        return self._check(claim, record)

    def _adopt(self):
        """Take over ``previous``'s address: the owner's record names its
        claim, then the claim is handed to the owner (compare-and-swap),
        then ``previous``'s record goes.

        :returns: ``(claim, record)``; ``claim`` ``None`` when there is
            nothing to adopt (or someone else bound the owner).
        """
        old_record, claim = self.book.current(self.previous)
        spec = (claim or {}).get('spec') or {}
        if claim is None or spec.get('purpose') != names.PURPOSE_ALLOCATION \
                or not self.pool.contains(spec.get('address')):
            return None, None
        mine = dict(spec, owner=str(self.owner))
        mine['host'] = self.book.claim_body(
            spec['address'], self.owner, host=self.host)['spec'].get('host')
        self.bound_at = time.monotonic()
        record = self.book.owners.create(
            self.owner, owners_mod.binding(self.owner, mine, self.token))
        if record is None:
            return None, self.book.owners.get(self.owner)
        try:
            claim = self.book.hand_over(claim, self.owner, self.host)
        except kube_client.ApiError as exc:
            if exc.status not in cas.RETRY_STATUSES:
                raise
            # The claim changed since it was read. A hand-over whose
            # answer was lost and whose retry met its own write reads as
            # the owner's now: it is done. Otherwise the loop reads it.
            again = self.book.read(claim['metadata']['name'])
            if (again is None or again['metadata']['uid'] != claim[
                    'metadata']['uid'] or (again.get('spec') or {}).get(
                    'owner') != str(self.owner)):
                return None, record
            claim = again
        self.book.owners.delete(old_record)
        return claim, record

    # -- the protocol ---------------------------------------------------------

    def _start(self):
        """``(claim, record)`` to begin with: create first for an owner
        the cached view says holds nothing, read first otherwise."""
        book = self.book
        if not book.may_hold(self.owner):
            if self.previous is not None and book.may_hold(self.previous):
                claim, record = self._adopt()
                if claim is not None or record is not None:
                    return claim, record
            return None, self._propose(None)
        record = book.owners.get(self.owner)
        if record is None and self.previous is not None:
            claim, record = self._adopt()
            if claim is not None or record is not None:
                return claim, record
        return None, record

    def run(self):
        """:returns: the claim that stands for the owner."""
        book = self.book
        claim, record = self._start()
        steps = 0
        # A candidate someone else took is progress (theirs), and there
        # are only so many: those steps are not counted against the bound.
        while steps - self.taken < book.attempts:
            steps += 1
            if claim is not None:
                return claim
            if record is None:
                record = self._propose(None)
                continue
            spec = record.get('spec') or {}
            mine = spec.get('binder') == self.token
            if mine:
                claim = book.create(self._claim_body_of(record))
                if claim is not None:
                    claim, record = self._trust(claim, record)
                    if claim is not None:
                        self.made = True
                        return claim
                    continue
                # 409: whose claim it is is read back, never guessed (a
                # create whose first answer was lost and was sent again
                # meets its own claim: it is the owner's, held).
            found = book.read(spec.get('claim') or '')
            if found is None:
                if not mine:
                    claim, record = self._complete(record)
                # else: it went between the create and the read; again.
                continue
            state = owners_mod.standing(record, found)
            if state == owners_mod.HELD:
                if spec.get('purpose') != names.PURPOSE_NETWORK_DATA:
                    return found
                # The owner's custom document address: the pool's
                # address replaces it (moving a held record is safe:
                # no create for it is on its way).
                self.replaced = found
                record = self._propose(record)
                continue
            if state == owners_mod.LOST:
                self._taken_address(spec.get('address'))
            if mine or owners_mod.settled(record, time.time(),
                                          SETTLE_GRACE):
                record = self._propose(record)
                continue
            # Another writer's binding in flight: it moves the record.
            self.waited += 1
            cas.conflict_pause(self.waited)
            record = book.owners.get(self.owner)
        if self.waited:
            raise exception.StoreConflict(
                f'pool {self.pool.name}: another writer has been binding '
                f'{self.owner} to {(record or {}).get("spec", {}).get("address")}'
                f' since {(record or {}).get("spec", {}).get("boundAt")} and '
                f'has not finished; try again (any writer takes over '
                f'{SETTLE_GRACE} s after that)')
        raise exception.StoreConflict(
            f'pool {self.pool.name}: {book.attempts} attempts lost to '
            f'concurrent writers while allocating for {self.owner}; '
            'try again')
