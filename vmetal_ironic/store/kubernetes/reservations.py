"""DHCP reservations: one small ``DHCPReservation`` object per MAC.

A reservation is named after its MAC (``52-54-00-00-00-01``) in
``[vmetal_kubernetes]namespace`` and labelled with its address and owner,
so that a release withdraws every reservation of the owner and of the
address with two label-selected lists. No object grows with the fleet, and
a publish writes only its own object.

Many reservations at once (:meth:`Reservations.publish_many`, a fleet's,
a migration's) are published with :data:`IN_FLIGHT` creates in flight
(:mod:`.bulk`): one create costs kube-apiserver a few milliseconds of CPU,
and one after the other leave it waiting for etcd and for the client
most of each round trip. Each is the same create-or-compare-and-swap as
a single publish, so a conflict or a lost answer is settled by reading
the object back, whichever thread meets it.

The DHCP agent follows them the way Kubernetes controllers do: list (page
by page), then watch from the list's ``resourceVersion`` with bookmarks,
so that a quiet collection keeps a fresh position; when the position has
left the API server's window (410 Gone) it lists again.
"""

import re

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import network_data
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.store import base
from vmetal_ironic.store.kubernetes import bulk
from vmetal_ironic.store.kubernetes import kube_client
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import resources

LOG = log.getLogger(__name__)

# What a label value may be (apimachinery IsValidLabelValue).
_LABEL_VALUE = re.compile(r'^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')
SELECTOR = f'{names.LABEL_COMPONENT}={names.COMPONENT_RESERVATION}'
# Creates a bulk publish keeps in flight. On the README's 2-core machine
# 4 already kept busy what cores the control plane had; 8 leaves room for
# an API server with cores of its own, and stays far below what priority
# and fairness lets one client queue (bench_kubernetes measures 1 against
# this).
IN_FLIGHT = 8
# What the API server answers a body it refuses (the CRD's schema and
# rules, a label value it does not allow): bad input, not trouble.
REFUSED = (400, 422)


def reservation_body(namespace, reservation, owner=None):
    labels = dict(names.MANAGED_BY)
    labels.update({names.LABEL_COMPONENT: names.COMPONENT_RESERVATION,
                   names.LABEL_ADDRESS: reservation.address})
    spec = reservation.to_dict()
    if owner is not None:
        labels[names.LABEL_OWNER] = owner.label
        spec['owner'] = str(owner)
    if reservation.node and _LABEL_VALUE.match(reservation.node):
        labels[names.LABEL_NODE] = reservation.node
    return {'apiVersion': f'{names.API_GROUP}/{names.API_VERSION}',
            'kind': names.RESERVATION_KIND,
            'metadata': {'name': names.reservation_name(reservation.mac),
                         'namespace': namespace, 'labels': labels},
            'spec': spec}


def parse(obj):
    """The :class:`~vmetal_ironic.reservation.Reservation` of an object,
    or ``None`` (logged) when it is malformed: one bad object must not
    stop the agent serving the others.

    An object not named after its ``spec.mac`` is malformed too: the one
    reservation of a MAC is the object of that name (the name is unique,
    the field is not), so a copy under another name, written by someone
    else or under a CRD older than its naming rule, must not win over
    it.
    """
    spec = dict((obj or {}).get('spec') or {})
    spec.pop('owner', None)
    name = _name_of(obj)
    try:
        found = reservation_mod.Reservation.from_dict(spec)
        if name != names.reservation_name(found.mac):
            raise exception.InvalidProperty(
                f'named {name!r}, not after its spec.mac {spec.get("mac")!r} '
                f'({names.reservation_name(found.mac)})')
    except exception.InvalidProperty as exc:
        LOG.warning('Skipping reservation %(name)s: %(err)s',
                    {'name': name, 'err': exc})
        return None
    return found


def _name_of(obj):
    return ((obj or {}).get('metadata') or {}).get('name')


def _mac_of(obj):
    """The MAC an object stands for: its name's (one object per MAC). A
    copy whose ``spec.mac`` names another MAC removes, when it goes or
    turns bad, nothing but its own name's reservation."""
    try:
        return network_data.normalize_mac(names.key_mac(
            obj['metadata']['name']))
    except (exception.InvalidProperty, KeyError, TypeError, AttributeError):
        return None


