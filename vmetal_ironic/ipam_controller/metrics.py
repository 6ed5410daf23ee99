"""Prometheus metrics of ``vmetal-ipam-controller``.

What an operator asks of a controller, without its log: does this replica
lead, how much work waits, what fails and how often, how long a host
takes, and which objects written by someone else it had to leave out.
Each controller gets its own registry, so two replicas in one process
(tests, the bench) do not collide on metric names; gauges that mirror a
live value (queue depth, leading) are read when scraped, never copied.
"""

import prometheus_client

from vmetal_ironic import prometheus

_COUNTER = prometheus_client.Counter
_GAUGE = prometheus_client.Gauge

# (attribute, type, metric name, help, labels): one row a metric.
_DECLARED = (
    ('steps', _COUNTER, 'vmetal_ipam_controller_steps',
     'Reconcile steps run, by step (read, release, follow, collect) and '
     'result (ok, failed); a failed step is retried with backoff.',
     ('step', 'result')),
    ('retries', _COUNTER, 'vmetal_ipam_controller_queue_retries',
     'Keys put back in the work queue after a failed reconcile.', ()),
    ('verdicts', _COUNTER, 'vmetal_ipam_controller_verdicts',
     'What the controller did to hosts, by outcome (allocated, released, '
     'refused).', ('outcome',)),
    ('skipped', _COUNTER, 'vmetal_ipam_controller_skipped_objects',
     'Objects written by someone else left out as malformed, by kind and '
     'reason; each is reported by an Event on the object.',
     ('kind', 'reason')),
    ('events', _COUNTER, 'vmetal_ipam_controller_events',
     'Kubernetes Events written, by result (written, failed).',
     ('result',)),
    ('watch_failures', _COUNTER, 'vmetal_ipam_controller_watch_failures',
     'Lists or watches that failed and were started again, by kind.',
     ('kind',)),
    ('leadership', _COUNTER, 'vmetal_ipam_controller_leadership_changes',
     'Times this replica started or stopped leading, by change.',
     ('change',)),
    ('lease_transitions', _GAUGE, 'vmetal_ipam_controller_lease_transitions',
     'leaseTransitions of the Lease as last read: how often leadership '
     'moved between replicas.', ()),
)


class Metrics:
    """The controller's metrics: one attribute a row of ``_DECLARED``,
    plus :attr:`queue_depth`, :attr:`leading` and :attr:`latency`."""

    def __init__(self):
        self.registry = prometheus_client.CollectorRegistry()
        for attribute, kind, name, documentation, labels in _DECLARED:
            setattr(self, attribute, kind(name, documentation, labels,
                                          registry=self.registry))
        self.queue_depth = _GAUGE(
            'vmetal_ipam_controller_queue_depth',
            'Keys waiting in the work queue (ready, delayed for a retry, or '
            'added again while in work).', registry=self.registry)
        self.leading = _GAUGE(
            'vmetal_ipam_controller_leading',
            '1 while this replica holds the Lease and works, 0 while it '
            'stands by.', registry=self.registry)
        # From 1 ms (a host needing nothing) to a minute (an API server
        # timing out and the store's retries).
        self.latency = prometheus_client.Histogram(
            'vmetal_ipam_controller_reconcile_seconds',
            'Seconds one key took to reconcile, by kind (host, collect).',
            ('kind',), registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0, 30.0, 60.0))

    def follow_queue(self, depth):
        """Read the queue depth from ``depth()`` at every scrape."""
        self.queue_depth.set_function(depth)

    def follow_leading(self, leading):
        """Read whether this replica leads from ``leading()`` at every
        scrape."""
        self.leading.set_function(lambda: 1.0 if leading() else 0.0)

    def serve(self, host, port):
        """Start the HTTP endpoint (:func:`vmetal_ironic.prometheus.
        serve`)."""
        return prometheus.serve(self.registry, host, port)

    def render(self):
        return prometheus.render(self.registry)
