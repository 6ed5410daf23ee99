"""The controller follows the claims: a host a Machine claims gets its
address, network-data Secret and outputs then, not only when Ironic
prepares a PXE boot.

Ironic gives a host its network identity from the DHCP provider, which
runs only when Ironic prepares a PXE/iPXE boot. A virtual-media boot on
Metal3's stock hardware types never calls it, so a host claimed by a
Machine and deployed that way would find no network data. The controller
(a host at a time, or a whole reconcile pass) therefore also looks at
every host a Machine claims
(``spec.consumerRef``) and, when that Machine holds no address yet or the
host lacks the store's outputs, runs the very flow Ironic runs
(:func:`vmetal_ironic.host_network.ensure`) for it: same property layers
(host annotations, node type, default Network Environment, ``[vmetal]``
defaults), the host's ``spec.bootMACAddress``, the same race-free
allocation and the same outputs. Both paths may run at once for one host
on any number of processes: the flow is idempotent and the store's
compare-and-swap primitives make them agree.

Only hosts of ``[vmetal_kubernetes]follow_claims_namespaces`` are
followed (every namespace by default): where several Ironic deployments
share a cluster, each follows the hosts it manages.

A host whose properties are bad is reported in one line naming the value
and the layer it came from, and counted; nothing is written for it (the
properties are resolved before anything is written) and the pass goes on
with the other hosts.
"""

import dataclasses

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import host_network
from vmetal_ironic import network_data
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import patches

LOG = log.getLogger(__name__)


def outputs_missing(host):
    """Whether the store's outputs are not (all) on ``host`` (pure).

    The store writes the Secret references and the annotations in one
    patch, filling each reference that is empty; so a missing reference
    means the outputs were never written, and when both references are
    set, the ``written`` record or a reference to the store's own Secret
    tells that the patch went through.
    """
    metadata = (host or {}).get('metadata') or {}
    spec = (host or {}).get('spec') or {}
    referenced = ((spec.get('networkData') or {}).get('name'),
                  spec.get('preprovisioningNetworkDataName'))
    if not all(referenced):
        return True
    if patches.WRITTEN_ANNOTATION in (metadata.get('annotations') or {}):
        return False
    try:
        ours = names.network_data_secret_name(owner_mod.for_host(
            metadata.get('namespace'), metadata.get('name')))
    except exception.InvalidProperty:
        return True
    return ours not in referenced


def needs_network(view, held):
    """Whether the pass must give the host's Machine its network (pure).

    :param view: the host's :class:`~.reconciler.HostView`.
    :param held: the owners (as text) that hold an address.
    """
    if view.consumer is None or view.detached or view.deleting:
        # Unclaimed hosts get theirs when Ironic boots them; a detached or
        # paused host is not Metal3's to change; one being deleted is
        # about to let its address go.
        return False
    return view.consumer not in held or view.outputs_missing


@dataclasses.dataclass
class FollowReport:
    """What one pass did for claimed hosts.

    :ivar given: ``"<ns>/<name>"`` of the hosts given their network.
    :ivar rejected: ``("<ns>/<name>", message)`` of the hosts that could
        not be, the message naming the bad value and where it came from.
    :ivar addresses: ``{"<ns>/<name>": address text}`` of the hosts given
        a static address (what the controller says on the host, without
        reading the allocation back).
    """

    given: list = dataclasses.field(default_factory=list)
    rejected: list = dataclasses.field(default_factory=list)
    addresses: dict = dataclasses.field(default_factory=dict)


class Follower:
    """Gives claimed hosts their network identity for a
    :class:`~vmetal_ironic.store.kubernetes.KubernetesStore`."""

    def __init__(self, store):
        self.store = store

    def follows(self, where):
        """Whether hosts of ``where``'s namespace are followed here."""
        namespaces = self.store.conf.vmetal_kubernetes.follow_claims_namespaces
        return '*' in namespaces or where.partition('/')[0] in namespaces

    def _ensure(self, where, view, host, sources, note=None):
        namespace, _, name = where.partition('/')
        mac = None
        if view.mac:
            try:
                mac = network_data.normalize_mac(view.mac)
            except exception.InvalidProperty as exc:
                raise exception.InvalidProperty(
                    f'{exc} (from BareMetalHost {where} '
                    'spec.bootMACAddress)') from None
        conf = self.store.conf
        # The host as the caller just read it and the property sources it
        # holds serve the flow's reads.
        subject = self.store.subject(owner_mod.for_host(namespace, name),
                                     host=host, sources=sources, note=note)
        return host_network.ensure(
            self.store, subject, mac=mac,
            defaults=host_network.defaults_from_conf(conf),
            mtu=conf.vmetal.mtu)

    def follow(self, views, held, hosts=None, sources=None, notes=None):
        """Give every claimed host in ``views`` that needs it its network.

        :param views: ``{"<ns>/<name>": HostView}`` of the pass.
        :param held: the owners (as text) holding an address.
        :param hosts: ``{"<ns>/<name>": host}`` of hosts just read in full
            (a watch event), read again otherwise.
        :param sources: the property sources the caller holds (a
            :class:`~vmetal_ironic.store.kubernetes.kube_properties.
            Sources`, e.g. from its informers); listed once for all of
            ``views`` when ``None`` and any host needs its network.
        :param notes: ``{"<ns>/<name>": note}``: annotations to write with
            a host's outputs (:attr:`~vmetal_ironic.store.base.Subject.
            note`).
        :returns: a :class:`FollowReport`.
        """
        report = FollowReport()
        wanted = [where for where in sorted(views)
                  if self.follows(where) and needs_network(views[where], held)]
        if wanted and sources is None:
            try:
                sources = self.store.property_sources()
            except Exception as exc:
                # What failing to read them did to each host before: it
                # is said for each, and the pass goes on.
                LOG.warning('Cannot read the property sources: %s', exc)
                message = (str(exc) if isinstance(exc, exception.VmetalError)
                           else repr(exc))
                report.rejected.extend((where, message) for where in wanted)
                return report
        for where in wanted:
            self._follow_one(where, views[where], hosts, sources,
                             (notes or {}).get(where), report)
        return report

    def _follow_one(self, where, view, hosts, sources, note, report):
        """Give one host its network; the outcome goes into ``report``."""
        try:
            result = self._ensure(where, view, (hosts or {}).get(where),
                                  sources, note)
        except exception.NotFound:
            # Deleted since the listing: nothing to give.
            return
        except exception.VmetalError as exc:
            LOG.warning('BareMetalHost %(host)s, claimed by %(machine)s, '
                        'gets no network data: %(err)s',
                        {'host': where, 'machine': view.consumer,
                         'err': exc})
            report.rejected.append((where, str(exc)))
            return
        except Exception as exc:
            LOG.exception('BareMetalHost %s: giving its network failed '
                          'unexpectedly; the other hosts go on', where)
            report.rejected.append((where, repr(exc)))
            return
        address = (result.ipv4.address if result.ipv4 is not None
                   else 'no static address')
        LOG.info('BareMetalHost %(host)s claimed by %(machine)s: '
                 'network data with %(address)s',
                 {'host': where, 'machine': view.consumer,
                  'address': address})
        report.given.append(where)
        if result.ipv4 is not None:
            report.addresses[where] = str(result.ipv4.address)
