"""The Prometheus endpoint of a process's own registry (the DHCP agent's,
the IPAM controller's): each process keeps its metrics in a registry of
its own, so two in one interpreter (tests, benches) never collide."""

import prometheus_client


def serve(registry, host, port):
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon
    thread.

    :returns: the server object (``shutdown()`` stops it;
        ``server_address`` says the port when ``port`` was 0).
    :raises OSError: the address cannot be bound.
    """
    server, _thread = prometheus_client.start_http_server(
        port, addr=host, registry=registry)
    return server


def render(registry):
    """The text exposition of ``registry``."""
    return prometheus_client.generate_latest(registry).decode()
