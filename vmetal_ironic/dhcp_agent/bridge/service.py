"""The bridge's three listeners on one asyncio event loop thread.

* ``http`` (provisioning side): GET and HEAD to Ironic's HTTP root;
* ``api`` (provisioning side): the IPA ramdisk's calls to Ironic's API,
  heartbeats rewritten (:mod:`.heartbeat`);
* ``callback`` (cluster side): the conductor's calls to a ramdisk's API,
  toward reserved addresses on the ramdisk's port only.

Standard library ``asyncio`` streams carry the bytes; one thread serves
every connection, so a thousand slow clients cost a thousand sockets and
small buffers, not a thousand threads.
"""

import asyncio
import concurrent.futures
import functools
import ipaddress
import threading

from oslo_log import log

from vmetal_ironic.dhcp_agent.bridge import admission as admission_mod
from vmetal_ironic.dhcp_agent.bridge import cert_reload
from vmetal_ironic.dhcp_agent.bridge import exchange
from vmetal_ironic.dhcp_agent.bridge import heartbeat
from vmetal_ironic.dhcp_agent.bridge import http_cache
from vmetal_ironic.dhcp_agent.bridge import revalidation
from vmetal_ironic.dhcp_agent.bridge import routes
from vmetal_ironic.dhcp_agent.bridge import splice
from vmetal_ironic.dhcp_agent.bridge import upstream as upstream_mod
from vmetal_ironic.dhcp_agent import log_limit
from vmetal_ironic.dhcp_agent import settings as settings_mod

LOG = log.getLogger(__name__)


class _Forward:
    """A provisioning-side listener: fixed routes to one upstream."""

    requests = None

    def __init__(self, name, route, upstream, rewrite=None, responses=None,
                 cache=None, sender=None, revalidations=None):
        self.name = name
        self._route = route
        self._upstream = upstream
        self._rewrite = rewrite
        self.responses = responses
        #: Local copies of the HTTP root (:mod:`.http_cache`) or ``None``.
        self.cache = cache
        #: Threads sending the copies (:class:`.splice.Sender`) or
        #: ``None``: sent from the event loop's thread.
        self.sender = sender
        #: The copies' shared conditional requests
        #: (:class:`.revalidation.Revalidations`), with ``cache``.
        self.revalidations = revalidations

    def route(self, method, target, source):
        return self._route(method, target)

    def upstream(self, route):
        return self._upstream

    def rewrite(self, body, source):
        return self._rewrite(body, source)


class _Callback:
    """The cluster-side listener: ``/<address>/v1/...`` to that ramdisk."""

    name = 'callback'
    responses = None
    cache = None

    def __init__(self, hosts, ramdisks, ipa_port, requests=None):
        self._hosts = hosts
        self._ramdisks = ramdisks
        self._ipa_port = ipa_port
        self.requests = requests

    def route(self, method, target, source):
        return routes.callback(method, target, self._hosts)

    def upstream(self, route):
        found = self._ramdisks.get(route.address)
        if found is None:
            raise exchange.UpstreamUnknown(
                f'no heartbeat from {route.address} through this agent '
                'since it started; the next one teaches it')
        return found[1]

    def rewrite(self, body, source):
        raise AssertionError('the callback listener has no heartbeats')


class _Hosts:
    """The addresses the callback proxy may reach, as a container of
    packed IPv4 addresses: reserved ones, or leased now (read at every
    request, so a lease that ends closes the way at once)."""

    def __init__(self, reserved, leased):
        self._reserved = reserved
        self._leased = leased

    def __contains__(self, packed):
        return packed in self._reserved() or (
            self._leased is not None and self._leased(packed))


class _Observer:
    """Counts into the agent's metrics; logs an upstream going bad once
    (WARNING) and coming back once (INFO)."""

    def __init__(self, metrics):
        self.metrics = metrics
        self.failing = set()
        self.ramdisk_failures = log_limit.LogLimiter(
            10, 60.0, what='ramdisk callback failures')

    def refused(self, listener, reason):
        if self.metrics is not None:
            self.metrics.bridge_refused.labels(listener, reason).inc()

    def forwarded(self, listener, status, nbytes):
        if self.metrics is not None:
            self.metrics.bridge_requests.labels(
                listener, f'{status // 100}xx').inc()
            self.metrics.bridge_bytes.labels(listener).inc(nbytes)

    def connected(self, listener, scheme):
        if self.metrics is not None:
            self.metrics.bridge_upstream_connections.labels(
                listener, scheme).inc()

    def upstream_failed(self, listener, name, kind, detail):
        if self.metrics is not None:
            self.metrics.bridge_upstream_errors.labels(listener, kind).inc()
        if listener == 'callback':
            self.ramdisk_failures.warning('Callback to %s failed (%s): %s',
                                          name, kind, detail)
        elif name not in self.failing:
            self.failing.add(name)
            LOG.warning('Bridge: %s failed (%s: %s); servers get 502/504 '
                        'until it answers again', name, kind, detail)

    def upstream_ok(self, listener, name):
        if name in self.failing:
            self.failing.discard(name)
            LOG.info('Bridge: %s answers again', name)


