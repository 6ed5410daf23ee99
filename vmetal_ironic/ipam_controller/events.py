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
from vmetal_ironic.store.kubernetes import kube_names as names

LOG = log.getLogger(__name__)

COMPONENT = 'vmetal-ipam-controller'
VERDICT_ANNOTATION = names.LABEL_PREFIX + 'ipam-verdict'
MERGE_PATCH = 'application/merge-patch+json'
BMH_API = ('metal3.io', 'v1alpha1', 'baremetalhosts')

ALLOCATED = 'AddressAllocated'
RELEASED = 'AddressReleased'
REFUSED = 'AddressRefused'
# Kubernetes caps an Event's message at 1 KiB.
MESSAGE_LIMIT = 1024


def verdict_text(reason, message):
    """The annotation's value: ``<reason>: <message>`` on one line."""
    return ' '.join(f'{reason}: {message}'.split())[:MESSAGE_LIMIT]


def event_body(host, reason, message, instance, now=None):
    """A ``core/v1`` Event about ``host`` (pure)."""
    metadata = host['metadata']
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime(
        '%Y-%m-%dT%H:%M:%SZ')
    return {
        'apiVersion': 'v1', 'kind': 'Event',
        'metadata': {'generateName': f'{metadata["name"]}.',
                     'namespace': metadata['namespace']},
        'involvedObject': {'apiVersion': '/'.join(BMH_API[:2]),
                           'kind': 'BareMetalHost',
                           'name': metadata['name'],
                           'namespace': metadata['namespace'],
                           'uid': metadata.get('uid')},
        'reason': reason,
        'message': ' '.join(message.split())[:MESSAGE_LIMIT],
        'type': 'Warning' if reason == REFUSED else 'Normal',
        'source': {'component': COMPONENT},
        'reportingComponent': COMPONENT, 'reportingInstance': instance,
        'firstTimestamp': stamp, 'lastTimestamp': stamp, 'count': 1}


class Reporter:
    """Writes Events and the verdict annotation.

    :param api: a :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`.
    :param instance: this replica's identity.
    """

    def __init__(self, api, instance):
        self.api = api
        self.instance = instance
        self.events = 0
        self.failures = 0

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
            self.api.call(f'create Event about BareMetalHost {where}',
                          self.api.core.create_namespaced_event,
                          metadata['namespace'],
                          event_body(host, reason, message, self.instance))
            group, version, plural = BMH_API
            # The annotation is the controller's alone: no compare-and-swap.
            self.api.call(f'annotate BareMetalHost {where}',
                          self.api.custom.patch_namespaced_custom_object,
                          group, version, metadata['namespace'], plural,
                          metadata['name'],
                          {'metadata': {'annotations': {
                              VERDICT_ANNOTATION: text}}},
                          _content_type=MERGE_PATCH)
        except exception.VmetalError as exc:
            self.failures += 1
            LOG.warning('Cannot report %(reason)s on BareMetalHost %(host)s: '
                        '%(err)s', {'reason': reason, 'host': where,
                                    'err': exc})
            return False
        self.events += 1
        return True
