"""Prometheus metrics of the DHCP agent.

Each agent gets its own registry so two agents in one process (tests) do
not collide on metric names.
"""

import prometheus_client


class Metrics:
    """The agent's counters and gauges."""

    def __init__(self):
        self.registry = prometheus_client.CollectorRegistry()
        reg = self.registry
        self.requests = prometheus_client.Counter(
            'vmetal_dhcp_requests', 'DHCP requests received, by message '
            'type.', ['type'], registry=reg)
        self.replies = prometheus_client.Counter(
            'vmetal_dhcp_replies', 'DHCP replies sent, by message type.',
            ['type'], registry=reg)
        self.ignored = prometheus_client.Counter(
            'vmetal_dhcp_ignored', 'Requests not answered, by reason.',
            ['reason'], registry=reg)
        self.unknown = prometheus_client.Counter(
            'vmetal_dhcp_unknown_mac', 'Requests from MACs without a '
            'reservation that were ignored.', registry=reg)
        self.malformed = prometheus_client.Counter(
            'vmetal_dhcp_malformed', 'Packets dropped as malformed, '
            'truncated or hostile.', registry=reg)
        self.send_errors = prometheus_client.Counter(
            'vmetal_dhcp_send_errors', 'Replies the kernel refused to '
            'send.', registry=reg)
        self.cache_size = prometheus_client.Gauge(
            'vmetal_dhcp_reservations', 'Reservations in the in-memory '
            'cache.', registry=reg)
        self.cache_stale = prometheus_client.Gauge(
            'vmetal_dhcp_store_unreachable', '1 while the store cannot be '
            'read and the cache serves the last good data.', registry=reg)
        self.tftp_transfers = prometheus_client.Counter(
            'vmetal_tftp_transfers', 'TFTP read requests, by result '
            '(served = sent whole).',
            ['result'], registry=reg)
        self.tftp_bytes = prometheus_client.Counter(
            'vmetal_tftp_bytes', 'Bytes of files sent whole over TFTP.',
            registry=reg)
        self.tftp_sessions = prometheus_client.Gauge(
            'vmetal_tftp_sessions', 'TFTP transfers in progress.',
            registry=reg)
        self.http_requests = prometheus_client.Counter(
            'vmetal_http_boot_requests', 'Boot-file HTTP requests, by '
            'result.', ['result'], registry=reg)
        self.http_bytes = prometheus_client.Counter(
            'vmetal_http_boot_bytes', 'Bytes of boot files sent over HTTP.',
            registry=reg)
        self.ra_sent = prometheus_client.Counter(
            'vmetal_ipv6_ra_sent', 'IPv6 router advertisements sent.',
            registry=reg)

    def serve(self, host, port):
        """Start the HTTP endpoint on a daemon thread.

        :returns: the server object (``shutdown()`` stops it).
        """
        server, _thread = prometheus_client.start_http_server(
            port, addr=host, registry=self.registry)
        return server

    def render(self):
        return prometheus_client.generate_latest(self.registry).decode()