class BridgeService:
    """Run the bridge.

    :param config: a :class:`~.config.BridgeConfig`.
    :param reserved: callable returning the packed IPv4 addresses the
        agent holds reservations for (read at every callback request).
    :param metrics: :class:`~vmetal_ironic.dhcp_agent.metrics.Metrics` or
        ``None``.
    :param leased: callable telling whether a packed IPv4 address is
        leased now from the agent's dynamic or shared inspection range (a
        ramdisk inspecting on such a lease), or ``None``.
    """

    def __init__(self, config, reserved, metrics=None, leased=None):
        self.config = config
        self.reserved = reserved
        self.hosts = _Hosts(reserved, leased)
        self.metrics = metrics
        self.observer = _Observer(metrics)
        self.admission = admission_mod.Admission(
            config.max_connections, config.max_connections_per_client)
        # address -> (Ramdisk, Upstream): learned from heartbeats of the
        # agent's hosts only, so it holds at most one entry a reservation
        # or an address of its ranges.
        self.ramdisks = {}
        self.ports = {}
        #: Local copies of the HTTP root, when ``cache_dir`` is set.
        self.cache = None
        #: Threads sending the copies, a download each, when there are
        #: copies and ``cache_send_threads`` is not 0.
        self.sender = None
        #: The conditional requests for the copies, shared by the
        #: downloads of a copy that arrive together, when there are copies.
        self.revalidations = None
        #: The callback listener's certificate check, when it serves TLS.
        self.cert_reload = None
        self._cert_timer = None
        self._loop = None
        self._thread = None
        self._servers = []
        self._tasks = set()

    def _learn(self, body, source):
        new_body, ramdisk = heartbeat.rewrite(
            body, source, self.config.callback_advertise_url,
            self.config.ipa_port)
        try:
            ours = ipaddress.IPv4Address(source).packed in self.hosts
        except ValueError:
            ours = False
        if ours:
            known = self.ramdisks.get(source)
            if known is None or known[0] != ramdisk:
                self.ramdisks[source] = (ramdisk, upstream_mod.ramdisk(
                    source, self.config.ipa_port, ramdisk))
        return new_body

    def _listeners(self):
        config = self.config
        return (
            (_Forward('http', routes.http_root, config.http_upstream,
                      responses=config.translation, cache=self.cache,
                      sender=self.sender,
                      revalidations=self.revalidations),
             config.provisioning_address, config.http_port, None),
            (_Forward('api', routes.ironic_api, config.api_upstream,
                      self._learn),
             config.provisioning_address, config.api_port, None),
            (_Callback(self.hosts, self.ramdisks, config.ipa_port,
                       requests=config.translation),
             config.callback_address, config.callback_port,
             config.callback_tls),
        )

    async def _handle(self, listener, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        # Let a quarter MiB wait for a slow client before each write
        # waits (the default 64 KiB costs throughput).
        writer.transport.set_write_buffer_limits(high=exchange.CHUNK)
        peer = writer.get_extra_info('peername') or ('?', 0)
        source = peer[0]
        refused = self.admission.enter(source)
        try:
            if refused:
                self.observer.refused(listener.name, refused)
                writer.write(exchange.error_response(
                    503, 'too many connections'))
                return
            if self.metrics is not None:
                self.metrics.bridge_connections.set(len(self.admission))
            await exchange.Exchange(listener, self.config.limits,
                                    self.observer, reader, writer,
                                    source).run()
        except Exception:   # one connection's bug must not stop the rest
            LOG.exception('Bridge: connection from %s on %s failed',
                          source, listener.name)
        finally:
            if not refused:
                self.admission.leave(source)
                if self.metrics is not None:
                    self.metrics.bridge_connections.set(len(self.admission))
            self._tasks.discard(task)
            writer.close()
            # close() flushes what is buffered; a client that stopped
            # reading is cut when the idle time is up.
            try:
                await exchange.within(writer.wait_closed(),
                                      self.config.limits.idle_timeout)
            except (asyncio.TimeoutError, OSError):
                writer.transport.abort()

    async def _open(self):
        for listener, address, port, tls in self._listeners():
            # A TLS handshake is bounded like a request head.
            server = await asyncio.start_server(
                functools.partial(self._handle, listener), address, port,
                backlog=1024, reuse_address=True, ssl=tls,
                ssl_handshake_timeout=(self.config.limits.header_timeout
                                       if tls else None))
            self._servers.append(server)
            self.ports[listener.name] = \
                server.sockets[0].getsockname()[1]
        if self.cert_reload is not None:
            self._watch_certificate()

    def _watch_certificate(self):
        """Check the callback certificate's files now and again after
        the interval. On the loop's thread, which owns the context: no
        handshake reads it while a new pair goes in. The files are small
        and, on Kubernetes, in memory (a Secret volume)."""
        try:
            self.cert_reload.check()
        except Exception:   # the next check must still come
            LOG.exception('Bridge: checking the callback certificate failed')
        self._cert_timer = self._loop.call_later(
            self.config.callback_cert_check_interval,
            self._watch_certificate)

    def _run(self, ready):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._open())
        except Exception as exc:
            for server in self._servers:
                server.close()
            self._loop.close()
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def start(self):
        """Bind the three listeners and serve on a daemon thread.

        :raises OSError: a listener cannot be bound; nothing is left open.
        :raises ConfigError: ``cache_dir`` cannot be made or cleaned.
        """
        config = self.config
        if config.cache_dir and config.cache_max_bytes:
            cache = http_cache.HttpCache(config.cache_dir,
                                         config.cache_max_bytes,
                                         self.metrics)
            try:
                adopted, discarded = cache.open()
            except OSError as exc:
                raise settings_mod.ConfigError(
                    f'[vmetal_bridge]cache_dir {config.cache_dir!r}: '
                    f'{exc.strerror or exc}') from None
            self.cache = cache
            limits = config.limits
            self.revalidations = revalidation.Revalidations(
                functools.partial(exchange.revalidate, config.http_upstream,
                                  limits, self.observer, 'http', cache),
                # A backstop: revalidate() keeps its own deadline.
                limits.upstream_timeout + 1.0, self.metrics)
            if config.cache_send_threads:
                self.sender = splice.Sender(config.cache_send_threads)
        if config.callback_tls is not None and config.callback_cert_file:
            self.cert_reload = cert_reload.CertificateReload(
                config.callback_tls, config.callback_cert_file,
                config.callback_key_file, self.metrics)
        self._loop = asyncio.new_event_loop()
        ready = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,),
                                        name='bridge', daemon=True)
        self._thread.start()
        try:
            ready.result()
        except Exception:
            self._thread.join()
            self._thread = None
            raise
        LOG.info('Bridge: %s -> %s and %s -> %s (advertised as %s and %s); '
                 'callbacks on %s:%d (%s, advertised %s) -> reserved '
                 'addresses port %d', f'{config.provisioning_address}:'
                 f'{self.ports["http"]}', config.http_upstream.name,
                 f'{config.provisioning_address}:{self.ports["api"]}',
                 config.api_upstream.name, config.http_advertise_url,
                 config.api_advertise_url, config.callback_address,
                 self.ports['callback'],
                 'TLS' if config.callback_tls else 'plain HTTP',
                 config.callback_advertise_url, config.ipa_port)
        if self.cache is not None:
            LOG.info('Bridge: copies of the HTTP root in %s, up to %d bytes, '
                     'revalidated at every download, sent by %s; %d adopted '
                     'from an earlier run (%d bytes), %d removed',
                     config.cache_dir, config.cache_max_bytes,
                     f'up to {self.sender.threads} threads' if self.sender
                     else 'the event loop', adopted, self.cache.used,
                     discarded)

    def _shutdown(self):
        if self._cert_timer is not None:
            self._cert_timer.cancel()
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self.revalidations is not None:
            self.revalidations.close()
        self._loop.call_later(0.05, self._loop.stop)

    def stop(self):
        """Close the listeners and every connection; safe to repeat."""
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(timeout=5.0)
        self._thread = None
        if self.sender is not None:
            self.sender.close()
