"""The lab's reading of the agent's bridge counters: from the agent's own
metrics page (rendered by its real registry here), folded into the
summary's fields, across phases and a restart of the agent."""

from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.lab import bridge_counters


def _agent(forwarded=0, hits=0, misses=0, fills=0, adopted=0, https=0,
           shared=0):
    """An agent's metrics page with these counts."""
    metrics = metrics_mod.Metrics()
    if forwarded:
        metrics.bridge_requests.labels('http', '2xx').inc(forwarded)
        metrics.bridge_requests.labels('http', '3xx').inc(1)
        metrics.bridge_requests.labels('callback', '2xx').inc(2)
    metrics.bridge_refused.labels('api', 'path').inc(3)
    metrics.bridge_refused.labels('api', 'method').inc(1)
    if https:
        metrics.bridge_upstream_connections.labels('api', 'https').inc(https)
    metrics.bridge_upstream_connections.labels('http', 'http').inc(5)
    for result, count in (('hit', hits), ('miss', misses)):
        if count:
            metrics.bridge_cache_requests.labels(result).inc(count)
    if fills:
        metrics.bridge_cache_fills.labels('published').inc(fills)
        metrics.bridge_cache_fills.labels('busy').inc(4)
    if adopted:
        metrics.bridge_cache_adoptions.labels('adopted').inc(adopted)
        metrics.bridge_cache_adoptions.labels('discarded').inc(1)
    if shared:
        metrics.bridge_cache_revalidations_shared.inc(shared)
    # Not the bridge's: left out.
    metrics.requests.labels('DISCOVER').inc(9)
    return metrics.render()


def test_parse_and_fold_give_every_field():
    fields = bridge_counters.fold(bridge_counters.parse(_agent(
        forwarded=10, hits=2, misses=3, fills=2, https=7, shared=6)))
    assert fields == {
        'forwarded': {'http': 11, 'api': 0, 'callback': 2},
        'refused': {'http': 0, 'api': 4, 'callback': 0},
        'upstream_connections': {
            'http': {'http': 5, 'https': 0},
            'api': {'http': 0, 'https': 7},
            'callback': {'http': 0, 'https': 0}},
        'cache': {'hit': 2, 'miss': 3, 'changed': 0, 'filled': 2,
                  'adopted': 0, 'shared': 6},
    }


def test_fold_of_nothing_is_all_zero():
    fields = bridge_counters.fold(bridge_counters.parse(''))
    assert fields['cache'] == dict.fromkeys(bridge_counters.CACHE, 0)
    assert set(fields['forwarded']) == set(bridge_counters.LISTENERS)


class _Pages:
    """The pages an agent serves, in turn; ``None`` is no answer."""

    def __init__(self, *pages):
        self.pages = list(pages)

    def __call__(self, url):
        page = self.pages.pop(0)
        if page is None:
            raise OSError('connection refused')
        return page


def test_phases_and_totals_survive_a_restart():
    pages = _Pages(
        _agent(misses=2, fills=2),              # inspection: cold
        _agent(hits=2, misses=2, fills=2),      # deploy, before the stop
        _agent(adopted=2),                      # deploy, the new agent
        None,                                   # a failed reading
        _agent(adopted=2, hits=2),              # cleaning
        _agent(adopted=2, hits=2))              # the end of the run
    counters = bridge_counters.Counters('http://x/metrics', reader=pages)
    inspection = counters.phase()
    assert inspection['cache']['miss'] == 2
    assert inspection['cache']['filled'] == 2
    counters.before_stop()
    deploy = counters.phase()
    assert deploy['cache'] == {'hit': 2, 'miss': 0, 'changed': 0,
                               'filled': 0, 'adopted': 2, 'shared': 0}
    assert counters.phase()['cache']['hit'] == 0   # unread: no news
    cleaning = counters.phase()
    assert cleaning['cache']['hit'] == 2
    assert cleaning['cache']['adopted'] == 0
    counters.scrape()
    summary = counters.summary()
    assert summary['in_path'] is True
    assert summary['agent_restarts'] == 1
    assert summary['unread'] == 1
    assert summary['cache'] == {'hit': 4, 'miss': 2, 'changed': 0,
                                'filled': 2, 'adopted': 2, 'shared': 0}
    assert summary['upstream_connections']['http']['http'] == 10


def test_counters_read_the_agents_endpoint_over_http():
    metrics = metrics_mod.Metrics()
    server = metrics.serve('127.0.0.1', 0)
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/metrics'
        counters = bridge_counters.Counters(url)
        metrics.bridge_cache_requests.labels('hit').inc(3)
        assert counters.phase()['cache']['hit'] == 3
    finally:
        server.shutdown()
        server.server_close()
    # The endpoint gone (an agent stopped): the last reading stays.
    assert counters.scrape()[('cache', 'hit')] == 3
    assert counters.unread == 1
