"""The Kubernetes store: the API server is the single source of truth.

Objects (all labelled ``app.kubernetes.io/managed-by: vmetal-ironic``; see
``doc/source/kubernetes-store.rst``):

* one ``AddressClaim`` per held address, named ``<scope>.<address>``, and
  one ``AddressOwner`` record per owner bound to its claim's UID
  (:mod:`.addresses`): creating the claim is what takes the address, so an
  address is never held twice on one L2 whatever pools overlap or writers
  race;
* one ``DHCPReservation`` per MAC (:mod:`.reservations`), followed by the
  DHCP agent with list-then-watch;
* per host, a network-data Secret and outputs on the BareMetalHost
  (:mod:`.host_outputs`, with the pure patch builders of :mod:`.patches`);
* the owner of a host's address is the Machine that claims the host
  (``spec.consumerRef``, any kind); an unclaimed host holds it as
  ``BareMetalHost/<ns>/<name>``. ``vmetal-ipam-controller``
  (:mod:`vmetal_ironic.ipam_controller`, not part of the store) releases
  addresses whose holder let go of the host once the host is
  deprovisioned.

Every object other processes write too is changed by compare-and-swap
(:mod:`.resources`); no in-process lock is involved, so any number of processes
on any number of machines may share the store.
"""

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod
from vmetal_ironic import properties as props
from vmetal_ironic.conf import kubernetes as kube_conf
from vmetal_ironic.conf import vmetal as vmetal_conf
from vmetal_ironic.store import base
from vmetal_ironic.store.kubernetes import addresses
from vmetal_ironic.store.kubernetes import host_outputs
from vmetal_ironic.store.kubernetes import inspection
from vmetal_ironic.store.kubernetes import kube_client
from vmetal_ironic.store.kubernetes import kube_properties
from vmetal_ironic.store.kubernetes import patches
from vmetal_ironic.store.kubernetes import reservations
from vmetal_ironic.store.kubernetes import resources

LOG = log.getLogger(__name__)

BMH_KIND = host_outputs.BMH_KIND


def _parse_api(text, option):
    parts = str(text).strip('/').split('/')
    if len(parts) != 3 or not all(parts):
        raise exception.DeploymentError(
            f'[vmetal_kubernetes]{option} {text!r} is not group/version/plural')
    return tuple(parts)


def consumer_of(host):
    """The owner standing for the Machine that claims ``host``
    (``spec.consumerRef``), or ``None`` while no Machine does."""
    ref = ((host or {}).get('spec') or {}).get('consumerRef') or {}
    kind, name = ref.get('kind'), ref.get('name')
    if not kind or not name:
        return None
    namespace = ref.get('namespace') or host['metadata']['namespace']
    try:
        return owner_mod.parse(f'{kind}/{namespace}/{name}')
    except exception.InvalidProperty as exc:
        metadata = host['metadata']
        raise exception.InvalidProperty(
            f'BareMetalHost {metadata["namespace"]}/{metadata["name"]} '
            f'spec.consumerRef: {exc}') from None


def describes(host, held):
    """Whether ``host``'s outputs are those of ``held`` (pure): the address
    the store recorded writing on it is the held one, or it recorded none.
    A Machine that let the host go must not take off the outputs, Secret
    and reservations of the Machine holding it now."""
    if held is None:
        return True
    annotations = (host.get('metadata') or {}).get('annotations') or {}
    written = kube_properties.written_values(
        annotations, patches.WRITTEN_ANNOTATION).get(props.IP_ADDRESS)
    return not written or str(written).split('/')[0] == held.address


