"""Prometheus metrics of the DHCP agent.

Each agent gets its own registry so two agents in one process (tests) do
not collide on metric names.
"""

import prometheus_client

from vmetal_ironic import prometheus

_COUNTER = prometheus_client.Counter
_GAUGE = prometheus_client.Gauge

# (attribute, type, metric name, help, labels): one row a metric, so adding
# one is one line and every metric is declared the same way.
_DECLARED = (
    ('requests', _COUNTER, 'vmetal_dhcp_requests',
     'DHCP requests received, by message type.', ('type',)),
    ('replies', _COUNTER, 'vmetal_dhcp_replies',
     'DHCP replies sent, by message type.', ('type',)),
    ('ignored', _COUNTER, 'vmetal_dhcp_ignored',
     'Requests not answered, by reason.', ('reason',)),
    ('unknown', _COUNTER, 'vmetal_dhcp_unknown_mac',
     'Requests from MACs without a reservation that were ignored.', ()),
    ('malformed', _COUNTER, 'vmetal_dhcp_malformed',
     'Packets dropped as malformed, truncated or hostile.', ()),
    ('send_errors', _COUNTER, 'vmetal_dhcp_send_errors',
     'Replies the kernel refused to send.', ()),
    ('cache_size', _GAUGE, 'vmetal_dhcp_reservations',
     'Reservations in the in-memory cache.', ()),
    ('cache_stale', _GAUGE, 'vmetal_dhcp_store_unreachable',
     '1 while the store cannot be read and the cache serves the last good '
     'data.', ()),
    ('tftp_transfers', _COUNTER, 'vmetal_tftp_transfers',
     'TFTP read requests, by result (served = sent whole).', ('result',)),
    ('tftp_bytes', _COUNTER, 'vmetal_tftp_bytes',
     'Bytes of files sent whole over TFTP.', ()),
    ('tftp_limited', _COUNTER, 'vmetal_tftp_limited',
     'TFTP limits applied against peers, by what: timeout_declined (a '
     'timeout option above max_timeout left out of the OACK), '
     'evicted_unanswered (a full table dropped a session whose peer never '
     'answered), evicted_per_address (an address at '
     'max_sessions_per_address lost its oldest idle session), '
     'resend_withheld (a session ended with resends held back: its peer '
     'never acknowledged DATA), http_busy (an HTTP connection answered 503), '
     'http_evicted (an HTTP connection still waiting for its request head '
     'closed to make room), http_deadline (an HTTP connection closed for '
     'being too slow).', ('what',)),
    ('tftp_sessions', _GAUGE, 'vmetal_tftp_sessions',
     'TFTP transfers in progress.', ()),
    ('tftp_data_path', _GAUGE, 'vmetal_tftp_data_path',
     '1 for the path the TFTP server sends blocks on (compiled: the C '
     'pump; python: the interpreter, when the module is not built or '
     '[vmetal_tftp]compiled is false), 0 for the other.', ('path',)),
    ('http_requests', _COUNTER, 'vmetal_http_boot_requests',
     'Boot-file HTTP requests, by result.', ('result',)),
    ('http_bytes', _COUNTER, 'vmetal_http_boot_bytes',
     'Bytes of boot files sent over HTTP.', ()),
    ('ra_sent', _COUNTER, 'vmetal_ipv6_ra_sent',
     'IPv6 router advertisements sent.', ()),
    ('destinations', _COUNTER, 'vmetal_dhcp_reply_destinations',
     'Replies by where they went: broadcast, client (unicast to ciaddr) or '
     'relay (giaddr).', ('to',)),
    ('oversize', _COUNTER, 'vmetal_dhcp_replies_oversize',
     'Replies still above the client\'s size limit (576 bytes or option 57) '
     'with every optional option dropped.', ()),
    ('internal_errors', _COUNTER, 'vmetal_dhcp_internal_errors',
     'Packets whose handling raised; the packet was dropped.', ()),
    ('log_suppressed', _COUNTER, 'vmetal_dhcp_log_lines_suppressed',
     'Log lines left out by a rate limit (floods of ignored, released or '
     'failing packets).', ()),
    ('dynamic_revoked', _COUNTER, 'vmetal_dhcp_dynamic_revoked',
     'REQUESTs NAKed because a reservation took the address of their '
     'dynamic lease.', ()),
    ('inspection_leases', _COUNTER, 'vmetal_dhcp_inspection_leases',
     'Shared inspection-range leases, by event: claimed (created by this '
     'agent), adopted (another agent had bound the MAC), renewed, lost (a '
     'renewal found it changed or gone), expired, withdrawn (the MAC has a '
     'reservation), released (RELEASE), declined (DECLINE: held for nobody '
     'until it expires), conflict (a new claim answered ARP on the L2: held '
     'for nobody until it expires), refused (range full or too many '
     'waiting).',
     ('event',)),
    ('inspection_cached', _GAUGE, 'vmetal_dhcp_inspection_leases_cached',
     'Shared inspection-range leases of the scope in the agent\'s cache.',
     ()),
    ('inspection_skipped', _GAUGE, 'vmetal_dhcp_inspection_leases_skipped',
     'Inspection claims of the store left out as invalid (bad data).', ()),
    ('inspection_candidates_taken', _COUNTER,
     'vmetal_dhcp_inspection_candidates_taken',
     'Addresses of the inspection range a claim found held by someone '
     'else (one refused create each).', ()),
    ('inspection_store_errors', _COUNTER,
     'vmetal_dhcp_inspection_store_errors',
     'Failed store calls of the inspection range, by work (claim, renew, '
     'release, sweep); the work is retried by the client\'s next packet '
     'or the next sweep.', ('kind',)),
    ('reservations_skipped', _GAUGE, 'vmetal_dhcp_reservations_skipped',
     'Reservations of the last load left out as invalid (by the store or '
     'the cache).', ()),
    ('reservations_address_taken', _GAUGE,
     'vmetal_dhcp_reservations_address_taken',
     'Reservations not served because another MAC of this L2 is reserved '
     'the same address (included in vmetal_dhcp_reservations_skipped).',
     ()),
    ('reservation_loads', _COUNTER, 'vmetal_dhcp_reservation_loads',
     'Reservation loads from the store.', ()),
    ('store_revision', prometheus_client.Info, 'vmetal_dhcp_store',
     'Store revision of the reservations being served.', ()),
    ('store_feed_errors', _COUNTER, 'vmetal_dhcp_store_feed_errors',
     'Failures of the store feed, by kind.', ('kind',)),
    ('interface_up', _GAUGE, 'vmetal_dhcp_interface_up',
     '1 while the provisioning interface exists and the sockets are bound '
     'to it.', ()),
    ('interface_rebinds', _COUNTER, 'vmetal_dhcp_interface_rebinds',
     'Times the sockets were opened again on a re-created provisioning '
     'interface.', ()),
    ('config_reloads', _COUNTER, 'vmetal_dhcp_config_reloads',
     'Configuration reloads (SIGHUP), by result.', ('result',)),
    ('bridge_requests', _COUNTER, 'vmetal_bridge_requests',
     'Requests the bridge forwarded, by listener (http, api, callback) '
     'and the upstream\'s status class.', ('listener', 'status')),
    ('bridge_refused', _COUNTER, 'vmetal_bridge_refused',
     'Requests and connections the bridge did not forward, by listener '
     'and reason (path, method, not_origin_form, not_reserved, busy, '
     'client_limit, cut_off, upstream_unreachable, upstream_timeout, ...).',
     ('listener', 'reason')),
    ('bridge_upstream_errors', _COUNTER, 'vmetal_bridge_upstream_errors',
     'Upstreams (Ironic, a ramdisk) that failed a forward, by listener and '
     'kind (unreachable, timeout, bad_response).', ('listener', 'kind')),
    ('bridge_upstream_connections', _COUNTER,
     'vmetal_bridge_upstream_connections',
     'Connections the bridge opened to an upstream (Ironic, a ramdisk), by '
     'listener and scheme; an https one is counted once its TLS handshake '
     'and certificate check passed.', ('listener', 'scheme')),
    ('bridge_bytes', _COUNTER, 'vmetal_bridge_bytes',
     'Response body bytes the bridge forwarded, by listener.',
     ('listener',)),
    ('bridge_connections', _GAUGE, 'vmetal_bridge_connections',
     'Connections the bridge holds now, over all listeners.', ()),
    ('bridge_cache_requests', _COUNTER, 'vmetal_bridge_cache_requests',
     'HTTP-root GET and HEAD requests with local copies on, by result: '
     'hit (Ironic answered 304, served from the copy), changed (the copy '
     'was dropped: Ironic answered anything else) or miss (no copy).',
     ('result',)),
    ('bridge_cache_revalidations', _COUNTER,
     'vmetal_bridge_cache_revalidations',
     'Answers to the conditional requests the bridge made for its '
     'copies, by result (not_modified, changed).', ('result',)),
    ('bridge_cache_revalidations_shared', _COUNTER,
     'vmetal_bridge_cache_revalidations_shared',
     'Downloads of a copy that took the answer to a conditional request '
     'another download of it started (or would have started), instead '
     'of asking Ironic themselves.', ()),
    ('bridge_cache_fills', _COUNTER, 'vmetal_bridge_cache_fills',
     'Copies the bridge started or declined to write, by result: '
     'published (whole and renamed into place), discarded (cut, short or '
     'a failed write: nothing kept), busy (another fill of the file was '
     'under way), no_room (over cache_max_bytes), failed (not created).',
     ('result',)),
    ('bridge_cache_evictions', _COUNTER, 'vmetal_bridge_cache_evictions',
     'Copies removed, least recently used first, to stay within '
     'cache_max_bytes.', ()),
    ('bridge_cache_bytes', _GAUGE, 'vmetal_bridge_cache_bytes',
     'Bytes the bridge\'s copies take, fills under way included.', ()),
    ('bridge_cache_adoptions', _COUNTER, 'vmetal_bridge_cache_adoptions',
     'What the agent found in cache_dir at start, by result: adopted (a '
     'whole copy with its record, served again once Ironic revalidates '
     'it) or discarded (a fill, or a copy it cannot vouch for: removed).',
     ('result',)),
    ('bridge_callback_cert_reloads', _COUNTER,
     'vmetal_bridge_callback_cert_reloads',
     'New versions of callback_cert_file/callback_key_file, by result: '
     'loaded (served from the next handshake on) or failed (did not load: '
     'the previous certificate is still served; counted once a version).',
     ('result',)),
    ('bridge_callback_cert_expiry', _GAUGE,
     'vmetal_bridge_callback_cert_expiry_timestamp_seconds',
     'When the certificate the callback listener serves expires (its '
     'notAfter, Unix time), set at every load of callback_cert_file.', ()),
)


class Metrics:
    """The agent's counters and gauges: one attribute a row of
    ``_DECLARED``, plus :attr:`store_feed`."""

    def __init__(self):
        self.registry = prometheus_client.CollectorRegistry()
        for attribute, kind, name, documentation, labels in _DECLARED:
            setattr(self, attribute, kind(name, documentation, labels,
                                          registry=self.registry))
        # The one metric with more than labels to declare.
        self.store_feed = prometheus_client.Enum(
            'vmetal_dhcp_store_feed', 'State of the store feed: ok, '
            'unreachable (serving the cached data) or failing (the poller '
            'raised; retried with backoff).',
            states=['ok', 'unreachable', 'failing'], registry=self.registry)

    def serve(self, host, port):
        """Start the HTTP endpoint (:func:`vmetal_ironic.prometheus.
        serve`)."""
        return prometheus.serve(self.registry, host, port)

    def render(self):
        return prometheus.render(self.registry)
