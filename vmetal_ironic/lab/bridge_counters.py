"""What crossed the agent's bridge in a two-network lab run, for its
``--json`` summary.

The counters are the agent's own (its Prometheus endpoint, scraped at the
end of every phase and once more before the agent is stopped), folded
into a few fields that are the same whichever store or agent (a process
or its pod) the run uses:

* ``forwarded`` and ``refused``: requests by listener (``http``: Ironic's
  HTTP root; ``api``: the ramdisk's calls to Ironic's API; ``callback``:
  the conductor's calls to the ramdisk);
* ``upstream_connections``: connections the agent opened, by listener and
  scheme (``http``, ``https``: an https one once its certificate was
  checked);
* ``cache``: the local copies' ``hit``, ``miss`` and ``changed`` answers,
  ``filled`` (copies published), ``adopted`` (copies an agent found in
  ``cache_dir`` when it started) and ``shared`` (downloads that took the
  answer of another's revalidation instead of asking Ironic themselves).

A restart of the agent (``--faults``) starts its counters from zero, so
the last reading of an agent is banked before it is stopped
(:meth:`Counters.before_stop`): the totals and the phases' shares cover
the whole run.
"""

import collections
import urllib.request

from prometheus_client import parser

LISTENERS = ('http', 'api', 'callback')
SCHEMES = ('http', 'https')
CACHE = ('hit', 'miss', 'changed', 'filled', 'adopted', 'shared')
#: Counter families read, and the label each is added up by.
_FAMILIES = {
    'vmetal_bridge_requests': 'forwarded',
    'vmetal_bridge_refused': 'refused',
    'vmetal_bridge_upstream_connections': 'upstream_connections',
    'vmetal_bridge_cache_requests': 'cache',
    'vmetal_bridge_cache_fills': 'cache',
    'vmetal_bridge_cache_adoptions': 'cache',
    'vmetal_bridge_cache_revalidations_shared': 'cache',
}
#: Cache results by the name the summary gives them (the rest of the
#: fills' and adoptions' results are not summarised).
_CACHE_RESULTS = {
    'vmetal_bridge_cache_requests': {'hit': 'hit', 'miss': 'miss',
                                     'changed': 'changed'},
    'vmetal_bridge_cache_fills': {'published': 'filled'},
    'vmetal_bridge_cache_adoptions': {'adopted': 'adopted'},
    # No result label: every sample counts.
    'vmetal_bridge_cache_revalidations_shared': {None: 'shared'},
}
TIMEOUT = 10.0


def parse(text):
    """The bridge's counts in a metrics page.

    :param text: the agent's ``/metrics`` (Prometheus text format).
    :returns: a :class:`collections.Counter` keyed by
        ``(field, key)`` or ``(field, listener, scheme)`` tuples.
    """
    counts = collections.Counter()
    for family in parser.text_string_to_metric_families(text):
        field = _FAMILIES.get(family.name)
        if field is None:
            continue
        for sample in family.samples:
            if not sample.name.endswith('_total'):
                continue
            labels = sample.labels
            if field == 'upstream_connections':
                key = (field, labels.get('listener'), labels.get('scheme'))
            elif field == 'cache':
                name = _CACHE_RESULTS[family.name].get(labels.get('result'))
                if name is None:
                    continue
                key = (field, name)
            else:
                key = (field, labels.get('listener'))
            counts[key] += int(sample.value)
    return counts


def fold(counts):
    """``counts`` (:func:`parse`'s, or a difference of two) as the
    summary's fields, every key present (0 when not counted)."""
    return {
        'forwarded': {name: counts[('forwarded', name)]
                      for name in LISTENERS},
        'refused': {name: counts[('refused', name)] for name in LISTENERS},
        'upstream_connections': {
            name: {scheme: counts[('upstream_connections', name, scheme)]
                   for scheme in SCHEMES} for name in LISTENERS},
        'cache': {name: counts[('cache', name)] for name in CACHE},
    }


def read(url, timeout=TIMEOUT):
    """The agent's metrics page at ``url`` (on the host's loopback: no
    proxy of the environment's is asked).

    :raises OSError: it did not answer.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as answer:
        return answer.read().decode('utf-8', 'replace')


class Counters:
    """The run's bridge counts, across restarts of the agent.

    :param url: the agent's metrics page (through the lab's relay into
        its namespace).
    :param reader: ``reader(url) -> text``, :func:`read` by default.
    """

    def __init__(self, url, reader=read):
        self.url = url
        self.reader = reader
        #: Counts of the agents already stopped.
        self.banked = collections.Counter()
        #: The running agent's last reading.
        self.current = collections.Counter()
        #: The run's counts at the end of the last phase.
        self.at_phase = collections.Counter()
        self.restarts = 0
        #: Readings that failed (the counts then lag behind).
        self.unread = 0

    def scrape(self):
        """Read the running agent; on failure keep its last reading."""
        try:
            self.current = parse(self.reader(self.url))
        except (OSError, ValueError):
            self.unread += 1
        return self.total()

    def total(self):
        return self.banked + self.current

    def phase(self):
        """Read now: the summary's fields for what crossed since the
        previous phase ended."""
        now = self.scrape()
        share = now - self.at_phase
        self.at_phase = now
        return fold(share)

    def before_stop(self):
        """Read the agent about to be stopped and bank its counts: the
        next one starts from zero."""
        self.scrape()
        self.banked += self.current
        self.current = collections.Counter()
        self.restarts += 1

    def summary(self):
        """The run's fields: :func:`fold` of the totals, with
        ``in_path`` (true), ``agent_restarts`` and ``unread``."""
        return {'in_path': True, 'agent_restarts': self.restarts,
                'unread': self.unread, **fold(self.total())}
