"""The store interface shared by the local and Kubernetes stores."""

import abc
import dataclasses


@dataclasses.dataclass(frozen=True)
class Allocation:
    """One owner's address.

    :ivar owner: who holds it, ``<Kind>/<namespace>/<name>`` by convention.
    :ivar pool: the pool key (the network, e.g. ``192.0.2.0/24``).
    :ivar address: the address as text.
    :ivar mac: the owner's boot MAC when known.
    """

    owner: str
    pool: str
    address: str
    mac: str | None = None


class Store(abc.ABC):
    """Persistent state of vmetal-ironic.

    Implementations must make :meth:`allocate` safe against concurrent
    callers in other processes and on other machines: the same address is
    never held by two owners, and an owner never holds two addresses.

    Optional capabilities (not part of the ABC; look them up with
    ``getattr``): ``watch_reservations(stop=None, timeout=60)``, a
    generator of ``(revision, [Reservation])`` snapshots, the current one
    first and then one per change, for a DHCP agent that would rather be
    told than poll :meth:`reservations_revision` (the Kubernetes store
    follows a watch); ``reconcile()``, which frees the addresses of owners
    that no longer exist and returns them, and ``start_reconciler()``, which
    runs it at once and then periodically (Kubernetes store).
    """

    @abc.abstractmethod
    def allocate(self, pool, owner, mac=None):
        """Give ``owner`` an address from ``pool``, or the one it holds.

        :param pool: a :class:`vmetal_ironic.ipam.Pool`.
        :param owner: the owner's identity.
        :param mac: the owner's boot MAC, recorded with the allocation.
        :returns: an :class:`Allocation`.
        :raises vmetal_ironic.ipam.PoolExhausted: no free address.
        :raises vmetal_ironic.ipam.errors.OwnerElsewhere: the owner holds an
            address that the pool may not hand out.
        :raises vmetal_ironic.exception.TemporaryError: store trouble.
        """

    @abc.abstractmethod
    def release(self, owner):
        """Free the owner's address and forget its network data.

        Idempotent: releasing an owner that holds nothing is not an error.

        :returns: the released :class:`Allocation`, or ``None``.
        """

    @abc.abstractmethod
    def get_allocation(self, owner):
        """:returns: the owner's :class:`Allocation`, or ``None``."""

    @abc.abstractmethod
    def list_allocations(self, pool_key=None):
        """:param pool_key: restrict to one pool (network) when given.

        :returns: allocations sorted by pool and address.
        """

    @abc.abstractmethod
    def save_network_data(self, owner, document):
        """Store the owner's network_data document (a dict)."""

    @abc.abstractmethod
    def get_network_data(self, owner):
        """:returns: the owner's network_data dict, or ``None``."""

    @abc.abstractmethod
    def publish_reservation(self, reservation):
        """Create or replace the DHCP reservation of ``reservation.mac``."""

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

    def host_properties(self, owner):
        """Property layers the store knows for ``owner``, most specific
        first (a Kubernetes store reads the host, node type and default
        environment). The local store knows none.

        :returns: a list of mappings.
        """
        return []

    def close(self):
        """Release connections; the store is not used afterwards."""
