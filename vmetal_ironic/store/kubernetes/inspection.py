"""Inspection leases every DHCP agent of a scope shares.

A host no Machine has claimed yet boots from the agents'
``[vmetal_dhcp_agent]inspection_range``. Its lease is an ``AddressClaim``
like any other held address, named ``<scope>.<address>`` (so neither two
MACs nor a pool allocation can ever hold that address at once, whatever
agents race), purpose ``inspection``, owner ``Inspection/<mac>`` and
``spec.expires`` (epoch seconds). The owner's ``AddressOwner`` record
binds the MAC to exactly one lease, by the protocol every address follows
(:mod:`.addresses`: the claim first, then the record): of two agents
answering one broadcast DISCOVER, the one whose bind comes second adopts
the first one's lease, so both offer the same address.

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
from vmetal_ironic.store.kubernetes import kube_names as names
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
    if addresses.address_value(address) is None or '.' not in str(address):
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

    :param book: the scope's :class:`~.addresses.Addresses`, whose claims
        and owner records the leases are.
    :param connect_timeout: seconds, for watch requests.
    """

    def __init__(self, book, connect_timeout=5.0):
        self.book = book
        self.claims = book.claims
        self.connect_timeout = connect_timeout
        self.selector = (f'{book.selector},'
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
                self.book.api, names.ADDRESS_API, self.book.namespace,
                self.selector, revision, timeout, self.connect_timeout,
                'inspection leases'):
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

    def _bind(self, owner, claim, read_first=False):
        """Bind ``owner`` to ``claim`` unless it is bound already, by the
        store's one protocol (:func:`~.addresses.bind`), without reading
        the claim back: the collect step never frees a lease.

        :param read_first: read the record before writing it (``claim``
            is another agent's, which has most likely bound it already).
        :returns: the claim the owner is bound to, or ``None`` (raced
            again; the caller moves on).
        """
        record = None
        if read_first:
            record, standing = self.book.current(owner, known=claim)
            if standing is not None:
                return standing
        try:
            return addresses.bind(self.book, owner, claim, record=record,
                                  read_back=False, rounds=3)[0]
        except exception.StoreConflict:
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
        body = addresses.claim_body(self.book.namespace, self.book.scope,
                                    address, owner, PURPOSE_INSPECTION,
                                    mac=mac)
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
        renewed = self.claims.swap(lease.key, lease.version,
                                   {'spec': {'expires': int(expires)}})
        return self._parse(renewed)[0] if renewed is not None else None

    def decline(self, lease, expires):
        """The client found ``lease``'s address in use: keep the address
        held until ``expires`` for nobody, and free the MAC to get another
        (its record goes).

        :returns: the declined lease, or ``None`` if it changed or went.
        """
        declined = self.claims.swap(lease.key, lease.version, {
            'spec': {'declined': True, 'expires': int(expires)}})
        if declined is None:
            return None
        self._unbind(lease)
        return self._parse(declined)[0]

    def _unbind(self, lease):
        """Delete the MAC's record while it points at ``lease``'s claim."""
        record = self.book.owners.get(owner_of(lease.mac))
        if addresses.spec_of(record).get('claim') == lease.key:
            self.book.owners.delete(record)

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
