"""The host says what happened: Kubernetes Events on the BareMetalHost,
and one annotation holding the current verdict.

``kubectl describe bmh`` then answers "why has my host no address" without
a conductor's log: an Event per change of verdict (``AddressAllocated``,
``AddressReleased``: Normal; ``AddressRefused``: Warning, the message
naming the bad value and the layer it came from, or who holds the
address), and :data:`VERDICT_ANNOTATION` with the latest one. A verdict
that did not change since the last one (a resync judging the same host
again) writes nothing, so a refused host costs no Event per pass.
"""

import datetime

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic.store.kubernetes import host_outputs
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import resources

LOG = log.getLogger(__name__)

COMPONENT = 'vmetal-ipam-controller'
VERDICT_ANNOTATION = names.LABEL_PREFIX + 'ipam-verdict'
BMH_API = host_outputs.BMH_API

ALLOCATED = 'AddressAllocated'
RELEASED = 'AddressReleased'
REFUSED = 'AddressRefused'
# An object written by someone else that the controller leaves out
# (:mod:`.vetting`): a Warning on that object.
SKIPPED = 'MalformedObjectSkipped'
WARNINGS = frozenset({REFUSED, SKIPPED})
# Events of cluster-scoped objects (NodeProviders) go here, as
# Kubernetes' own controllers put them.
CLUSTER_EVENTS_NAMESPACE = 'default'
# Objects whose last warning is remembered (not to repeat it every
# resync); past it the memory starts again, costing one repeat each.
REMEMBERED = 10000
# Kubernetes caps an Event's message at 1 KiB.
MESSAGE_LIMIT = 1024


def verdict_text(reason, message):
    """The annotation's value: ``<reason>: <message>`` on one line."""
    return ' '.join(f'{reason}: {message}'.split())[:MESSAGE_LIMIT]


def event_body(host, reason, message, instance, now=None):
    """A ``core/v1`` Event about ``host`` (pure)."""
    return object_event_body('/'.join(BMH_API[:2]), 'BareMetalHost', host,
                             reason, message, instance, now)


def object_event_body(api_version, kind, obj, reason, message, instance,
                      now=None):
    """A ``core/v1`` Event about ``obj`` of ``kind`` (pure); a
    cluster-scoped object's goes to :data:`CLUSTER_EVENTS_NAMESPACE`."""
    metadata = obj['metadata']
    namespace = metadata.get('namespace') or CLUSTER_EVENTS_NAMESPACE
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime(
        '%Y-%m-%dT%H:%M:%SZ')
    involved = {'apiVersion': api_version, 'kind': kind,
                'name': metadata['name'], 'uid': metadata.get('uid')}
    if metadata.get('namespace'):
        involved['namespace'] = metadata['namespace']
    return {
        'apiVersion': 'v1', 'kind': 'Event',
        'metadata': {'generateName': f'{metadata["name"]}.',
                     'namespace': namespace},
        'involvedObject': involved,
        'reason': reason,
        'message': ' '.join(message.split())[:MESSAGE_LIMIT],
        'type': 'Warning' if reason in WARNINGS else 'Normal',
        'source': {'component': COMPONENT},
        'reportingComponent': COMPONENT, 'reportingInstance': instance,
        'firstTimestamp': stamp, 'lastTimestamp': stamp, 'count': 1}


