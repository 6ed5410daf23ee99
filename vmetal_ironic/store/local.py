"""The embedded default store: one SQLite file shared by every process.

Atomicity comes from SQLite transactions, never from Python locks: an
allocation picks a free address of its network and inserts it inside a
single ``BEGIN IMMEDIATE`` transaction, which SQLite serialises across
processes. The table's key is ``(scope, address)``: one address is held
once per L2 (``[vmetal]address_scope``) whatever pool, prefix or range
asked for it, and ``owner`` is UNIQUE, so the database itself refuses a
second holder or a second address. Gateways and
``[vmetal]reserved_addresses`` are rows of the same table. A crash at any
point rolls the transaction back, so there is no half-written allocation.
The free address comes from the process's copy of the held addresses
(:mod:`~vmetal_ironic.store.held_addresses`), trusted only while the
``allocations`` counter, bumped by every write to the table in the same
transaction, shows that no other process wrote since. Each thread gets its
own connection because an sqlite3 connection must not be shared between
threads.
"""

import contextlib
import json
import os
import sqlite3
import threading
import time

import netaddr
from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import network_data
from vmetal_ironic import owner as owner_mod
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.ipam import errors as ipam_errors
from vmetal_ironic.store import base
from vmetal_ironic.store import held_addresses

LOG = log.getLogger(__name__)

PURPOSE_ALLOCATION = 'allocation'
PURPOSE_NETWORK_DATA = 'network-data'
PURPOSE_GATEWAY = 'gateway'
PURPOSE_RESERVED = 'reserved'

ALLOCATIONS = (
    'CREATE TABLE IF NOT EXISTS allocations ('
    ' scope TEXT NOT NULL,'
    ' address INTEGER NOT NULL,'
    ' pool TEXT NOT NULL,'
    ' owner TEXT NOT NULL UNIQUE,'
    ' mac TEXT,'
    " purpose TEXT NOT NULL DEFAULT 'allocation',"
    ' created_at REAL NOT NULL,'
    # Inspection leases only (see local_inspection): expiry, epoch
    # seconds, and a version a renewal or removal compares.
    ' expires REAL,'
    ' version INTEGER NOT NULL DEFAULT 0,'
    ' PRIMARY KEY (scope, address))')
SELECT_OWNER = ('SELECT pool, address, owner, mac, purpose FROM allocations '
                'WHERE owner = ?')
SELECT_HELD = ('SELECT pool, address, owner, mac, purpose FROM allocations '
               "WHERE purpose IN ('allocation', 'network-data')")
SCHEMA = (
    ALLOCATIONS,
    'CREATE TABLE IF NOT EXISTS network_data ('
    ' owner TEXT PRIMARY KEY,'
    ' document TEXT NOT NULL,'
    ' updated_at REAL NOT NULL)',
    'CREATE TABLE IF NOT EXISTS reservations ('
    ' mac TEXT PRIMARY KEY,'
    ' document TEXT NOT NULL,'
    ' owner TEXT,'
    ' address TEXT,'
    ' updated_at REAL NOT NULL)',
    'CREATE TABLE IF NOT EXISTS counters ('
    ' name TEXT PRIMARY KEY,'
    ' value INTEGER NOT NULL)',
)


