"""Inspection leases every DHCP agent of a scope shares.

A host no Machine has claimed yet boots from the agents'
``[vmetal_dhcp_agent]inspection_range``. Its lease is an ``AddressClaim``
like any other held address, named ``<scope>.<address>`` (so neither two
MACs nor a pool allocation can ever hold that address at once, whatever
agents race), purpose ``inspection``, owner ``Inspection/<mac>`` and
``spec.expires`` (epoch seconds). The owner's ``AddressOwner`` record
binds the MAC to exactly one lease: of two agents answering one broadcast
DISCOVER, the one whose bind comes second adopts the first one's lease,
so both offer the same address.

A renewal is a compare-and-swap of ``expires`` on the claim's
``resourceVersion``; a removal (expired, or the MAC got a reservation)
deletes the claim only at the version read, so a renewal that won the race
keeps the lease, then deletes the record only while it still points at
that claim.
"""

from vmetal_ironic import exception
from vmetal_ironic import network_data
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.store import base
from vmetal_ironic.store.kubernetes import addresses
from vmetal_ironic.store.kubernetes import kube_client
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import owners as owners_mod
from vmetal_ironic.store.kubernetes import resources

PURPOSE_INSPECTION = 'inspection'
INSPECTION = 'Inspection'


def owner_of(mac):
    """The owner holding ``mac``'s inspection lease."""
    return owner_mod.Owner(INSPECTION, None, mac)


def lease_of(claim):
    """The :class:`~vmetal_ironic.store.base.InspectionLease` a claim
    stands for.

    :raises vmetal_ironic.exception.InvalidProperty: naming the claim and
        its bad value.
    """
    metadata = (claim or {}).get('metadata') or {}
    spec = addresses.spec_of(claim)
    where = f'AddressClaim {metadata.get("name")}'
    try:
        mac = network_data.normalize_mac(spec.get('mac'))
    except exception.InvalidProperty as exc:
        raise exception.InvalidProperty(f'{where}: spec.mac: {exc}') from None
    if spec.get('owner') != str(owner_of(mac)):
        raise exception.InvalidProperty(
            f'{where}: spec.owner {spec.get("owner")!r} is not '
            f'{owner_of(mac)}')
    address = spec.get('address')
    if addresses._int(address) is None or '.' not in str(address):
        raise exception.InvalidProperty(
            f'{where}: spec.address {address!r} is not an IPv4 address')
    expires = spec.get('expires')
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise exception.InvalidProperty(
            f'{where}: spec.expires {expires!r} is not epoch seconds')
    return base.InspectionLease(mac=mac, address=str(address),
                                expires=float(expires),
                                version=str(metadata.get('resourceVersion')),
                                key=str(metadata.get('name')),
                                declined=spec.get('declined') is True)


