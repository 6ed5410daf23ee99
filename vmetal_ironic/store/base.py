"""The store interface shared by the local and Kubernetes stores."""

import abc
import dataclasses
import threading

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod


@dataclasses.dataclass(frozen=True)
class Allocation:
    """One owner's address.

    :ivar owner: who holds it, ``<Kind>/<namespace>/<name>`` by convention.
    :ivar pool_key: the pool key (the network, e.g. ``192.0.2.0/24``).
    :ivar address: the address as text.
    :ivar mac: the owner's boot MAC when known.
    """

    owner: str
    pool_key: str
    address: str
    mac: str | None = None


@dataclasses.dataclass(frozen=True)
class Subject:
    """Who a store call is about, resolved once by :meth:`Store.subject`
    where the owner enters (the Ironic adapter, the controller, the CLI)
    and handed as it is to every call of one flow, so that no layer parses
    the owner or reads its host again.

    :ivar owner: the :class:`~vmetal_ironic.owner.Owner` the caller named
        (``BareMetalHost/<ns>/<name>``, ``Node/<uuid>``...): its
        network-data Secret and its reservations go by this name.
    :ivar holder: the :class:`~vmetal_ironic.owner.Owner` that holds the
        address: on Kubernetes the Machine claiming the host
        (``spec.consumerRef``), else ``owner`` itself.
    :ivar host: the BareMetalHost the address is used on, as the caller
        or the store read it (a dict), or ``None``.
    :ivar sources: the property sources the caller already holds (the
        Kubernetes store's :class:`~vmetal_ironic.store.kubernetes.
        kube_properties.Sources`: a controller's informers, or one listing
        per pass), or ``None``: :meth:`Store.host_properties` reads them.
    :ivar note: ``ipv4 -> {annotation: value}``, or ``None``: called once
        the host's primary IPv4 (or ``None``) is known, just before its
        outputs are written; its annotations go into the same host patch
        (the controller's verdict: one host write instead of two).
    """

    owner: owner_mod.Owner
    holder: owner_mod.Owner
    host: dict | None = dataclasses.field(default=None, compare=False)
    sources: object = dataclasses.field(default=None, compare=False)
    note: object = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class ReservationChange:
    """One step of :meth:`Store.follow_reservations`.

    :ivar revision: the position after this change.
    :ivar changed: a :class:`~vmetal_ironic.reservation.Reservation`
        created or replaced, or ``None``.
    :ivar removed: the MAC whose reservation went, or ``None``. Neither
        set: only the position moved (a bookmark).
    """

    revision: object
    changed: object = None
    removed: str | None = None


@dataclasses.dataclass(frozen=True)
class Published:
    """What :meth:`Store.publish_reservations` did.

    :ivar count: the reservations that stand as asked (written by this
        call, or found already so).
    :ivar skipped: ``(mac, reason)`` of each reservation the store
        refused as bad input (one line naming the value); the others were
        published all the same.
    """

    count: int
    skipped: tuple = ()


@dataclasses.dataclass(frozen=True)
class InspectionLease:
    """An address of the shared inspection range held for one MAC.

    :ivar mac: the client's MAC (lower case, colons).
    :ivar address: the address as text.
    :ivar expires: epoch seconds after which any agent may take it back.
    :ivar version: the store's version of the lease; a renewal or a
        removal succeeds only against the version it read.
    :ivar key: the store's name of the lease (stable across renewals).
    :ivar declined: the client found the address in use (DECLINE): it is
        held until ``expires`` but served to nobody, and the MAC may get
        another lease.
    """

    mac: str
    address: str
    expires: float
    version: str
    key: str
    declined: bool = False


@dataclasses.dataclass(frozen=True)
class LeaseChange:
    """One step of following the inspection leases.

    :ivar revision: the position after this change.
    :ivar changed: an :class:`InspectionLease` created or renewed.
    :ivar removed: the key of a lease that went. Neither set: a bookmark.
    :ivar rejected: why the object of ``removed`` is no valid lease (bad
        data in the store), or ``None``.
    """

    revision: object
    changed: InspectionLease | None = None
    removed: str | None = None
    rejected: str | None = None


def last_per_mac(items):
    """``(reservation, owner)`` pairs with one per MAC, the last given
    (what publishing them one after the other would leave), in the order
    the MACs first appear."""
    wanted = {}
    for reservation, owner in items:
        wanted[reservation.mac] = (reservation, owner)
    return list(wanted.values())


