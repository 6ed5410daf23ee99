"""``vmetal-ipam migrate``: from the ConfigMaps of earlier releases to the
objects of this one.

Earlier releases kept one ConfigMap per pool (``vmetal-ipam-<network>``,
``data`` mapping address to owner) and one ConfigMap of every DHCP
reservation (``vmetal-dhcp-reservations``). Migrating creates an
AddressClaim per allocation and a DHCPReservation per reservation; it is
idempotent (a claim that exists for the same owner, a reservation that
says the same, count as done) and never takes an address from its holder:
when an old pool and another one both handed out one address (the defect
this release fixes), the first holder keeps it and the other is reported,
to be released and allocated again. The old ConfigMaps are deleted only
when asked and only once everything in them is migrated.
"""

import dataclasses

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.store.kubernetes import addresses
from vmetal_ironic.store.kubernetes import kube_client
from vmetal_ironic.store.kubernetes import kube_names as names

LOG = log.getLogger(__name__)

CREATED = 'created'
PRESENT = 'present'
CONFLICT = 'conflict'
INVALID = 'invalid'


@dataclasses.dataclass(frozen=True)
class Step:
    """One migrated record.

    :ivar source: the old object, e.g. ``ConfigMap vmetal-system/x``.
    :ivar key: the entry (address or MAC).
    :ivar outcome: :data:`CREATED`, :data:`PRESENT`, :data:`CONFLICT` or
        :data:`INVALID`.
    :ivar detail: why, for conflicts and invalid entries.
    """

    source: str
    key: str
    outcome: str
    detail: str = ''


def _old_configmaps(store):
    selector = f'{names.LABEL_COMPONENT}={names.COMPONENT_IPAM}'
    pools = store.api.call(
        f'list ConfigMaps {store.namespace} -l {selector}',
        store.api.core.list_namespaced_config_map, store.namespace,
        label_selector=selector).items
    # Older pools first: where two handed out one address, the first
    # holder is most likely the one running with it.
    pools.sort(key=lambda cm: (cm.metadata.creation_timestamp,
                               int(cm.metadata.resource_version or 0)))
    try:
        reservations = store.api.call(
            f'get ConfigMap {store.namespace}/{names.RESERVATIONS_NAME}',
            store.api.core.read_namespaced_config_map,
            names.RESERVATIONS_NAME, store.namespace)
    except kube_client.ApiError as exc:
        if exc.status != 404:
            raise
        reservations = None
    return pools, reservations


def _migrate_pool(store, configmap):
    source = f'ConfigMap {store.namespace}/{configmap.metadata.name}'
    pool_key = (configmap.metadata.annotations or {}).get(
        names.ANNOTATION_NETWORK, configmap.metadata.name)
    book = store.addresses
    steps = []
    for address, text in sorted((configmap.data or {}).items()):
        try:
            holder = owner_mod.parse(text)
            if addresses.address_value(address) is None:
                raise exception.InvalidProperty(
                    f'{address!r} is not an IPv4 address')
        except exception.InvalidProperty as exc:
            steps.append(Step(source, address, INVALID, str(exc)))
            continue
        body = addresses.claim_body(store.namespace, book.scope, address,
                                    holder, names.PURPOSE_ALLOCATION,
                                    pool_key)
        created = book.claims.create(body)
        existing = created or book.read(names.claim_name(book.scope,
                                                         address))
        held_by = addresses.spec_of(existing).get('owner')
        if held_by == str(holder):
            if book.owners.get(holder) is None:
                book.owners.create(holder, addresses.binding(holder,
                                                             existing))
            steps.append(Step(source, address,
                              CREATED if created else PRESENT))
        else:
            steps.append(Step(source, address, CONFLICT,
                              f'{holder} also held it; {held_by} keeps it: '
                              f'release {holder} and allocate again'))
    return steps


def _migrate_reservations(store, configmap):
    source = f'ConfigMap {store.namespace}/{configmap.metadata.name}'
    steps, wanted = [], []
    current = {r.mac: r for r in store.list_reservations()}
    for key, text in sorted((configmap.data or {}).items()):
        try:
            found = reservation_mod.Reservation.from_json(text)
        except exception.InvalidProperty as exc:
            steps.append(Step(source, key, INVALID, str(exc)))
            continue
        if current.get(found.mac) == found:
            steps.append(Step(source, found.mac, PRESENT))
            continue
        if found.mac in current:
            # Published since by this release: newer than the old record.
            steps.append(Step(source, found.mac, PRESENT,
                              'a newer reservation exists'))
            continue
        wanted.append(found)
        steps.append(Step(source, found.mac, CREATED))
    # Published a few at a time (a fleet's reservations are thousands);
    # what the API server refuses is reported instead of created.
    refused = dict(store.reservations.publish_many(
        (found, None) for found in wanted).skipped)
    return [dataclasses.replace(step, outcome=INVALID,
                                detail=refused[step.key])
            if step.outcome == CREATED and step.key in refused else step
            for step in steps]


def migrate(store, delete=False):
    """Move the old ConfigMaps' records into the store's objects.

    :param store: a :class:`~vmetal_ironic.store.kubernetes.KubernetesStore`.
    :param delete: delete each old ConfigMap whose entries are all
        migrated (created or present).
    :returns: the list of :class:`Step`.
    """
    pools, reservations = _old_configmaps(store)
    steps = []
    done = []
    for configmap in pools:
        mine = _migrate_pool(store, configmap)
        steps.extend(mine)
        done.append((configmap, mine))
    if reservations is not None:
        mine = _migrate_reservations(store, reservations)
        steps.extend(mine)
        done.append((reservations, mine))
    if delete:
        for configmap, mine in done:
            if all(step.outcome in (CREATED, PRESENT) for step in mine):
                name = configmap.metadata.name
                store.api.call(f'delete ConfigMap {store.namespace}/{name}',
                               store.api.core.delete_namespaced_config_map,
                               name, store.namespace)
                LOG.info('Deleted the migrated ConfigMap %s', name)
    return steps


def summary(steps):
    """Counts per outcome, for people: ``{'created': 3, ...}``."""
    counts = dict.fromkeys((CREATED, PRESENT, CONFLICT, INVALID), 0)
    for step in steps:
        counts[step.outcome] += 1
    return counts
