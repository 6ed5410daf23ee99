"""Held addresses: one small ``AddressClaim`` object per address.

An address is held by creating the object named after the L2 scope and
the address (:func:`~vmetal_ironic.store.kube_names.claim_name`), in
``[vmetal_kubernetes]namespace``. The name is the uniqueness: the API
server creates one object per name, so whatever pool, prefix or range two
writers allocate from, only one of them gets ``192.0.2.7`` and the other
is told 409 AlreadyExists and tries the next address. Gateways, the
addresses of custom network-data documents and the infrastructure
addresses of ``[vmetal]reserved_addresses`` are claims in the same
namespace of names, so no pool hands them out.

One owner holds at most one address: its ``AddressOwner`` record
(:mod:`.owners`) points at its claim and is created once, then changed
only by compare-and-swap. Two writers for the same owner (a property
changed while two conductors run) may each create a claim; only one binds
the owner to it, the other deletes its claim and answers with the winner's
address. Looking an owner up is two GETs by name (record, claim), never a
list. A claim no record points at (a crash between the two creates) is
freed by the reconciler once it is older than a grace period.

Claims are deleted with a UID precondition, so a release never removes a
claim someone else created for the same address meanwhile.
"""

import random
import time

import netaddr
from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.ipam import allocator as ipam_allocator
from vmetal_ironic.ipam import errors as ipam_errors
from vmetal_ironic.store import base
from vmetal_ironic.store import kube_names as names
from vmetal_ironic.store.kubernetes import collection
from vmetal_ironic.store.kubernetes import owners as owners_mod

LOG = log.getLogger(__name__)

PURPOSE_ALLOCATION = 'allocation'
PURPOSE_NETWORK_DATA = 'network-data'
PURPOSE_GATEWAY = 'gateway'
PURPOSE_RESERVED = 'reserved'
# Free addresses above which a writer that lost a race moves elsewhere in
# the pool (see Addresses.allocate).
ROOMY = 1024