class KubernetesStore(base.Store):
    """:class:`~vmetal_ironic.store.base.Store` on the Kubernetes API.

    :param conf: an oslo.config object; ``[vmetal_kubernetes]`` and
        ``[vmetal]`` are registered on it when missing.
    :param api: a prepared :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`
        (tests and benchmarks); built from the options when ``None``.
    :raises vmetal_ironic.exception.DeploymentError: no usable API
        configuration.
    """

    def __init__(self, conf, api=None):
        kube_conf.register_opts(conf)
        vmetal_conf.register_opts(conf)
        self.conf = conf
        self.group = conf.vmetal_kubernetes
        self.namespace = self.group.namespace
        self.api = api or kube_client.Api(self.group)
        self._providers_api = _parse_api(self.group.node_provider_api,
                                         'node_provider_api')
        self._environments_api = _parse_api(
            self.group.network_environment_api, 'network_environment_api')
        # Optional property sources: a kind not served lists as none.
        self.providers = resources.Collection(
            self.api, self._providers_api, 'NodeProvider')
        self.environments = resources.Collection(
            self.api, self._environments_api, 'NetworkEnvironment')
        attempts = self.group.max_conflict_retries
        self.addresses = addresses.Addresses(
            self.api, self.namespace, conf.vmetal.address_scope,
            conf.vmetal.reserved_addresses, attempts,
            self.group.address_cache_seconds)
        self.reservations = reservations.Reservations(
            self.api, self.namespace, attempts, self.group.connect_timeout)
        self.outputs = host_outputs.HostOutputs(self.api, self.namespace,
                                                attempts)
        self.inspection = inspection.InspectionLeases(
            self.addresses, self.group.connect_timeout)

    # -- who holds a host's address ----------------------------------------

    def subject(self, owner, host=None, sources=None, note=None):
        """Resolve an owner once (see :class:`~vmetal_ironic.store.base.
        Subject`).

        For ``BareMetalHost/<ns>/<name>`` the host is read, unless ``host``
        is given as the caller just read it: the holder is the Machine in
        its ``spec.consumerRef``, or the host itself while none claims it.
        Host patches stay compare-and-swap, so a host changed since is read
        again where it is written. Other owners hold their address
        themselves and have no host here.

        :raises vmetal_ironic.exception.NotFound: the host does not exist.
        """
        if isinstance(owner, base.Subject):
            return owner
        owner = owner_mod.parse(owner)
        if owner.kind != BMH_KIND or owner.namespace is None:
            return base.Subject(owner, owner, None, sources, note)
        if host is None:
            host = self.outputs.get_host(owner.namespace, owner.name)
        if host is None:
            raise exception.NotFound(
                f'BareMetalHost {owner.namespace}/{owner.name} does not exist')
        return base.Subject(owner, consumer_of(host) or owner, host, sources,
                            note)

    def _subject_or_self(self, owner):
        """The subject of ``owner``, or the owner alone when its host is
        gone (a release, a lookup: nothing of the host is needed)."""
        if isinstance(owner, base.Subject):
            return owner
        owner = owner_mod.parse(owner)
        try:
            return self.subject(owner)
        except exception.NotFound:
            return base.Subject(owner, owner)

    # -- allocations --------------------------------------------------------

    def allocate(self, pool, owner, mac=None):
        subject = self.subject(owner)
        holder, host = subject.holder, subject.host
        previous = None
        if host is not None and holder.kind != BMH_KIND:
            # The Machine takes over the address its host was inspected
            # with, so the server keeps one address from inspection on.
            previous = owner_mod.for_host(host['metadata']['namespace'],
                                          host['metadata']['name'])
        allocation = self.addresses.allocate(pool, holder, mac,
                                             previous=previous, host=host)
        if previous is not None and self.addresses.may_hold(previous):
            # The Machine's pool did not contain the host's inspection
            # address: the host identity gives it back now (one address
            # per server), reservations of that address first.
            kept = self.addresses.get(previous)
            if kept is not None and kept.address != allocation.address:
                self.reservations.withdraw_matching(address=kept.address)
                if self.addresses.release(previous) is not None:
                    LOG.info('Released %(address)s of %(host)s: %(owner)s '
                             'holds %(new)s from another pool',
                             {'address': kept.address, 'host': previous,
                              'owner': holder, 'new': allocation.address})
        return allocation

    def hold(self, owner, address, source):
        return self.addresses.hold(self.subject(owner).holder, address,
                                   source)

    def release(self, owner):
        """Outputs and Secret first, then every reservation of the owner
        and of its addresses, the address claims last: a failure half way
        never leaves a live host advertising a free address."""
        subject = self._subject_or_self(owner)
        return self.release_holder(subject.holder, subject.host,
                                   also=subject.owner)

    def release_holder(self, holder, host, also=None):
        """Release ``holder``'s addresses (see :meth:`release`).

        :param host: the host its outputs are on, or ``None``.
        :param also: another identity whose Secret and reservations go too
            (the host identity a caller named).
        """
        held = self.addresses.get(holder)
        identities = {holder, also} - {None}
        host_owner = None
        if host is not None and describes(host, held):
            metadata = host['metadata']
            host_owner = owner_mod.for_host(metadata['namespace'],
                                            metadata['name'])
            identities.add(host_owner)
            self.outputs.clear(host_owner, metadata['namespace'],
                               metadata['name'])
        for identity in identities - {host_owner}:
            try:
                self.outputs.clear(identity)
            except kube_client.Forbidden:
                # A Machine's namespace the store writes nothing in (the
                # Metal3 path keeps the Secret on the host): nothing of
                # ours can be there to clear.
                LOG.debug('No Secret of %s to clear: its namespace is not '
                          'the store\'s', identity)
        for identity in sorted(identities, key=str):
            self.reservations.withdraw_matching(owner=identity)
        if held is not None:
            self.reservations.withdraw_matching(address=held.address)
        released = self.addresses.release(holder)
        if released is not None:
            LOG.info('Released %(address)s of pool %(pool)s from %(owner)s',
                     {'address': released.address,
                      'pool': released.pool_key or 'network-data',
                      'owner': holder})
        return released

    def get_allocation(self, owner):
        return self.addresses.get(self._subject_or_self(owner).holder)

    def list_allocations(self, pool_key=None):
        return self.addresses.list_allocations(pool_key)

    # -- network data -------------------------------------------------------

    def save_network_data(self, owner, document, ipv4=None):
        subject = self.subject(owner)
        # The Secret is the host's (Metal3 references it by name): it keeps
        # its name whichever Machine holds the host.
        self.outputs.save(
            subject.owner if subject.host is not None else subject.holder,
            document, subject.host, ipv4, subject.note)

    def get_network_data(self, owner):
        owner = (owner.owner if isinstance(owner, base.Subject)
                 else owner_mod.parse(owner))
        return self.outputs.read_secret(owner, owner.namespace
                                        or self.namespace)

    # -- properties ---------------------------------------------------------

    def property_sources(self):
        """The node types and Network Environments, listed now: a caller
        judging many hosts reads them once and hands them to
        :meth:`subject` (a change made meanwhile is seen next time).

        :returns: a :class:`~.kube_properties.Sources`.
        """
        return kube_properties.Sources(
            tuple(self.providers.list(unserved=())[1]),
            tuple(self.environments.list(unserved=())[1]))

    def host_properties(self, owner):
        """Layers of a BareMetalHost owner: its annotations, its node
        type's properties, the (default) Network Environment's properties,
        from the subject's sources (listed now when it has none). Other
        kinds of owner have none here.

        :raises vmetal_ironic.exception.NotFound: the host does not exist.
        :raises vmetal_ironic.exception.InvalidProperty: ambiguous or
            unknown node type or environment.
        """
        subject = self.subject(owner)
        if subject.host is None:
            return []
        sources = subject.sources or self.property_sources()
        return kube_properties.layers(
            subject.host, sources.providers, sources.environments,
            self.group.node_type_label,
            written_annotation=patches.WRITTEN_ANNOTATION)

    # -- reservations -------------------------------------------------------

    @staticmethod
    def _reservation_owner(owner):
        """The owner a reservation is labelled with: a subject's, a text
        owner's, or none (a text that is no owner)."""
        if isinstance(owner, base.Subject):
            return owner.owner
        if owner is not None:
            try:
                return owner_mod.parse(owner)
            except exception.InvalidProperty:
                return None
        return None

    def publish_reservation(self, reservation, owner=None):
        self.reservations.publish(reservation,
                                  self._reservation_owner(owner))

    def publish_reservations(self, items):
        return self.reservations.publish_many(
            (reservation, self._reservation_owner(owner))
            for reservation, owner in items)

    @property
    def skipped_reservations(self):
        """Reservation objects left out as malformed by the last snapshot
        and the changes followed since."""
        return len(self.reservations.skipped)

    def withdraw_reservation(self, mac):
        return self.reservations.withdraw(mac)

    def list_reservations(self):
        return self.reservations.snapshot()[1]

    def reservations_revision(self):
        return self.reservations.revision()

    def reservations_of(self, node=None, macs=()):
        return self.reservations.of(node, macs)

    def reservations_snapshot(self):
        return self.reservations.snapshot()

    def follow_reservations(self, revision, timeout):
        return self.reservations.watch(revision, timeout)

    def inspection_leases(self):
        return self.inspection

    # -- automatic release --------------------------------------------------

    def reconcile(self):
        """One whole pass of the controller's rules, on demand (the CLI,
        benchmarks): the store starts nothing and keeps no rules of its
        own."""
        # Imported here: the controller's package builds on this one.
        from vmetal_ironic.ipam_controller import reconciler

        return reconciler.Reconciler(self).run_once()

    def close(self):
        self.api.close()