class Reservations:
    """The reservation objects of one namespace.

    :param api: a :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`.
    :param namespace: where they live.
    :param attempts: bound of compare-and-swap attempts.
    :param connect_timeout: seconds, for watch requests.
    """

    def __init__(self, api, namespace, attempts=50, connect_timeout=5.0):
        self.api = api
        self.namespace = namespace
        self.attempts = attempts
        self.connect_timeout = connect_timeout
        self.objects = resources.Collection(
            api, names.RESERVATION_API, names.RESERVATION_KIND, namespace)
        # Names of the objects the last snapshot and the changes followed
        # since left out as malformed (the agent's skipped metric).
        self.skipped = frozenset()

    def publish(self, reservation, owner=None):
        """Create or replace the reservation of ``reservation.mac``."""
        body = reservation_body(self.namespace, reservation, owner)
        name = body['metadata']['name']
        if self.objects.create(body) is not None:
            return

        def build(current):
            if current is None:
                return dict(body)
            same = (current.get('spec') == body['spec']
                    and all((current['metadata'].get('labels') or {}).get(k)
                            == v for k, v in
                            body['metadata']['labels'].items()))
            if same:
                return None
            replacement = dict(body)
            replacement['metadata'] = dict(
                body['metadata'],
                resourceVersion=current['metadata']['resourceVersion'])
            return replacement

        def write(current, replacement):
            if current is None:
                if self.objects.create(replacement) is None:
                    raise kube_client.ApiError(
                        f'{self.objects.what(name)} created meanwhile', 409,
                        'AlreadyExists')
                return None
            return self.objects.replace(name, replacement)

        resources.compare_and_swap(lambda: self.objects.get(name), build,
                                   write, self.objects.what(name),
                                   self.attempts)

    def publish_many(self, items, in_flight=IN_FLIGHT):
        """Publish ``(reservation, owner)`` pairs, ``in_flight`` at a time
        (see :meth:`~vmetal_ironic.store.base.Store.publish_reservations`).

        A reservation the API server refuses (400, 422) is skipped, logged
        and reported; any other failure stops the taking of further ones
        and is raised once those in flight are done.

        :param in_flight: at most this many requests at once (at most
            as many as the client keeps connections,
            :data:`~.kube_client.CONNECTIONS`).
        :returns: :class:`~vmetal_ironic.store.base.Published`.
        """
        def one(pair):
            reservation, owner = pair
            try:
                self.publish(reservation, owner)
            except kube_client.ApiError as exc:
                if exc.status not in REFUSED:
                    raise
                LOG.warning('Skipping the reservation of %(mac)s: %(err)s',
                            {'mac': reservation.mac, 'err': exc})
                return reservation.mac, str(exc)
            return None

        wanted = base.last_per_mac(items)
        limit = min(in_flight, kube_client.CONNECTIONS)
        skipped = tuple(found for found in bulk.run(one, wanted, limit)
                        if found is not None)
        return base.Published(len(wanted) - len(skipped), skipped)

    def withdraw(self, mac):
        return self.objects.delete_name(names.reservation_name(
            network_data.normalize_mac(mac)))

    def _list(self, selector):
        return self.objects.list(selector)

    def withdraw_matching(self, owner=None, address=None):
        """Withdraw every reservation of ``owner`` and of ``address``.

        :returns: the MACs withdrawn.
        """
        selectors = []
        if owner is not None:
            selectors.append(f'{SELECTOR},{names.LABEL_OWNER}={owner.label}')
        if address:
            selectors.append(f'{SELECTOR},{names.LABEL_ADDRESS}={address}')
        withdrawn = []
        for selector in selectors:
            for obj in self._list(selector)[1]:
                if self.objects.delete_name(obj['metadata']['name']):
                    withdrawn.append(_mac_of(obj))
        return withdrawn

    def of(self, node=None, macs=()):
        """Reservations of ``node`` (label) and of ``macs`` (by name)."""
        found = {}
        if node:
            selector = f'{SELECTOR},{names.LABEL_NODE}={node}'
            for obj in self._list(selector)[1]:
                parsed = parse(obj)
                if parsed is not None:
                    found[parsed.mac] = parsed
        for mac in macs:
            mac = network_data.normalize_mac(mac)
            if mac not in found:
                obj = self.objects.get(names.reservation_name(mac))
                parsed = parse(obj) if obj is not None else None
                if parsed is not None:
                    found[mac] = parsed
        return [found[mac] for mac in sorted(found)]

    def snapshot(self):
        """:returns: ``(revision, [Reservation])``, the list's position and
        content."""
        revision, items = self._list(SELECTOR)
        result, skipped = [], set()
        for item in items:
            parsed = parse(item)
            if parsed is None:
                skipped.add(_name_of(item))
            else:
                result.append(parsed)
        self.skipped = frozenset(skipped)
        return revision, result

    def revision(self):
        """The collection's current position (one list of one item)."""
        return self.objects.position(SELECTOR)

    def watch(self, revision, timeout):
        """Changes after ``revision``, for at most ``timeout`` seconds.

        :yields: :class:`~vmetal_ironic.store.base.ReservationChange`;
            bookmarks carry only a new revision.
        :raises vmetal_ironic.exception.RevisionExpired: the position left
            the API server's window (410): list again.
        :raises vmetal_ironic.exception.StoreUnavailable: the watch failed.
        """
        for kind, obj, position in resources.watch(
                self.api, names.RESERVATION_API, self.namespace, SELECTOR,
                revision, timeout, self.connect_timeout, 'reservations'):
            if kind == 'BOOKMARK':
                yield base.ReservationChange(position)
            elif kind == 'DELETED':
                self.skipped = self.skipped - {_name_of(obj)}
                yield base.ReservationChange(position, removed=_mac_of(obj))
            elif kind in ('ADDED', 'MODIFIED'):
                found = parse(obj)
                if found is None:
                    self.skipped = self.skipped | {_name_of(obj)}
                    yield base.ReservationChange(position,
                                                 removed=_mac_of(obj))
                else:
                    self.skipped = self.skipped - {_name_of(obj)}
                    yield base.ReservationChange(position, changed=found)

