"""Inspection leases of the local store: rows of the allocations table.

A lease is a row of the same ``allocations`` table as every held address
(purpose ``inspection``, owner ``Inspection/<mac>``, ``expires``), so the
table's keys give what the Kubernetes store gets from object names:
``PRIMARY KEY (scope, address)`` refuses a second MAC (or a pool
allocation) on a leased address, ``owner UNIQUE`` a second lease for one
MAC. A claim reads and inserts in one ``BEGIN IMMEDIATE`` transaction; a
renewal or removal changes the row only at the ``version`` it read. Every
change moves the ``inspection`` counter, which the agents poll: several
agents on one database (one machine, or a shared file system SQLite
supports) share the range safely.
"""

import time

import netaddr

from vmetal_ironic import exception
from vmetal_ironic import network_data
from vmetal_ironic.store import base

PURPOSE_INSPECTION = 'inspection'
INSPECTION = 'Inspection'
# Owner of a declined lease's row: frees the MAC's owner slot.
DECLINED = 'Declined'
# The counter the agents' feed polls.
INSPECTION_COUNTER = 'inspection'
SELECT_SCOPE = ('SELECT address, owner, mac, expires, version FROM '
                'allocations WHERE scope = ? AND purpose = ?')
SELECT_OWNER = ('SELECT address, owner, mac, expires, version FROM '
                'allocations WHERE owner = ?')


def _lease(scope, row):
    """The lease of a row, or raise InvalidProperty naming the bad value."""
    address, owner, mac, expires, version = row
    text = str(netaddr.IPAddress(address))
    where = f'local inspection lease {scope}.{text}'
    try:
        mac = network_data.normalize_mac(mac)
    except exception.InvalidProperty as exc:
        raise exception.InvalidProperty(f'{where}: mac: {exc}') from None
    declined = owner == f'{DECLINED}/{scope}.{text}'
    if (owner != f'{INSPECTION}/{mac}' and not declined) or expires is None:
        raise exception.InvalidProperty(
            f'{where}: owner {owner!r} / expires {expires!r} is no lease')
    return base.InspectionLease(mac=mac, address=text, expires=expires,
                                version=str(version), key=f'{scope}.{text}',
                                declined=declined)


class LocalLeases:
    """The inspection leases of a :class:`~vmetal_ironic.store.local.
    LocalStore`'s scope (the same interface as the Kubernetes store's)."""

    def __init__(self, store):
        self.store = store
        self.scope = store.scope

    def _revision(self, db):
        return self.store._counter(db, INSPECTION_COUNTER)

    def snapshot(self):
        """:returns: ``(revision, leases, rejected)``."""
        with self.store._transaction(write=False) as db:
            revision = self._revision(db)
            rows = db.execute(SELECT_SCOPE, (
                self.scope, PURPOSE_INSPECTION)).fetchall()
        leases, rejected = [], {}
        for row in rows:
            try:
                leases.append(_lease(self.scope, row))
            except exception.InvalidProperty as exc:
                rejected[f'{self.scope}.{netaddr.IPAddress(row[0])}'] = (
                    str(exc))
        return revision, leases, rejected

    def follow(self, revision, timeout):
        """Polls: waits ``timeout``, then asks for a new snapshot if the
        leases changed."""
        self.store._poll_wait.wait(timeout)
        with self.store._transaction(write=False) as db:
            moved = self._revision(db) != revision
        if moved:
            raise exception.RevisionExpired(
                f'inspection leases moved past revision {revision}')
        return
        yield  # a generator, like the stores that watch

    def claim(self, mac, candidates, expires):
        """See :meth:`vmetal_ironic.store.kubernetes.inspection.
        InspectionLeases.claim`."""
        owner = f'{INSPECTION}/{mac}'
        taken = []
        with self.store._transaction() as db:
            row = db.execute(SELECT_OWNER, (owner,)).fetchone()
            if row is not None:
                return _lease(self.scope, row), [], False
            for address in candidates:
                value = int(netaddr.IPAddress(address))
                if value in self.store.reserved:
                    taken.append(address)
                    continue
                holder = db.execute(
                    'SELECT purpose FROM allocations WHERE scope = ? AND '
                    'address = ?', (self.scope, value)).fetchone()
                if holder is not None:
                    # Another MAC's lease is in the feed already.
                    if holder[0] != PURPOSE_INSPECTION:
                        taken.append(address)
                    continue
                db.execute(
                    'INSERT INTO allocations (scope, address, pool, owner, '
                    'mac, purpose, created_at, expires) VALUES (?, ?, ?, ?, '
                    '?, ?, ?, ?)', (self.scope, value, PURPOSE_INSPECTION,
                                    owner, mac, PURPOSE_INSPECTION,
                                    time.time(), float(expires)))
                self.store._bump(db, INSPECTION_COUNTER)
                # Pool allocations keep a copy of the held addresses.
                self.store._bump(db, 'allocations')
                return _lease(self.scope, (value, owner, mac, float(expires),
                                           0)), taken, True
        return None, taken, False

    def _owner(self, lease):
        if lease.declined:
            return f'{DECLINED}/{self.scope}.{lease.address}'
        return f'{INSPECTION}/{lease.mac}'

    def _where(self, lease):
        return (self.scope, int(netaddr.IPAddress(lease.address)),
                self._owner(lease), int(lease.version))

    def decline(self, lease, expires):
        """:returns: the declined lease (held for nobody until
        ``expires``; the MAC's owner slot free), or ``None``."""
        declined = base.InspectionLease(
            mac=lease.mac, address=lease.address, expires=float(expires),
            version=str(int(lease.version) + 1), key=lease.key,
            declined=True)
        with self.store._transaction() as db:
            changed = db.execute(
                'UPDATE allocations SET owner = ?, expires = ?, version = '
                'version + 1 WHERE scope = ? AND address = ? AND owner = ? '
                'AND version = ?', (self._owner(declined), float(expires),
                                    *self._where(lease))).rowcount
            if not changed:
                return None
            self.store._bump(db, INSPECTION_COUNTER)
        return declined

    def renew(self, lease, expires):
        """:returns: the renewed lease, or ``None`` if it changed or went."""
        with self.store._transaction() as db:
            changed = db.execute(
                'UPDATE allocations SET expires = ?, version = version + 1 '
                'WHERE scope = ? AND address = ? AND owner = ? AND '
                'version = ?', (float(expires), *self._where(lease))).rowcount
            if not changed:
                return None
            self.store._bump(db, INSPECTION_COUNTER)
        return base.InspectionLease(
            mac=lease.mac, address=lease.address, expires=float(expires),
            version=str(int(lease.version) + 1), key=lease.key)

    def remove(self, lease):
        """:returns: ``True`` if this call removed it."""
        with self.store._transaction() as db:
            deleted = db.execute(
                'DELETE FROM allocations WHERE scope = ? AND address = ? AND '
                'owner = ? AND version = ?', self._where(lease)).rowcount
            if deleted:
                self.store._bump(db, INSPECTION_COUNTER)
                self.store._bump(db, 'allocations')
        return bool(deleted)
