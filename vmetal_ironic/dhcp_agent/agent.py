"""The DHCP agent: configuration, parts and lifecycle.

:class:`Agent` reads ``[vmetal_dhcp_agent]`` and ``[vmetal_tftp]``, checks
them (every problem is one :class:`ConfigError` line naming the value),
then runs the DHCP work loop on the calling thread, the store poller,
TFTP, router advertisements and the metrics endpoint on daemon threads.
"""

import os
import threading
import time

from oslo_log import log

from vmetal_ironic.dhcp_agent.bridge import config as bridge_config
from vmetal_ironic.dhcp_agent.bridge import service as bridge_service
from vmetal_ironic.dhcp_agent import cache as cache_mod
from vmetal_ironic.dhcp_agent import conflict
from vmetal_ironic.dhcp_agent import http_boot
from vmetal_ironic.dhcp_agent import link as link_mod
from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent import ra as ra_mod
from vmetal_ironic.dhcp_agent import settings as settings_mod
from vmetal_ironic.dhcp_agent import server as server_mod
from vmetal_ironic.dhcp_agent import shared_range
from vmetal_ironic.dhcp_agent import tftp as tftp_mod

LOG = log.getLogger(__name__)

#: Kept here too: callers catch the agent's configuration errors by it.
ConfigError = settings_mod.ConfigError


