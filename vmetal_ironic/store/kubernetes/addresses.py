"""Held addresses: one small ``AddressClaim`` object per address.

An address is held by creating the object named after the L2 scope and
the address (:func:`~vmetal_ironic.store.kubernetes.kube_names.claim_name`), in
``[vmetal_kubernetes]namespace``. The name is the uniqueness: the API
server creates one object per name, so whatever pool, prefix or range two
writers allocate from, only one of them gets ``192.0.2.7`` and the other
is told 409 AlreadyExists and tries the next address. Gateways, the
addresses of custom network-data documents and the infrastructure
addresses of ``[vmetal]reserved_addresses`` are claims in the same
namespace of names, so no pool hands them out.

One owner holds at most one address: its ``AddressOwner`` record
(:mod:`.owners`) binds its claim by UID and is created once, then changed
only by compare-and-swap. The claim is always created first and the
record bound to it second (:mod:`.allocation`), for every kind of address
an owner holds. Looking an owner up is two GETs by name (record, claim),
never a list. A claim no record binds (a writer stopped half way) is
settled by the controller's collect step, without a clock.

Claims are deleted with a UID precondition, so a release never removes a
claim someone else created for the same address meanwhile; a release
deletes the claim first and the record second, so a record may name a
claim that is gone (it holds nothing), never the reverse.
"""

import threading
import time

import netaddr
from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.ipam import allocator as ipam_allocator
from vmetal_ironic.ipam import errors as ipam_errors
from vmetal_ironic.store import base
from vmetal_ironic.store.kubernetes import allocation as allocation_mod
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import owners as owners_mod
from vmetal_ironic.store.kubernetes import resources

LOG = log.getLogger(__name__)

PURPOSE_ALLOCATION = names.PURPOSE_ALLOCATION
PURPOSE_NETWORK_DATA = names.PURPOSE_NETWORK_DATA
PURPOSE_GATEWAY = names.PURPOSE_GATEWAY
PURPOSE_RESERVED = names.PURPOSE_RESERVED


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
    """``<namespace>/<name>`` of a BareMetalHost dict (or that text
    itself), or ``None``."""
    if host is None or isinstance(host, str):
        return host
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
    if host:
        spec['host'] = host_ref(host)
    return {'apiVersion': f'{names.API_GROUP}/{names.API_VERSION}',
            'kind': names.ADDRESS_KIND,
            'metadata': {'name': names.claim_name(scope, address),
                         'namespace': namespace, 'labels': labels},
            'spec': spec}


class Addresses:
    """The address claims of one scope.

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
        self.owners = owners_mod.Owners(api, namespace, scope)
        self.claims = resources.Collection(api, names.ADDRESS_API,
                                            names.ADDRESS_KIND, namespace)

    # -- API calls ----------------------------------------------------------

    def claim_body(self, address, owner, pool_key=None, mac=None, host=None,
                   purpose=PURPOSE_ALLOCATION):
        return claim_body(self.namespace, self.scope, address, owner,
                          purpose or PURPOSE_ALLOCATION, pool_key, mac, host)

    def create(self, body):
        """:returns: the created claim, or ``None`` if the name is taken."""
        return self.claims.create(body)

    def read(self, name):
        return self.claims.get(name) if name else None

    def list(self, selector, cached=False, slim=False):
        """Every claim matching ``selector``, page by page (``slim``: see
        :meth:`~.resources.Collection.list`)."""
        return self.claims.list(selector, cached=cached, slim=slim)[1]

    def delete(self, claim):
        """Delete exactly this claim (UID precondition); idempotent."""
        self.claims.delete(claim)

    def hand_over(self, claim, owner, host):
        """Make ``claim`` (as read) ``owner``'s, by compare-and-swap.

        :raises vmetal_ironic.store.kubernetes.kube_client.ApiError: 409 when it
            changed since it was read, 404 when it is gone.
        """
        return self.claims.patch(claim['metadata']['name'], {
            'metadata': {
                'resourceVersion': claim['metadata']['resourceVersion'],
                'labels': {names.LABEL_OWNER: owner.label,
                           names.LABEL_OWNER_KIND: owner.kind.lower()}},
            'spec': {'owner': str(owner), 'host': host_ref(host)}})

    @staticmethod
    def value_of(address):
        return _int(address)

    # -- lookups -------------------------------------------------------------

    def _scope_selector(self):
        return (f'{names.LABEL_COMPONENT}={names.COMPONENT_ADDRESS},'
                f'{names.LABEL_SCOPE}={self.scope}')

    def look(self, owner):
        """``(record, claim)``: the owner's record and the claim it names
        as they are, each ``None`` when absent."""
        record = self.owners.get(owner)
        if record is None:
            return None, None
        return record, self.read((record.get('spec') or {}).get('claim'))

    def current(self, owner):
        """``(record, claim)`` of ``owner``: its AddressOwner record and the
        claim it holds, ``claim`` ``None`` when the record is missing or
        holds nothing (see :func:`~.owners.holds`)."""
        record, claim = self.look(owner)
        if not owners_mod.holds(record, claim):
            return record, None
        return record, claim

    def all_claims(self, slim=False):
        return self.list(self._scope_selector(), slim=slim)

    def used_addresses(self, refresh=False):
        """A copy of the addresses the cached view says are held
        (integers): the caller may count and grow it while other threads
        of the process learn theirs."""
        now = time.monotonic()
        if (refresh or self._used is None
                or now - self._used_at > self.cache_seconds):
            used, holders = set(), {}
            for claim in self.list(self._scope_selector(), cached=True):
                spec = spec_of(claim)
                value = _int(spec.get('address'))
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
        value = _int(spec_of(claim).get('address'))
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

    def allocate(self, pool, owner, mac=None, previous=None, host=None):
        """Give ``owner`` an address from ``pool``, or the one it holds
        (see :mod:`.allocation`).

        :param previous: an owner whose address in ``pool`` ``owner`` takes
            over when it holds none itself (the host a Machine claims).
        :param host: the BareMetalHost the address is used on.
        :raises vmetal_ironic.ipam.PoolExhausted: no free address.
        :raises vmetal_ironic.ipam.errors.OwnerElsewhere: the owner holds
            an address this pool may not hand out.
        :raises vmetal_ironic.exception.StoreConflict: lost every attempt.
        """
        self.hold_infrastructure(pool)
        attempt = allocation_mod.Allocation(self, pool, owner, mac, previous,
                                            host)
        claim = attempt.run()
        self._learn(owner, claim)
        if attempt.replaced is not None and attempt.replaced[
                'metadata']['uid'] != claim['metadata']['uid']:
            # A custom document's address the owner held before goes back
            # now that the pool gives it one (it holds only one address).
            self.delete(attempt.replaced)
            self._learn(None, attempt.replaced)
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
                          PURPOSE_NETWORK_DATA)
        mine = self.create(body)
        if mine is None:
            # Taken, or the owner's own (this create's answer lost, or
            # another writer's for the same document): read back.
            mine = self.read(names.claim_name(self.scope, address))
            holder = spec_of(mine).get('owner')
            if holder != str(owner):
                raise ipam_errors.AddressTaken(
                    f'{source} names {address}, which {holder} holds; '
                    'choose another address')
        standing, replaced = allocation_mod.bind(self, owner, mine,
                                                 replaces=lambda _held: True)
        if standing is None:
            raise exception.StoreConflict(
                f'the claim of {address} for {owner} was freed while '
                f'{source} was saved; try again')
        if replaced is not None:
            self.delete(replaced)
            self._learn(None, replaced)
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