def _int(text):
    try:
        return int(netaddr.IPAddress(text, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None


def spec_of(claim):
    return (claim or {}).get('spec') or {}


def to_allocation(claim, pool_key=None):
    spec = spec_of(claim)
    return base.Allocation(owner=spec.get('owner'),
                           pool_key=pool_key or spec.get('pool') or '',
                           address=spec.get('address'), mac=spec.get('mac'))


def host_ref(host):
    """``<namespace>/<name>`` of a BareMetalHost dict, or ``None``."""
    if host is None:
        return None
    return f'{host["metadata"]["namespace"]}/{host["metadata"]["name"]}'


def claim_body(namespace, scope, address, owner, purpose, pool_key=None,
               mac=None, host=None):
    """The ``AddressClaim`` object holding ``address`` for ``owner``.

    :param host: the BareMetalHost the address is used on, so that the
        reconciler can tell when its holder let go of it.
    """
    labels = dict(names.MANAGED_BY)
    labels.update({
        names.LABEL_COMPONENT: names.COMPONENT_ADDRESS,
        names.LABEL_SCOPE: scope,
        names.LABEL_OWNER: owner.label,
        names.LABEL_OWNER_KIND: owner.kind.lower(),
        names.LABEL_PURPOSE: purpose,
    })
    if pool_key:
        labels[names.LABEL_POOL] = names.pool_label(pool_key)
    spec = {'scope': scope, 'address': str(address), 'owner': str(owner),
            'purpose': purpose}
    if pool_key:
        spec['pool'] = pool_key
    if mac:
        spec['mac'] = mac
    if host is not None:
        spec['host'] = host_ref(host)
    return {'apiVersion': f'{names.API_GROUP}/{names.API_VERSION}',
            'kind': names.ADDRESS_KIND,
            'metadata': {'name': names.claim_name(scope, address),
                         'namespace': namespace, 'labels': labels},
            'spec': spec}


class Addresses:
    """The address claims of one scope.

    :param api: a :class:`~vmetal_ironic.store.kube_client.Api`.
    :param namespace: where the claims live.
    :param scope: ``[vmetal]address_scope``.
    :param reserved: ``[vmetal]reserved_addresses``.
    :param attempts: bound of create attempts per allocation.
    :param cache_seconds: how long the list of held addresses is trusted
        before it is read again; an address seen free in it is only a
        candidate, the create decides.
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
        self._infrastructure = set()
        # Owner -> name of a claim this process was creating or binding
        # when the API server stopped answering: the claim may exist, and a
        # retry takes it back instead of leaving it unbound until the
        # reconciler's grace period frees it.
        self._uncertain = {}
        # Per pool, the allocator proposing candidates; rebuilt whenever
        # the list of held addresses is read again.
        self._allocators = {}
        self._generation = 0
        self.owners = owners_mod.Owners(api, namespace, scope)
        self.claims = collection.Collection(api, names.ADDRESS_API,
                                            names.ADDRESS_KIND, namespace)

    # -- API calls ----------------------------------------------------------

    def create(self, body):
        """:returns: the created claim, or ``None`` if the name is taken."""
        return self.claims.create(body)

    def read(self, name):
        return self.claims.get(name)

    def list(self, selector, cached=False):
        """Every claim matching ``selector``, page by page."""
        return self.claims.list(selector, cached=cached)[1]

    def delete(self, claim):
        """Delete exactly this claim (UID precondition); idempotent."""
        self.claims.delete(claim)

    # -- lookups -------------------------------------------------------------

    def _scope_selector(self):
        return (f'{names.LABEL_COMPONENT}={names.COMPONENT_ADDRESS},'
                f'{names.LABEL_SCOPE}={self.scope}')

    def current(self, owner):
        """``(record, claim)`` of ``owner``: its AddressOwner record and the
        claim it points at, ``claim`` ``None`` when the record is missing
        or stale (its claim gone or replaced)."""
        record = self.owners.get(owner)
        if record is None:
            return None, None
        spec = record.get('spec') or {}
        claim = self.read(spec.get('claim') or '') if spec.get('claim') else None
        if claim is None or claim['metadata'].get('uid') != spec.get(
                'claimUID'):
            return record, None
        return record, claim

    def all_claims(self):
        return self.list(self._scope_selector())

    def _used_addresses(self, refresh=False):
        now = time.monotonic()
        if (refresh or self._used is None
                or now - self._used_at > self.cache_seconds):
            self._used = {value for value in
                          (_int(spec_of(c).get('address'))
                           for c in self.list(self._scope_selector(),
                                              cached=True))
                          if value is not None}
            self._used_at = now
            self._generation += 1
        return self._used

    def _allocator(self, pool, used):
        """The pool's candidate allocator, kept between allocations so a
        process that moved up the pool stays there until the next read."""
        generation, allocator = self._allocators.get(pool.name, (None, None))
        if allocator is None or generation != self._generation:
            allocator = ipam_allocator.Allocator(pool, used)
            self._allocators[pool.name] = (self._generation, allocator)
        return allocator

    # -- infrastructure -----------------------------------------------------

    def _hold_infrastructure(self, kind, purpose, address, pool):
        name = names.claim_name(self.scope, address)
        if name in self._infrastructure:
            return
        holder = owner_mod.for_infrastructure(kind, self.scope, address)
        body = claim_body(self.namespace, self.scope, address, holder, purpose)
        if self.create(body) is None:
            existing = self.read(name)
            owner_text = spec_of(existing).get('owner') if existing else None
            if existing is not None and not owner_mod.parse(
                    owner_text).is_infrastructure:
                what = ('gateway' if purpose == PURPOSE_GATEWAY
                        else 'reserved address ([vmetal]reserved_addresses)')
                raise ipam_errors.AddressTaken(
                    f'{what} {address} of pool {pool.name} is held by '
                    f'{owner_text}; release that owner or change the pool')
        self._infrastructure.add(name)

    def hold_infrastructure(self, pool):
        """Claim the pool's gateway and the reserved addresses inside it
        (once per process and address)."""
        self._hold_infrastructure(owner_mod.GATEWAY, PURPOSE_GATEWAY,
                                  str(pool.gateway), pool)
        for address in self.reserved:
            if netaddr.IPAddress(address) in pool.network:
                self._hold_infrastructure(owner_mod.RESERVED,
                                          PURPOSE_RESERVED, address, pool)

    # -- allocation -----------------------------------------------------------

    @staticmethod
    def _held(claim, pool, owner):
        spec = spec_of(claim)
        address = spec.get('address')
        if (spec.get('purpose') == PURPOSE_ALLOCATION
                and _int(address) is not None and pool.contains(address)):
            return to_allocation(claim, pool.key)
        where = (f'pool {spec.get("pool")}' if spec.get('pool')
                 else 'its network-data document')
        raise ipam_errors.OwnerElsewhere(
            f'owner {owner} already holds {address} from {where}, which '
            f'pool {pool.name} may not hand out; release it first')

    def _recover(self, owner, record):
        """The claim an interrupted allocation of ``owner`` left behind,
        bound to it now; ``None`` when there is none."""
        name = self._uncertain.get(str(owner))
        if name is None:
            return None
        claim = self.read(name)
        self._uncertain.pop(str(owner), None)
        spec = spec_of(claim) if claim is not None else {}
        if (spec.get('owner') != str(owner)
                or spec.get('purpose') != PURPOSE_ALLOCATION):
            return None
        return self._bind(owner, claim, record)

    def _bind(self, owner, claim, record):
        """Bind ``owner`` to the claim just created; if another writer
        bound it first, give the claim back.

        :returns: the claim that stands for the owner, or ``None`` when the
            other writer's binding is itself stale (try again).
        """
        if self.owners.bind(owner, claim, record):
            return claim
        self.delete(claim)
        if self._used is not None:
            self._used.discard(_int(spec_of(claim)['address']))
        return self.current(owner)[1]

    def _adopt(self, previous, owner, pool, host):
        """Hand ``previous``'s address in ``pool`` over to ``owner`` (the
        Machine that claimed the host): bind the owner to that claim, then
        relabel the claim and drop ``previous``'s record.

        :returns: the claim, or ``None`` when there is nothing to adopt.
        """
        old_record, claim = self.current(previous)
        if claim is None or spec_of(claim).get('purpose') != (
                PURPOSE_ALLOCATION) or not pool.contains(
                    spec_of(claim).get('address')):
            return None
        if not self.owners.bind(owner, claim):
            return self.current(owner)[1]
        self.claims.patch(
            claim['metadata']['name'],
            {'metadata': {'labels': {
                names.LABEL_OWNER: owner.label,
                names.LABEL_OWNER_KIND: owner.kind.lower()}},
             'spec': {'owner': str(owner), 'host': host_ref(host)}})
        self.owners.delete(old_record)
        return claim

    def allocate(self, pool, owner, mac=None, previous=None, host=None):
        """Give ``owner`` an address from ``pool``, or the one it holds.

        :param previous: an owner whose address in ``pool`` ``owner`` takes
            over when it holds none itself (the host a Machine claims).
        :param host: the BareMetalHost the address is used on.
        :raises vmetal_ironic.ipam.PoolExhausted: no free address.
        :raises vmetal_ironic.ipam.errors.OwnerElsewhere: the owner holds
            an address this pool may not hand out.
        :raises vmetal_ironic.exception.StoreConflict: lost every attempt.
        """
        record, held = self.current(owner)
        if held is not None and spec_of(held).get('purpose') == (
                PURPOSE_ALLOCATION):
            return self._held(held, pool, owner)
        if record is None and previous is not None:
            adopted = self._adopt(previous, owner, pool, host)
            if adopted is not None:
                return self._held(adopted, pool, owner)
        recovered = self._recover(owner, record)
        if recovered is not None:
            return self._held(recovered, pool, owner)
        self.hold_infrastructure(pool)
        used = self._used_addresses()
        allocator = self._allocator(pool, used)
        refreshed = False
        lost = 0
        for _ in range(self.attempts):
            try:
                value = allocator.allocate()
            except ipam_errors.PoolExhausted:
                if refreshed and not lost:
                    raise
                # The cached view may hold addresses freed since, and a
                # move up the pool passes the free ones below.
                refreshed, lost = True, 0
                used = self._used_addresses(refresh=True)
                allocator = self._allocator(pool, used)
                continue
            address = str(netaddr.IPAddress(value))
            self._uncertain[str(owner)] = names.claim_name(self.scope,
                                                           address)
            created = self.create(claim_body(
                self.namespace, self.scope, address, owner,
                PURPOSE_ALLOCATION, pool.key, mac, host))
            used.add(value)
            if created is None:
                self._uncertain.pop(str(owner), None)
                # Taken by someone else. Another writer is most likely
                # taking the next addresses too: rather than queue behind
                # it, this process moves to a random part of a roomy pool
                # and goes on upwards from there (lowest first while
                # alone). In a nearly full pool it learns address by
                # address instead, so the last free ones are still found.
                lost += 1
                if pool.size - pool.count_used(used) > ROOMY:
                    allocator.start_at(random.randint(  # noqa: S311
                        pool.intervals[0][0], pool.intervals[-1][1]))
                elif lost % 4 == 0:
                    # Writers ahead take addresses faster than losing
                    # one create at a time teaches them: read them again.
                    used = self._used_addresses(refresh=True)
                    allocator = self._allocator(pool, used)
                continue
            standing = self._bind(owner, created, record)
            self._uncertain.pop(str(owner), None)
            if standing is None:
                record, _ = self.current(owner)
                continue
            if standing['metadata']['uid'] != created['metadata']['uid']:
                return self._held(standing, pool, owner)
            # A custom document's address the owner held before goes back
            # now that the pool gives it one (it holds only one address).
            if held is not None:
                self.delete(held)
            LOG.info('Allocated %(address)s from pool %(pool)s to %(owner)s',
                     {'address': address, 'pool': pool.name, 'owner': owner})
            return to_allocation(created, pool.key)
        raise exception.StoreConflict(
            f'pool {pool.name}: {self.attempts} addresses in a row were '
            f'taken by concurrent writers while allocating for {owner}; '
            'try again')

    def hold(self, owner, address, source):
        """Hold an address named explicitly (a custom network-data
        document) for ``owner``, instead of any it held.

        :param source: where the address comes from, for the error.
        :raises vmetal_ironic.ipam.errors.AddressTaken: another owner
            holds it.
        """
        record, held = self.current(owner)
        if held is not None and spec_of(held).get('address') == address:
            return to_allocation(held)
        mine = self.create(claim_body(self.namespace, self.scope, address,
                                      owner, PURPOSE_NETWORK_DATA))
        if mine is None:
            mine = self.read(names.claim_name(self.scope, address))
            holder = spec_of(mine).get('owner')
            if holder != str(owner):
                raise ipam_errors.AddressTaken(
                    f'{source} names {address}, which {holder} holds; '
                    'choose another address')
        standing = self._bind(owner, mine, record)
        if standing is None or standing['metadata']['uid'] != (
                mine['metadata']['uid']):
            raise exception.StoreConflict(
                f'{owner} was given another address while {source} was '
                'saved; try again')
        if held is not None:
            self.delete(held)
        return to_allocation(mine)

    def release(self, owner):
        """Free the owner's address: the claim, then the record.

        :returns: the released allocation, or ``None``.
        """
        record, claim = self.current(owner)
        if claim is not None:
            self.delete(claim)
            value = _int(spec_of(claim).get('address'))
            if self._used is not None:
                self._used.discard(value)
            # Offered again, lowest first, by this process's allocators.
            for _, allocator in self._allocators.values():
                allocator.release(value)
        if record is not None:
            self.owners.delete(record)
        return to_allocation(claim) if claim is not None else None

    def get(self, owner):
        claim = self.current(owner)[1]
        return to_allocation(claim) if claim is not None else None

    def list_allocations(self, pool_key=None):
        result = []
        for claim in self.all_claims():
            spec = spec_of(claim)
            if spec.get('purpose') not in (PURPOSE_ALLOCATION,
                                           PURPOSE_NETWORK_DATA):
                continue
            if pool_key is not None and spec.get('pool') != pool_key:
                continue
            if _int(spec.get('address')) is None:
                continue
            result.append(to_allocation(claim))
        result.sort(key=lambda a: (a.pool_key, _int(a.address)))
        return result