class InspectionLeases:
    """The inspection leases of one scope.

    :param api: a :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`.
    :param namespace: the store's namespace.
    :param scope: ``[vmetal]address_scope``.
    :param connect_timeout: seconds, for watch requests.
    """

    def __init__(self, api, namespace, scope, connect_timeout=5.0):
        self.api = api
        self.namespace = namespace
        self.scope = scope
        self.connect_timeout = connect_timeout
        self.claims = resources.Collection(api, names.ADDRESS_API,
                                            names.ADDRESS_KIND, namespace)
        self.owners = owners_mod.Owners(api, namespace, scope)
        self.selector = (f'{names.LABEL_COMPONENT}={names.COMPONENT_ADDRESS},'
                         f'{names.LABEL_SCOPE}={scope},'
                         f'{names.LABEL_PURPOSE}={PURPOSE_INSPECTION}')

    # -- following ----------------------------------------------------------

    @staticmethod
    def _parse(claim):
        """``(lease, None)`` or ``(None, reason)``."""
        try:
            return lease_of(claim), None
        except exception.InvalidProperty as exc:
            return None, str(exc)

    def snapshot(self):
        """:returns: ``(revision, leases, rejected)``: the list's position,
        the good leases, and ``{key: reason}`` of the claims that are not."""
        revision, items = self.claims.list(self.selector)
        leases, rejected = [], {}
        for claim in items:
            lease, reason = self._parse(claim)
            if lease is not None:
                leases.append(lease)
            else:
                rejected[str(claim['metadata']['name'])] = reason
        return revision, leases, rejected

    def follow(self, revision, timeout):
        """Changes after ``revision`` for at most ``timeout`` seconds.

        :yields: :class:`~vmetal_ironic.store.base.LeaseChange`; a claim
            that is not a valid lease comes as a removal with the reason.
        """
        for kind, obj, position in resources.watch(
                self.api, names.ADDRESS_API, self.namespace, self.selector,
                revision, timeout, self.connect_timeout, 'inspection leases'):
            key = ((obj or {}).get('metadata') or {}).get('name')
            if kind == 'BOOKMARK':
                yield base.LeaseChange(position)
            elif kind == 'DELETED':
                yield base.LeaseChange(position, removed=key)
            elif kind in ('ADDED', 'MODIFIED'):
                lease, reason = self._parse(obj)
                if lease is None:
                    yield base.LeaseChange(position, removed=key,
                                           rejected=reason)
                else:
                    yield base.LeaseChange(position, changed=lease)

    # -- claiming -------------------------------------------------------------

    def _bound(self, owner, known=None):
        """``(record, claim)``: the owner's record and the claim it is
        bound to, ``claim`` ``None`` when the record is stale.

        :param known: a claim just read; not read again when the record
            points at it.
        """
        record = self.owners.get(owner)
        if record is None:
            return None, None
        spec = record.get('spec') or {}
        if known is not None and known['metadata'].get('uid') == spec.get(
                'claimUID'):
            claim = known
        else:
            claim = (self.claims.get(spec['claim']) if spec.get('claim')
                     else None)
        if claim is None or claim['metadata'].get('uid') != spec.get(
                'claimUID') or addresses.spec_of(claim).get('declined'):
            # Stale: the claim went, or its address was declined (a record
            # left by a decline cut short).
            return record, None
        return record, claim

    def _write_record(self, owner, claim, record):
        """Point the MAC's record at ``claim``, which exists already (a
        lease's claim is made first, so no binder is in flight): create it,
        or replace ``record`` (as read) by compare-and-swap.

        :returns: whether this call wrote it.
        """
        spec = owners_mod.binding(owner, claim)
        if record is None:
            return self.owners.create(owner, spec) is not None
        return self.owners.rebind(record, spec) is not None

    def _bind(self, owner, claim, read_first=False):
        """Bind ``owner`` to ``claim`` unless it is bound already.

        :param read_first: read the record before writing it (``claim``
            is another agent's, which has most likely bound it already).
        :returns: the claim the owner is bound to, or ``None`` (raced
            again; the caller moves on).
        """
        record = None
        if read_first:
            record, standing = self._bound(owner, claim)
            if standing is not None:
                return standing
        for _attempt in range(3):
            if self._write_record(owner, claim, record):
                return claim
            record, standing = self._bound(owner, claim)
            if standing is not None:
                return standing
        return None

    def claim(self, mac, candidates, expires):
        """The lease of ``mac``: the one bound to it, or a new one at the
        first free candidate.

        :param candidates: addresses (text) to try in order; the caller
            bounds them.
        :param expires: epoch seconds of a new lease.
        :returns: ``(lease, taken, created)``: the lease, or ``None`` when
            every candidate was taken; ``taken`` lists the candidates held
            by something other than an inspection lease (a pool
            allocation, a gateway), which the caller's feed cannot show;
            ``created`` whether this call made the lease (rather than
            finding another agent's).
        """
        owner = owner_of(mac)
        taken = []
        for address in candidates:
            claim, mine = self._claim_at(owner, mac, address, expires, taken)
            if claim is None:
                continue
            standing = self._bind(owner, claim, read_first=not mine)
            if standing is None:
                if mine:
                    # Nobody's record points at it: left, it would hold
                    # the address for nobody until it expired.
                    self.claims.delete(claim)
                continue
            if standing['metadata']['uid'] != claim['metadata']['uid']:
                # Another agent bound the MAC first: its lease stands,
                # and this one (ours or an agent's) is bound to nobody.
                self.claims.delete(claim)
                mine = False
            lease, reason = self._parse(standing)
            if lease is None:
                raise exception.InvalidProperty(reason)
            return lease, taken, mine
        return None, taken, False

    def _claim_at(self, owner, mac, address, expires, taken):
        """The claim of ``address`` for ``owner``: made here, or made by
        another agent answering the same DISCOVER.

        :param taken: appended ``address`` when a pool allocation or an
            infrastructure address holds it.
        :returns: ``(claim, mine)``; ``claim`` ``None`` when the address
            is someone else's.
        """
        body = addresses.claim_body(self.namespace, self.scope, address,
                                    owner, PURPOSE_INSPECTION, mac=mac)
        body['spec']['expires'] = int(expires)
        # Twice: a claim deleted between our create and our read (a
        # duplicate lease withdrawn, an expiry) left the address free.
        for _attempt in range(2):
            created = self.claims.create(body)
            if created is not None:
                return created, True
            existing = self.claims.get(body['metadata']['name'])
            if existing is None:
                continue
            spec = addresses.spec_of(existing)
            if spec.get('owner') == str(owner) and not spec.get('declined'):
                return existing, False
            if spec.get('purpose') != PURPOSE_INSPECTION:
                taken.append(address)
            return None, False
        return None, False

    def renew(self, lease, expires):
        """Move ``lease``'s expiry to ``expires`` if nobody changed it.

        :returns: the renewed lease, or ``None`` (gone or changed: read
            the feed again).
        """
        try:
            renewed = self.claims.patch(lease.key, {
                'metadata': {'resourceVersion': lease.version},
                'spec': {'expires': int(expires)}})
        except kube_client.ApiError as exc:
            if exc.status in (404, 409):
                return None
            raise
        return self._parse(renewed)[0]

    def decline(self, lease, expires):
        """The client found ``lease``'s address in use: keep the address
        held until ``expires`` for nobody, and free the MAC to get another
        (its record goes).

        :returns: the declined lease, or ``None`` if it changed or went.
        """
        try:
            declined = self.claims.patch(lease.key, {
                'metadata': {'resourceVersion': lease.version},
                'spec': {'declined': True, 'expires': int(expires)}})
        except kube_client.ApiError as exc:
            if exc.status in (404, 409):
                return None
            raise
        self._unbind(lease)
        return self._parse(declined)[0]

    def _unbind(self, lease):
        """Delete the MAC's record while it points at ``lease``'s claim."""
        record = self.owners.get(owner_of(lease.mac))
        if record is not None and (record.get('spec') or {}).get(
                'claim') == lease.key:
            self.owners.delete(record)

    def remove(self, lease):
        """Take ``lease`` back (expired, or its MAC has a reservation).

        :returns: ``True`` if this call removed it; ``False`` when it was
            renewed or removed meanwhile.
        """
        if not self.claims.delete_version(lease.key, lease.version):
            return False
        if not lease.declined:
            self._unbind(lease)
        return True