class Store(abc.ABC):
    """Persistent state of vmetal-ironic.

    Implementations must make :meth:`allocate` safe against concurrent
    callers in other processes and on other machines: the same address is
    never held by two owners, and an owner never holds two addresses.

    No address is held by two owners on one L2 (``[vmetal]address_scope``)
    whatever pools overlap: the store's own atomic primitive (a
    name-unique object, a UNIQUE constraint) refuses a second holder.

    Hooks with harmless defaults, overridden where a store can do better:
    :meth:`reservations_snapshot` and :meth:`follow_reservations` (the
    DHCP agent's feed; the Kubernetes store lists then watches),
    :meth:`reconcile` (automatic release, a whole pass on demand; no
    store starts a thread for it), :meth:`subject` and
    :meth:`host_properties` (what a store knows of a host),
    :attr:`skipped_reservations`.

    The calls about one owner take a :class:`Subject`: the owner is parsed,
    and its host and holder found, once by :meth:`subject` at the edge.
    Text (or an :class:`~vmetal_ironic.owner.Owner`) is accepted as well
    and resolved by :meth:`subject` on the spot, for one-off callers (the
    CLI, tests); a flow of several calls resolves once and passes the
    subject.
    """

    #: Reservations the last read of them left out as invalid (bad rows or
    #: objects); the DHCP agent reports it in its metrics.
    skipped_reservations = 0

    @abc.abstractmethod
    def allocate(self, pool, owner, mac=None):
        """Give ``owner`` an address from ``pool``, or the one it holds.

        :param pool: a :class:`vmetal_ironic.ipam.Pool`.
        :param owner: a :class:`Subject` (its holder gets the address).
        :param mac: the owner's boot MAC, recorded with the allocation.
        :returns: an :class:`Allocation`.
        :raises vmetal_ironic.ipam.PoolExhausted: no free address.
        :raises vmetal_ironic.ipam.errors.OwnerElsewhere: the owner holds an
            address that the pool may not hand out.
        :raises vmetal_ironic.exception.TemporaryError: store trouble.
        """

    @abc.abstractmethod
    def hold(self, owner, address, source):
        """Hold an address named explicitly (a custom network-data
        document) for ``owner`` (a :class:`Subject`), instead of any
        address it held.

        :param source: where the address came from, for the error.
        :returns: an :class:`Allocation`.
        :raises vmetal_ironic.ipam.errors.AddressTaken: another owner (or
            a gateway, a reserved address) holds it.
        """

    @abc.abstractmethod
    def release(self, owner):
        """Free the address of ``owner`` (a :class:`Subject`) and forget
        its network data.

        Idempotent: releasing an owner that holds nothing is not an error.

        :returns: the released :class:`Allocation`, or ``None``.
        """

    @abc.abstractmethod
    def get_allocation(self, owner):
        """:param owner: a :class:`Subject`.

        :returns: its holder's :class:`Allocation`, or ``None``."""

    @abc.abstractmethod
    def list_allocations(self, pool_key=None):
        """:param pool_key: restrict to one pool (network) when given.

        :returns: allocations sorted by pool and address.
        """

    @abc.abstractmethod
    def save_network_data(self, owner, document, ipv4=None):
        """Store the network_data document (a dict) of ``owner`` (a
        :class:`Subject`).

        :param ipv4: the document's
            :class:`~vmetal_ironic.network_data.PrimaryIPv4` as the domain
            computed it, for stores that publish it (host annotations);
            taken from the document when ``None``.
        """

    @abc.abstractmethod
    def get_network_data(self, owner):
        """:param owner: a :class:`Subject`.

        :returns: its network_data dict, or ``None``."""

    @abc.abstractmethod
    def publish_reservation(self, reservation, owner=None):
        """Create or replace the DHCP reservation of ``reservation.mac``.

        :param owner: the :class:`Subject` (or the
            :class:`~vmetal_ironic.owner.Owner`) the reservation belongs to,
            so that releasing it withdraws the reservation.
        """

    def publish_reservations(self, items):
        """Publish many reservations: :meth:`publish_reservation` for each
        ``(reservation, owner)`` pair, the last one winning for a MAC
        named twice.

        The default publishes one after the other; the Kubernetes store
        keeps a few creates in flight. A reservation the store refuses as
        bad input is skipped and reported; any other failure stops the
        call (what was published stays: publishing again is harmless).

        :returns: :class:`Published`.
        """
        count = 0
        for reservation, owner in last_per_mac(items):
            self.publish_reservation(reservation, owner=owner)
            count += 1
        return Published(count)

    @abc.abstractmethod
    def withdraw_reservation(self, mac):
        """Remove the reservation of ``mac``; idempotent."""

    @abc.abstractmethod
    def list_reservations(self):
        """:returns: every :class:`~vmetal_ironic.reservation.Reservation`."""

    @abc.abstractmethod
    def reservations_revision(self):
        """A cheap token that changes whenever a reservation changes.

        The DHCP agent polls it to know when to reload its cache.
        """

    def reservations_of(self, node=None, macs=()):
        """The reservations of an Ironic node: by its UUID or its MACs.

        The default filters :meth:`list_reservations`; stores that can look
        them up directly (the Kubernetes store, by label and by name)
        override it, so a node's withdrawal does not read the whole fleet.
        """
        macs = set(macs)
        return [res for res in self.list_reservations()
                if res.mac in macs or (node and res.node == node)]

    def reservations_snapshot(self):
        """:returns: ``(revision, [Reservation])`` read together."""
        revision = self.reservations_revision()
        return revision, self.list_reservations()

    def follow_reservations(self, revision, timeout):
        """Changes after ``revision``, for at most ``timeout`` seconds.

        The default polls: it waits ``timeout`` and, if the revision moved,
        asks the caller to read a new snapshot.

        :yields: :class:`ReservationChange` items.
        :raises vmetal_ironic.exception.RevisionExpired: read a new
            :meth:`reservations_snapshot` and follow from its revision.
        """
        self._poll_wait.wait(timeout)
        if self.reservations_revision() != revision:
            raise exception.RevisionExpired(
                f'reservations moved past revision {revision}')
        return
        yield  # a generator, like the stores that watch

    @property
    def _poll_wait(self):
        # Set by close(), so a follower does not outlive its store.
        event = self.__dict__.get('_poll_event')
        if event is None:
            event = self.__dict__['_poll_event'] = threading.Event()
        return event

    def reconcile(self):
        """Release the addresses of owners that let go of them.

        :returns: the released :class:`Allocation` list; stores whose
            owners have no lifecycle of their own release nothing.
        """
        return []

    def inspection_leases(self):
        """The inspection leases every agent of the scope shares (see
        ``doc/source/kubernetes-store.rst``), or ``None`` when this store
        cannot share them (then an agent may only use its own
        ``dynamic_range``).

        :returns: an object with ``snapshot()``, ``follow(revision,
            timeout)``, ``claim(mac, candidates, expires)``,
            ``renew(lease, expires)``, ``decline(lease, expires)`` and
            ``remove(lease)``, or ``None``.
        """
        return None

    def subject(self, owner, host=None, sources=None, note=None):
        """Resolve ``owner`` once for the calls that follow.

        The default: the owner holds its address itself and has no host
        here. The Kubernetes store reads a BareMetalHost owner's host
        (unless ``host`` is given) and finds the Machine claiming it.

        :param owner: an owner identity (text or an
            :class:`~vmetal_ironic.owner.Owner`); a :class:`Subject` is
            returned as it is.
        :param host: the owner's host as the caller just read it.
        :param sources: see :attr:`Subject.sources`.
        :param note: see :attr:`Subject.note`.
        :returns: a :class:`Subject`.
        :raises vmetal_ironic.exception.InvalidProperty: malformed owner.
        :raises vmetal_ironic.exception.NotFound: the owner's host does not
            exist.
        """
        if isinstance(owner, Subject):
            return owner
        owner = owner_mod.parse(owner)
        return Subject(owner, owner, host, sources, note)

    def host_properties(self, owner):
        """Property layers the store knows for ``owner`` (a
        :class:`Subject`), most specific first (a Kubernetes store: the
        host's annotations, its node type, the default environment, from
        the subject's sources or read now). The local store knows none.

        :returns: a list of mappings.
        """
        return []

    def close(self):
        """Release connections; the store is not used afterwards."""