class LocalStore(base.Store):
    """SQLite implementation of :class:`~vmetal_ironic.store.base.Store`.

    :param conf: an oslo.config object with the ``[vmetal_local_store]``
        group, or ``None`` when ``path`` is given.
    :param path: database path overriding the configuration.
    :raises vmetal_ironic.exception.DeploymentError: the file cannot be
        opened or is not a vmetal database.
    """

    def __init__(self, conf=None, path=None, busy_timeout=None,
                 scope=None, reserved=None):
        group = conf.vmetal_local_store if conf is not None else None
        vmetal = getattr(conf, 'vmetal', None) if conf is not None else None
        self.path = path or group.database
        self.busy_timeout = busy_timeout or (
            group.busy_timeout if group is not None else 30.0)
        self.scope = scope or (vmetal.address_scope if vmetal else 'default')
        self.reserved = tuple(int(netaddr.IPAddress(a)) for a in (
            reserved if reserved is not None
            else (vmetal.reserved_addresses if vmetal else ())))
        self._local = threading.local()
        self._held = held_addresses.HeldAddresses(self.reserved)
        #: Rows the last list_reservations() left out as invalid.
        self.skipped_reservations = 0
        self._create_schema()

    def _create_schema(self):
        # Readers must not need the write lock, so the schema is only
        # written when a table is missing or older.
        with self._transaction(write=False) as db:
            present = {name for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {row[1] for row in db.execute(
                'PRAGMA table_info(allocations)')}
            reservation_columns = {row[1] for row in db.execute(
                'PRAGMA table_info(reservations)')}
        if ({'allocations', 'network_data', 'reservations',
                'counters'} <= present and 'expires' in columns
                and 'owner' in reservation_columns):
            return
        with self._transaction() as db:
            if 'allocations' in present and 'scope' not in columns:
                self._upgrade_allocations(db)
            elif 'allocations' in present and 'expires' not in columns:
                db.execute('ALTER TABLE allocations ADD COLUMN expires REAL')
                db.execute('ALTER TABLE allocations ADD COLUMN version '
                           'INTEGER NOT NULL DEFAULT 0')
            if 'reservations' in present and (
                    'owner' not in reservation_columns):
                db.execute('ALTER TABLE reservations ADD COLUMN owner TEXT')
                db.execute('ALTER TABLE reservations ADD COLUMN address TEXT')
            for statement in SCHEMA:
                db.execute(statement)
            # Copies of the table other processes hold are stale now.
            self._bump(db, 'allocations')

    def _upgrade_allocations(self, db):
        """Move rows keyed by (pool, address) to (scope, address). Rows an
        older version gave twice (overlapping pools) keep the first
        holder; the others are named in a warning for the operator."""
        db.execute('ALTER TABLE allocations RENAME TO allocations_v1')
        db.execute(ALLOCATIONS)
        rows = db.execute('SELECT pool, address, owner, mac, created_at '
                          'FROM allocations_v1 ORDER BY created_at').fetchall()
        for pool, address, owner, mac, created in rows:
            try:
                db.execute(
                    'INSERT INTO allocations (scope, address, pool, owner, '
                    'mac, created_at) VALUES (?, ?, ?, ?, ?, ?)',
                    (self.scope, address, pool, owner, mac, created))
            except sqlite3.IntegrityError:
                LOG.warning('Local store %(path)s: %(owner)s held %(address)s '
                            'also held by an earlier owner (overlapping '
                            'pools); release and allocate it again',
                            {'path': self.path, 'owner': owner,
                             'address': netaddr.IPAddress(address)})
        db.execute('DROP TABLE allocations_v1')

    def _connect(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.busy_timeout,
                                 isolation_level=None)
            db.execute('PRAGMA journal_mode=WAL')
            db.execute('PRAGMA synchronous=NORMAL')
        except (OSError, sqlite3.Error) as exc:
            raise exception.DeploymentError(
                f'local store {self.path!r} cannot be opened: {exc}; check '
                '[vmetal_local_store]database and the permissions of the '
                'file and its directory') from None
        return db

    @property
    def _db(self):
        db = getattr(self._local, 'db', None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    @contextlib.contextmanager
    def _transaction(self, write=True):
        db = self._db
        try:
            db.execute('BEGIN IMMEDIATE' if write else 'BEGIN')
        except sqlite3.OperationalError as exc:
            raise self._translate(exc) from None
        try:
            yield db
        except sqlite3.Error as exc:
            db.execute('ROLLBACK')
            raise self._translate(exc) from None
        except BaseException:
            db.execute('ROLLBACK')
            raise
        else:
            try:
                db.execute('COMMIT')
            except sqlite3.Error as exc:
                db.execute('ROLLBACK')
                raise self._translate(exc) from None

    def _translate(self, exc):
        """The error of whose fault ``exc`` is: a lock held too long is
        temporary; anything else SQLite refuses (a read-only or damaged
        file, a full disk) only the deployment can fix."""
        text = str(exc)
        if 'locked' in text or 'busy' in text:
            return exception.StoreUnavailable(
                f'local store {self.path!r} stayed locked for '
                f'{self.busy_timeout}s: {text}')
        if 'readonly' in text or 'read-only' in text:
            fix = ('make the file, its directory and its -wal/-shm files '
                   'writable by this process')
        else:
            fix = 'check the file named by [vmetal_local_store]database'
        return exception.DeploymentError(
            f'local store {self.path!r} failed: {text}; {fix}')


    @staticmethod
    def _row_to_allocation(row):
        pool, address, owner, mac = row[:4]
        return base.Allocation(owner=owner, pool_key=pool,
                               address=str(netaddr.IPAddress(address)),
                               mac=mac)

    @staticmethod
    def _check_owner(owner):
        if isinstance(owner, base.Subject):
            return str(owner.holder)
        if not owner or not str(owner).strip():
            raise exception.InvalidProperty('owner must not be empty')
        return str(owner_mod.parse(owner))

    @staticmethod
    def _key(owner):
        """The text a row is keyed by: a subject's holder (here the owner
        itself: this store knows no hosts), or the owner as given."""
        if isinstance(owner, base.Subject):
            return str(owner.holder)
        return str(owner)

    def _holder_of(self, db, value):
        row = db.execute('SELECT owner FROM allocations WHERE scope = ? AND '
                         'address = ?', (self.scope, value)).fetchone()
        return None if row is None else row[0]

    def _hold_infrastructure(self, db, pool):
        """Rows for the pool's gateway and the reserved addresses in it.

        :returns: whether a row was added.
        """
        added = False
        wanted = [(owner_mod.GATEWAY, PURPOSE_GATEWAY, int(pool.gateway))]
        wanted += [(owner_mod.RESERVED, PURPOSE_RESERVED, value)
                   for value in self.reserved
                   if pool.network.first <= value <= pool.network.last]
        for kind, purpose, value in wanted:
            address = netaddr.IPAddress(value)
            holder = self._holder_of(db, value)
            if holder is None:
                db.execute(
                    'INSERT INTO allocations (scope, address, pool, owner, '
                    'purpose, created_at) VALUES (?, ?, ?, ?, ?, ?)',
                    (self.scope, value, pool.key,
                     str(owner_mod.for_infrastructure(kind, self.scope,
                                                      address)),
                     purpose, time.time()))
                added = True
            elif purpose == PURPOSE_GATEWAY and not owner_mod.parse(
                    holder).is_infrastructure:
                raise ipam_errors.AddressTaken(
                    f'gateway {address} of pool {pool.name} is held by '
                    f'{holder}; release that owner or change the pool')
        return added

    def _scope_addresses(self, db):
        return [value for (value,) in db.execute(
            'SELECT address FROM allocations WHERE scope = ?', (self.scope,))]

    def _candidate(self, db, pool):
        """A free address of ``pool`` from the process's copy, read again
        first when another writer changed the table since.

        :returns: ``(address, counter)``.
        """
        generation = self._counter(db, 'allocations')
        if not self._held.current(generation):
            self._held.load(generation, self._scope_addresses(db))
        return self._held.candidate(pool), generation

    def _insert_allocation(self, db, pool, owner, mac):
        """Insert the owner's row at a free address of ``pool``.

        :returns: ``(address, counter before, counter after)``.
        """
        value, before = self._candidate(db, pool)
        row = (self.scope, value, pool.key, owner, mac, time.time())
        insert = ('INSERT INTO allocations (scope, address, pool, owner, mac, '
                  'created_at) VALUES (?, ?, ?, ?, ?, ?)')
        try:
            db.execute(insert, row)
        except sqlite3.IntegrityError:
            # A writer that does not count its writes (an older version)
            # took it: the table decides, the copy is read again and is
            # exact for the rest of this transaction.
            self._held.load(before, self._scope_addresses(db))
            value = self._held.candidate(pool)
            db.execute(insert, (self.scope, value, *row[2:]))
        return value, before, self._bump(db, 'allocations')

    def allocate(self, pool, owner, mac=None):
        owner = self._check_owner(owner)
        with self._transaction() as db:
            row = db.execute(
                SELECT_OWNER, (owner,)).fetchone()
            if row is not None and row[4] == PURPOSE_ALLOCATION:
                held = self._row_to_allocation(row)
                if not pool.contains(held.address):
                    raise ipam_errors.OwnerElsewhere(
                        f'owner {owner!r} already holds {held.address} in pool '
                        f'{held.pool_key}, which pool {pool.name} may not hand '
                        'out; release it first')
                if mac and mac != held.mac:
                    db.execute('UPDATE allocations SET mac = ? WHERE owner = ?',
                               (mac, owner))
                    held = base.Allocation(owner, held.pool_key, held.address, mac)
                return held
            if self._hold_infrastructure(db, pool):
                self._bump(db, 'allocations')
            if row is not None:
                # A custom document's address gives way to the pool's.
                db.execute('DELETE FROM allocations WHERE owner = ?', (owner,))
                self._bump(db, 'allocations')
            # Every address held in the scope counts, whatever pool
            # (prefix, range) it came from: overlapping pools share them.
            try:
                value, before, after = self._insert_allocation(
                    db, pool, owner, mac)
            except BaseException:
                # It may have proposed an address this transaction, now
                # rolled back, never took.
                self._held.forget()
                raise
        self._held.taken(before, after)
        allocation = base.Allocation(owner=owner, pool_key=pool.key,
                                     address=str(netaddr.IPAddress(value)),
                                     mac=mac)
        LOG.info('Allocated %(address)s from pool %(pool)s to %(owner)s',
                 {'address': allocation.address, 'pool': pool.name,
                  'owner': owner})
        return allocation

    def hold(self, owner, address, source):
        owner = self._check_owner(owner)
        value = int(netaddr.IPAddress(address))
        with self._transaction() as db:
            holder = self._holder_of(db, value)
            if holder == owner:
                row = db.execute(SELECT_OWNER, (owner,)).fetchone()
                return self._row_to_allocation(row)
            if holder is not None or value in self.reserved:
                raise ipam_errors.AddressTaken(
                    f'{source} names {address}, which '
                    f'{holder or "[vmetal]reserved_addresses"} holds; '
                    'choose another address')
            db.execute('DELETE FROM allocations WHERE owner = ?', (owner,))
            db.execute(
                'INSERT INTO allocations (scope, address, pool, owner, '
                'purpose, created_at) VALUES (?, ?, ?, ?, ?, ?)',
                (self.scope, value, '', owner, PURPOSE_NETWORK_DATA,
                 time.time()))
            self._bump(db, 'allocations')
        # Rare: read the table again rather than follow both changes.
        self._held.forget()
        return base.Allocation(owner=owner, pool_key='', address=str(address))

    def release(self, owner):
        """Network data and reservations first, the address last (one
        transaction here, so the order only matters for readers)."""
        owner = self._key(owner)
        with self._transaction() as db:
            row = db.execute(
                SELECT_OWNER, (owner,)).fetchone()
            db.execute('DELETE FROM network_data WHERE owner = ?', (owner,))
            withdrawn = db.execute('DELETE FROM reservations WHERE owner = ?',
                                   (owner,)).rowcount
            if row is not None:
                withdrawn += db.execute(
                    'DELETE FROM reservations WHERE address = ?',
                    (str(netaddr.IPAddress(row[1])),)).rowcount
            if withdrawn:
                self._bump(db, 'reservations')
            if row is not None:
                before = self._counter(db, 'allocations')
                db.execute('DELETE FROM allocations WHERE owner = ?', (owner,))
                after = self._bump(db, 'allocations')
        if row is None:
            return None
        self._held.released(before, after, row[1])
        allocation = self._row_to_allocation(row)
        LOG.info('Released %(address)s of pool %(pool)s from %(owner)s',
                 {'address': allocation.address, 'pool': allocation.pool_key,
                  'owner': owner})
        return allocation

    def get_allocation(self, owner):
        owner = self._key(owner)
        with self._transaction(write=False) as db:
            row = db.execute(
                SELECT_OWNER, (owner,)).fetchone()
        return None if row is None else self._row_to_allocation(row)

    def list_allocations(self, pool_key=None):
        query, args = SELECT_HELD, ()
        if pool_key is not None:
            query, args = SELECT_HELD + ' AND pool = ?', (pool_key,)
        with self._transaction(write=False) as db:
            rows = db.execute(query + ' ORDER BY pool, address', args).fetchall()
        return [self._row_to_allocation(row) for row in rows]

    def save_network_data(self, owner, document, ipv4=None):
        owner = self._key(owner)
        text = json.dumps(document, sort_keys=True)
        with self._transaction() as db:
            db.execute(
                'INSERT INTO network_data (owner, document, updated_at) '
                'VALUES (?, ?, ?) ON CONFLICT(owner) DO UPDATE SET '
                'document = excluded.document, updated_at = excluded.updated_at',
                (owner, text, time.time()))

    def get_network_data(self, owner):
        owner = self._key(owner)
        with self._transaction(write=False) as db:
            row = db.execute('SELECT document FROM network_data WHERE owner = ?',
                             (owner,)).fetchone()
        return None if row is None else json.loads(row[0])

    @staticmethod
    def _counter(db, name):
        row = db.execute('SELECT value FROM counters WHERE name = ?',
                         (name,)).fetchone()
        return 0 if row is None else row[0]

    def _bump(self, db, name):
        """Count one change of ``name`` inside the caller's transaction.

        :returns: the counter's new value.
        """
        db.execute('INSERT INTO counters (name, value) VALUES (?, 1) '
                   'ON CONFLICT(name) DO UPDATE SET value = value + 1',
                   (name,))
        return self._counter(db, name)

    def publish_reservation(self, reservation, owner=None):
        owner = self._key(owner) if owner else None
        with self._transaction() as db:
            db.execute(
                'INSERT INTO reservations (mac, document, owner, address, '
                'updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(mac) DO '
                'UPDATE SET document = excluded.document, owner = '
                'excluded.owner, address = excluded.address, updated_at = '
                'excluded.updated_at',
                (reservation.mac, reservation.to_json(),
                 str(owner) if owner else None, reservation.address,
                 time.time()))
            self._bump(db, 'reservations')

    def withdraw_reservation(self, mac):
        mac = network_data.normalize_mac(mac)
        with self._transaction() as db:
            deleted = db.execute('DELETE FROM reservations WHERE mac = ?',
                                 (mac,)).rowcount
            if deleted:
                self._bump(db, 'reservations')
        return bool(deleted)

    def list_reservations(self):
        with self._transaction(write=False) as db:
            rows = db.execute(
                'SELECT document FROM reservations ORDER BY mac').fetchall()
        result = []
        skipped = 0
        for (text,) in rows:
            try:
                result.append(reservation_mod.Reservation.from_json(text))
            except exception.InvalidProperty as exc:
                # One bad row must not stop the agent serving the others.
                LOG.warning('Skipping a stored reservation: %s', exc)
                skipped += 1
        # Read by the DHCP agent's feed for its skipped-reservations metric.
        self.skipped_reservations = skipped
        return result

    def reservations_revision(self):
        with self._transaction(write=False) as db:
            return self._counter(db, 'reservations')

    def inspection_leases(self):
        # Imported here: the leases use this module's transactions.
        from vmetal_ironic.store import local_inspection
        leases = self.__dict__.get('_inspection')
        if leases is None:
            leases = self._inspection = local_inspection.LocalLeases(self)
        return leases

    def close(self):
        self._poll_wait.set()
        db = getattr(self._local, 'db', None)
        if db is not None:
            db.close()
            self._local.db = None