class Reporter:
    """Writes Events and the verdict annotation.

    :param api: a :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`.
    :param instance: this replica's identity.
    :param on_written: ``(ok)`` after each Event written or not (the
        metrics).
    """

    def __init__(self, api, instance, on_written=None):
        self.api = api
        self.instance = instance
        self.on_written = on_written or (lambda ok: None)
        self.events = 0
        self.failures = 0
        self._warned = {}   # (kind, namespace, name) -> (uid, message)

    def report(self, host, reason, message):
        """Say ``reason``/``message`` on ``host`` (a dict as read) unless
        its verdict annotation says so already. Never raises: a report
        that cannot be written is counted and logged, the work is done.

        :returns: whether anything was written.
        """
        if host is None:
            return False
        metadata = host['metadata']
        text = verdict_text(reason, message)
        if (metadata.get('annotations') or {}).get(VERDICT_ANNOTATION) == text:
            return False
        where = f'{metadata["namespace"]}/{metadata["name"]}'
        try:
            self._event(host, reason, message)
            group, version, plural = BMH_API
            # The annotation is the controller's alone: no compare-and-swap.
            self.api.call(f'annotate BareMetalHost {where}',
                          self.api.custom.patch_namespaced_custom_object,
                          group, version, metadata['namespace'], plural,
                          metadata['name'],
                          {'metadata': {'annotations': {
                              VERDICT_ANNOTATION: text}}},
                          _content_type=resources.MERGE_PATCH)
        except exception.VmetalError as exc:
            self._counted(False)
            LOG.warning('Cannot report %(reason)s on BareMetalHost %(host)s: '
                        '%(err)s', {'reason': reason, 'host': where,
                                    'err': exc})
            return False
        self._counted(True)
        return True

    def _event(self, host, reason, message):
        metadata = host['metadata']
        self.api.call(
            f'create Event about BareMetalHost {metadata["namespace"]}/'
            f'{metadata["name"]}', self.api.core.create_namespaced_event,
            metadata['namespace'],
            event_body(host, reason, message, self.instance))

    def announce(self, host, reason, message):
        """The Event of a verdict now, its annotation to be written by the
        caller in the host patch it makes anyway (the outputs): one host
        write instead of two. The Event goes first, so the annotation
        never says what no Event said; a verdict the annotation already
        holds writes no Event. Never raises.

        :returns: ``{VERDICT_ANNOTATION: text}`` to write, or ``{}`` when
            the Event could not be written (counted and logged; the
            annotation is left as it was).
        """
        text = verdict_text(reason, message)
        said = {VERDICT_ANNOTATION: text}
        if (host['metadata'].get('annotations') or {}).get(
                VERDICT_ANNOTATION) == text:
            return said
        try:
            self._event(host, reason, message)
        except exception.VmetalError as exc:
            self._counted(False)
            LOG.warning('Cannot report %(reason)s on BareMetalHost %(host)s: '
                        '%(err)s', {'reason': reason, 'err': exc,
                                    'host': host['metadata']['name']})
            return {}
        self._counted(True)
        return said

    def _counted(self, ok):
        if ok:
            self.events += 1
        else:
            self.failures += 1
        self.on_written(ok)

    def warn(self, api_version, kind, obj, message, reason=SKIPPED):
        """A Warning Event on ``obj`` (any kind), once per object and
        message: a resync finding the same fault writes nothing. Never
        raises.

        :returns: whether an Event was written.
        """
        metadata = obj.get('metadata') or {}
        if not metadata.get('name'):
            return False
        memory = (kind, metadata.get('namespace'), metadata['name'])
        said = (metadata.get('uid'), message)
        if self._warned.get(memory) == said:
            return False
        body = object_event_body(api_version, kind, obj, reason, message,
                                 self.instance)
        namespace = body['metadata']['namespace']
        try:
            where = '/'.join(part for part in memory[1:] if part)
            self.api.call(f'create Event about {kind} {where}',
                          self.api.core.create_namespaced_event,
                          namespace, body)
        except exception.VmetalError as exc:
            self._counted(False)
            LOG.warning('Cannot report on %(kind)s %(name)s: %(err)s',
                        {'kind': kind, 'name': metadata['name'], 'err': exc})
            return False
        if len(self._warned) >= REMEMBERED:
            self._warned.clear()
        self._warned[memory] = said
        self._counted(True)
        return True

    def forget(self, kind, obj):
        """``obj`` was deleted: a new object of that name is judged anew."""
        metadata = obj.get('metadata') or {}
        self._warned.pop((kind, metadata.get('namespace'),
                          metadata.get('name')), None)
