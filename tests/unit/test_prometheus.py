"""A registry's endpoint: a real HTTP server on loopback, scraped."""

import urllib.request

import prometheus_client
import pytest

from vmetal_ironic import prometheus


def test_the_endpoint_serves_its_registry_only():
    mine = prometheus_client.CollectorRegistry()
    prometheus_client.Counter('vmetal_test_things', 'Things.',
                              registry=mine).inc(2)
    server = prometheus.serve(mine, '127.0.0.1', 0)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics',
                                    timeout=10) as answer:
            text = answer.read().decode()
    finally:
        server.shutdown()
    assert 'vmetal_test_things_total 2.0' in text
    assert text == prometheus.render(mine)
    # Not the process-wide default registry.
    assert 'python_gc_objects_collected_total' not in text


def test_a_taken_address_raises_os_error():
    server = prometheus.serve(prometheus_client.CollectorRegistry(),
                              '127.0.0.1', 0)
    try:
        with pytest.raises(OSError):
            prometheus.serve(prometheus_client.CollectorRegistry(),
                             '127.0.0.1', server.server_address[1])
    finally:
        server.shutdown()