class Agent:
    """One vmetal DHCP agent.

    :param conf: oslo.config object with the vmetal groups registered.
    :param store: the :class:`~vmetal_ironic.store.base.Store` to read
        reservations from.
    :param interface: overrides ``[vmetal_dhcp_agent]interface``.
    """

    def __init__(self, conf, store, interface=None):
        self.conf = conf
        self.store = store
        group = conf.vmetal_dhcp_agent
        self.interface = interface or group.interface
        if not self.interface:
            raise ConfigError('[vmetal_dhcp_agent]interface is not set: name '
                              'the provisioning interface')
        if not os.path.exists(f'/sys/class/net/{self.interface}'):
            raise ConfigError(f'[vmetal_dhcp_agent]interface '
                              f'{self.interface!r} does not exist')
        self.server_address = (group.server_address
                               or settings_mod.interface_address(self.interface))
        self._bridge_config = bridge_config.from_conf(conf,
                                                      self.server_address)
        self.settings = settings_mod.settings_from_conf(
            conf, self.server_address,
            ipxe_script_default=self._bridge_ipxe_url(),
            url_translation=self._url_translation())
        self.dynamic = settings_mod.dynamic_from_conf(conf)
        self.inspection_range = settings_mod.inspection_from_conf(conf)
        self.shared = None
        self.metrics = metrics_mod.Metrics()
        # Checked now so a bad root fails before anything is opened.
        self._tftp_service = self._tftp_from_conf()
        self._http_service = self._http_from_conf()
        self.cache = cache_mod.ReservationCache()
        self.poller = cache_mod.RevisionPoller(store, self.cache,
                                               group.poll_interval,
                                               metrics=self.metrics)
        self.link = None
        self.server = None
        self.tftp = None
        self.http = None
        self.bridge = None
        self.ra = None
        self.metrics_server = None
        self._stop = threading.Event()
        self._reload = threading.Event()

    def attach_store(self, store):
        """Read reservations from ``store`` (before :meth:`start`)."""
        self.store = self.poller.store = store

    def _dhcp_socket(self):
        group = self.conf.vmetal_dhcp_agent
        return server_mod.open_socket(self.interface, group.port,
                                      group.receive_buffer)

    def _shared_range(self):
        """The shared inspection range, or ``None`` when not configured.

        :raises ConfigError: the store cannot share leases.
        """
        if self.inspection_range is None:
            return None
        leases = self.store.inspection_leases()
        if leases is None:
            raise ConfigError(
                f'[vmetal_dhcp_agent]inspection_range needs a store that '
                f'shares leases between agents; [vmetal]store '
                f'{self.conf.vmetal.store!r} does not: use [vmetal]store = '
                f'kubernetes, or dynamic_range on one agent only')
        group = self.conf.vmetal_dhcp_agent
        first, last = self.inspection_range
        return shared_range.SharedRange(
            leases, first, last, self.cache, self.metrics,
            prefixlen=group.dynamic_prefixlen, gateway=group.dynamic_gateway,
            dns_servers=group.dynamic_dns_servers,
            lease_time=group.dynamic_lease_time,
            clock_skew=group.inspection_clock_skew,
            offer_hold=group.inspection_offer_hold,
            probe=(conflict.ArpProbe(
                self.interface, timeout=group.inspection_conflict_timeout)
                if group.inspection_conflict_check else None),
            poll_interval=group.poll_interval)

    def _open_dhcp(self):
        group = self.conf.vmetal_dhcp_agent
        self.shared = self._shared_range()
        self.link = link_mod.InterfaceWatch(self.interface)
        try:
            sock = self._dhcp_socket()
        except OSError as exc:
            raise ConfigError(f'cannot listen for DHCP on {self.interface} '
                              f'port {group.port}: {exc.strerror}') from None
        self.server = server_mod.DhcpServer(
            sock, self.settings, self.cache, self.metrics,
            dynamic=self.dynamic, client_port=group.client_port,
            server_port=group.port, batch_size=group.batch_size,
            shared=self.shared)
        self.cache.on_load = self.server.prepare
        self.metrics.interface_up.set(1)

    def _tftp_from_conf(self):
        group = self.conf.vmetal_tftp
        if not group.enabled:
            return None
        try:
            return tftp_mod.TftpService(
                group.root, group.address or self.server_address, group.port,
                metrics=self.metrics, timeout=group.timeout,
                retries=group.retries, link_dirs=group.link_dirs,
                single_port=group.single_port,
                max_sessions=group.max_sessions,
                max_windowsize=group.max_windowsize,
                max_timeout=group.max_timeout,
                max_sessions_per_address=group.max_sessions_per_address,
                interface=self.interface, threads=group.threads,
                compiled=group.compiled)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _start_tftp(self):
        if self._tftp_service is None:
            return
        service = self._tftp_service
        try:
            service.start()
        except OSError as exc:
            service.stop()
            raise ConfigError(f'cannot listen for TFTP on {service.address} '
                              f'port {service.port}: {exc.strerror}') from None
        self.tftp = service

    def _http_from_conf(self):
        group = self.conf.vmetal_tftp
        if not group.http_port:
            return None
        try:
            return http_boot.HttpBootService(
                group.root, group.address or self.server_address,
                group.http_port, link_dirs=group.link_dirs,
                max_connections=group.http_max_connections,
                max_connections_per_address=(
                    group.http_max_connections_per_address),
                metrics=self.metrics)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _start_http(self):
        service = self._http_service
        if service is None:
            return
        try:
            service.start()
        except OSError as exc:
            raise ConfigError(f'cannot serve boot files over HTTP on '
                              f'{service.address} port {service.port}: '
                              f'{exc.strerror}') from None
        self.http = service

    def _bridge_ipxe_url(self):
        """The iPXE script URL through the bridge, when it is on."""
        url = bridge_config.ipxe_script_url(self.conf)
        if url is None and self.conf.vmetal_bridge.enabled:
            url = (f'http://{self.server_address}:'
                   f'{self.conf.vmetal_bridge.http_port}/boot.ipxe')
        return url

    def _url_translation(self):
        config = self._bridge_config
        return config.translation if config is not None else None

    def _leased(self, packed):
        """Whether ``packed`` (an IPv4 address) is leased now from this
        agent's dynamic range or the shared inspection range: a ramdisk
        inspecting there is one the conductor may call back (read from
        the bridge's thread at every callback request)."""
        pool = self.dynamic
        if pool is not None and pool.holds(packed, time.monotonic()):
            return True
        shared = self.shared
        return shared is not None and shared.cache.serving(
            '.'.join(str(part) for part in packed), time.time())

    def _start_bridge(self):
        config = self._bridge_config
        if config is None:
            return
        service = bridge_service.BridgeService(
            config, lambda: self.cache.addresses, metrics=self.metrics,
            leased=self._leased)
        try:
            service.start()
        except OSError as exc:
            raise ConfigError(f'cannot open the bridge\'s listeners '
                              f'({config.provisioning_address} ports '
                              f'{config.http_port}/{config.api_port}, '
                              f'{config.callback_address} port '
                              f'{config.callback_port}): '
                              f'{exc.strerror or exc}') from None
        self.bridge = service

    def _start_ra(self):
        group = self.conf.vmetal_dhcp_agent
        if not group.send_ra:
            return
        try:
            self.ra = ra_mod.RouterAdvertiser(
                self.interface, group.ra_interval,
                on_send=self.metrics.ra_sent.inc)
            self.ra.start()
        except OSError as exc:
            # IPv6 may be disabled on the link; DHCP still works.
            LOG.warning('Not sending IPv6 router advertisements on %s: %s',
                        self.interface, exc)
            self.ra = None

    def _start_metrics(self):
        group = self.conf.vmetal_dhcp_agent
        if not group.metrics_port:
            return
        try:
            self.metrics_server = self.metrics.serve(group.metrics_host,
                                                     group.metrics_port)
        except OSError as exc:
            raise ConfigError(f'cannot serve metrics on '
                              f'{group.metrics_host}:{group.metrics_port}: '
                              f'{exc.strerror}') from None

    def start(self):
        """Open every socket and start the helper threads.

        :raises ConfigError: something cannot be set up; nothing is left
            running.
        """
        try:
            self._open_dhcp()
            # Serve the store's data from the first packet on; if the store
            # is down now or a row is bad, the poller keeps trying and the
            # good rows are served.
            self.poller.refresh(force=True)
            self.poller.start()
            if self.shared is not None:
                self.shared.start()
            self._start_tftp()
            self._start_http()
            self._start_bridge()
            self._start_ra()
            self._start_metrics()
        except Exception:
            self.stop()
            raise
        LOG.info('vmetal-dhcp-agent serving on %s (%s), %d reservations, '
                 '%s, TFTP %s, HTTP boot %s, bridge %s, IPv6 RA %s',
                 self.interface,
                 self.server_address, len(self.cache),
                 f'shared inspection range, {len(self.shared.cache)} '
                 'leases' if self.shared else
                 'dynamic range' if self.dynamic else 'no range',
                 'on' if self.tftp else 'off',
                 f'port {self.http.port}' if self.http else 'off',
                 'on' if self.bridge else 'off',
                 'on' if self.ra else 'off')

    def request_stop(self, *_args):
        self._stop.set()

    def request_reload(self, *_args):
        self._reload.set()

    def reload(self):
        """Re-read the configuration files and reload the reservations.

        The interface and ports need a restart; a bad new value is logged
        and the old settings stay.
        """
        try:
            self.conf.reload_config_files()
            group = self.conf.vmetal_dhcp_agent
            settings = settings_mod.settings_from_conf(
                self.conf, group.server_address or self.server_address,
                ipxe_script_default=self._bridge_ipxe_url(),
                url_translation=self._url_translation())
            dynamic = settings_mod.dynamic_from_conf(self.conf)
            inspection = settings_mod.inspection_from_conf(self.conf)
        except Exception as exc:  # keep serving
            LOG.error('Reload failed, keeping the running configuration: '
                      '%s', exc)
            self.metrics.config_reloads.labels('failed').inc()
            return
        if dynamic is not None and self.dynamic is not None:
            # New gateway, DNS, prefix or lease time apply to every reply
            # from now on; the clients keep their addresses.
            dynamic.take_over(self.dynamic, time.monotonic())
        if inspection != self.inspection_range:
            LOG.warning('[vmetal_dhcp_agent]inspection_range changes when '
                        'the agent restarts; serving the running one until '
                        'then')
        if self.shared is not None:
            self.shared.update_options(
                group.dynamic_prefixlen, group.dynamic_gateway,
                group.dynamic_dns_servers, group.dynamic_lease_time)
            self.shared.clock_skew = group.inspection_clock_skew
            dynamic = None
        self.settings = settings
        self.dynamic = dynamic
        self.server.update_settings(settings, dynamic)
        self.poller.interval = self.conf.vmetal_dhcp_agent.poll_interval
        self.poller.wake()
        self.metrics.config_reloads.labels('ok').inc()
        LOG.info('Configuration reloaded')

    def check_interface(self):
        """Re-open the sockets when the interface was re-created.

        :returns: the :class:`~vmetal_ironic.dhcp_agent.link.Change` seen.
        """
        change = self.link.check()
        if change is link_mod.Change.GONE:
            self.metrics.interface_up.set(0)
            LOG.warning('Provisioning interface %s is gone; DHCP waits for '
                        'it to come back', self.interface)
        elif change is link_mod.Change.BACK:
            try:
                sock = self._dhcp_socket()
            except OSError as exc:
                # Between its creation and its configuration; next check.
                LOG.warning('Provisioning interface %s is back but the DHCP '
                            'socket cannot be opened yet: %s',
                            self.interface, exc)
                return change
            old_index = self.link.bound_index
            self.server.replace_socket(sock)
            self.link.rebound()
            if self.ra is not None:
                self.ra.stop()
                self.ra = None
            self._start_ra()
            if self.shared is not None:
                self.shared.reopen_probe()
            self.metrics.interface_rebinds.inc()
            self.metrics.interface_up.set(1)
            LOG.warning('Provisioning interface %s was re-created (index '
                        '%s -> %s); DHCP%s sockets opened again on it',
                        self.interface, old_index, self.link.bound_index,
                        ' and RA' if self.ra is not None else '')
        return change

    def run(self):
        """Serve until :meth:`request_stop`; then stop everything."""
        group = self.conf.vmetal_dhcp_agent
        summary_every = group.summary_interval
        check_every = group.interface_check_interval
        next_summary = time.monotonic() + summary_every
        next_check = time.monotonic() + check_every
        try:
            while not self._stop.is_set():
                try:
                    self.server.serve_once(min(0.5, check_every))
                except OSError as exc:
                    # The socket's interface went away under it.
                    LOG.debug('DHCP socket failed: %s', exc)
                    next_check = 0.0
                    self._stop.wait(min(0.5, check_every))
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + check_every
                    self.check_interface()
                if now >= next_summary:
                    next_summary = now + summary_every
                    LOG.info('DHCP summary: %s', self.server.summary())
        finally:
            self.stop()

    def stop(self):
        """Stop every part; safe to call more than once."""
        self._stop.set()
        if self.ra is not None:
            self.ra.stop()
            self.ra = None
        self.poller.stop()
        if self.shared is not None:
            self.shared.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server = None
        if self.tftp is not None:
            self.tftp.stop()
            self.tftp = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if self.server is not None:
            self.server.close()
            LOG.info('vmetal-dhcp-agent stopped. %s', self.server.summary())
            self.server = None
