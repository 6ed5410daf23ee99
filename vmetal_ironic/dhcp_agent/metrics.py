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
        self.destinations = prometheus_client.Counter(
            'vmetal_dhcp_reply_destinations', 'Replies by where they went: '
            'broadcast, client (unicast to ciaddr) or relay (giaddr).',
            ['to'], registry=reg)
        self.oversize = prometheus_client.Counter(
            'vmetal_dhcp_replies_oversize', 'Replies still above the '
            'client\'s size limit (576 bytes or option 57) with every '
            'optional option dropped.', registry=reg)
        self.internal_errors = prometheus_client.Counter(
            'vmetal_dhcp_internal_errors', 'Packets whose handling raised; '
            'the packet was dropped.', registry=reg)
        self.log_suppressed = prometheus_client.Counter(
            'vmetal_dhcp_log_lines_suppressed', 'Log lines left out by a '
            'rate limit (floods of ignored, released or failing '
            'packets).', registry=reg)
        self.dynamic_revoked = prometheus_client.Counter(
            'vmetal_dhcp_dynamic_revoked', 'REQUESTs NAKed because a '
            'reservation took the address of their dynamic lease.',
            registry=reg)
        self.reservations_skipped = prometheus_client.Gauge(
            'vmetal_dhcp_reservations_skipped', 'Reservations of the last '
            'load left out as invalid (by the store or the cache).',
            registry=reg)
        self.reservation_loads = prometheus_client.Counter(
            'vmetal_dhcp_reservation_loads', 'Reservation loads from the '
            'store.', registry=reg)
        self.store_revision = prometheus_client.Info(
            'vmetal_dhcp_store', 'Store revision of the reservations being '
            'served.', registry=reg)
        self.store_feed = prometheus_client.Enum(
            'vmetal_dhcp_store_feed', 'State of the store feed: ok, '
            'unreachable (serving the cached data) or failing (the poller '
            'raised; retried with backoff).',
            states=['ok', 'unreachable', 'failing'], registry=reg)
        self.store_feed_errors = prometheus_client.Counter(
            'vmetal_dhcp_store_feed_errors', 'Failures of the store feed, '
            'by kind.', ['kind'], registry=reg)
        self.interface_up = prometheus_client.Gauge(
            'vmetal_dhcp_interface_up', '1 while the provisioning interface '
            'exists and the sockets are bound to it.', registry=reg)
        self.interface_rebinds = prometheus_client.Counter(
            'vmetal_dhcp_interface_rebinds', 'Times the sockets were opened '
            'again on a re-created provisioning interface.', registry=reg)
        self.config_reloads = prometheus_client.Counter(
            'vmetal_dhcp_config_reloads', 'Configuration reloads (SIGHUP), '
            'by result.', ['result'], registry=reg)

    def serve(self, host, port):
        """Start the HTTP endpoint on a daemon thread.

        :returns: the server object (``shutdown()`` stops it).
        """
        server, _thread = prometheus_client.start_http_server(
            port, addr=host, registry=self.registry)
        return server

    def render(self):
        return prometheus_client.generate_latest(self.registry).decode()
