"""The DHCP agent: configuration, parts and lifecycle.

:class:`Agent` reads ``[vmetal_dhcp_agent]`` and ``[vmetal_tftp]``, checks
them (every problem is one :class:`ConfigError` line naming the value),
then runs the DHCP work loop on the calling thread, the store poller,
TFTP, router advertisements and the metrics endpoint on daemon threads.
"""

import fcntl
import ipaddress
import os
import socket
import struct
import threading
import time

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic.pxe import cache as cache_mod
from vmetal_ironic.pxe import decisions
from vmetal_ironic.pxe import dynamic as dynamic_mod
from vmetal_ironic.pxe import http_boot
from vmetal_ironic.pxe import metrics as metrics_mod
from vmetal_ironic.pxe import ra as ra_mod
from vmetal_ironic.pxe import server as server_mod
from vmetal_ironic.pxe import tftp as tftp_mod

LOG = log.getLogger(__name__)

_SIOCGIFADDR = 0x8915


class ConfigError(exception.PermanentError):
    """The agent cannot start with this configuration."""


def interface_address(interface):
    """:returns: the first IPv4 address of ``interface`` as text.

    :raises ConfigError: no such interface or no IPv4 address on it.
    """
    if not os.path.exists(f'/sys/class/net/{interface}'):
        raise ConfigError(f'[vmetal_dhcp_agent]interface {interface!r} does '
                          'not exist')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            result = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR,
                                 struct.pack('256s', interface.encode()[:15]))
        except OSError:
            raise ConfigError(
                f'interface {interface!r} has no IPv4 address; set '
                '[vmetal_dhcp_agent]server_address or configure one'
            ) from None
    return socket.inet_ntoa(result[20:24])


def _boot_files(table):
    files = []
    for arch, name in sorted((table or {}).items()):
        try:
            files.append((int(arch), name))
        except ValueError:
            raise ConfigError(f'[vmetal_dhcp_agent]boot_files key {arch!r} '
                              'is not an architecture number') from None
    return tuple(files)


def _url(value, name):
    if value and '://' not in value:
        raise ConfigError(f'[vmetal_dhcp_agent]{name} {value!r} is not a '
                          'URL')
    if value and len(value.encode()) > 255:
        raise ConfigError(f'[vmetal_dhcp_agent]{name} is longer than the '
                          '255 bytes a DHCP option holds')
    return value or None


def settings_from_conf(conf, server_address):
    """:returns: :class:`~vmetal_ironic.pxe.decisions.Settings`.

    :raises ConfigError: on a bad value.
    """
    group = conf.vmetal_dhcp_agent
    return decisions.Settings(
        server_address=socket.inet_aton(server_address),
        lease_time=group.lease_time,
        boot_files=_boot_files(group.boot_files),
        default_boot_file=group.default_boot_file or None,
        ipxe_script_url=_url(group.ipxe_script_url, 'ipxe_script_url'),
        http_boot_url=(_url(group.http_boot_url, 'http_boot_url')
                       or http_boot.agent_url(conf, server_address)),
        no_pxedhcp=group.no_pxedhcp)


def dynamic_from_conf(conf):
    """:returns: a :class:`~vmetal_ironic.pxe.dynamic.DynamicPool` or
    ``None`` when no range is configured.

    :raises ConfigError: on a bad range.
    """
    group = conf.vmetal_dhcp_agent
    if not group.dynamic_range:
        return None
    try:
        first, last = dynamic_mod.parse_range(group.dynamic_range)
        for server in group.dynamic_dns_servers:
            ipaddress.IPv4Address(server)
    except ValueError as exc:
        raise ConfigError(f'[vmetal_dhcp_agent]{exc}') from None
    return dynamic_mod.DynamicPool(
        first, last, group.dynamic_prefixlen, gateway=group.dynamic_gateway,
        dns_servers=group.dynamic_dns_servers,
        lease_time=group.dynamic_lease_time)


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
                               or interface_address(self.interface))
        self.settings = settings_from_conf(conf, self.server_address)
        self.dynamic = dynamic_from_conf(conf)
        self.metrics = metrics_mod.Metrics()
        # Checked now so a bad root fails before anything is opened.
        self._tftp_service = self._tftp_from_conf()
        self._http_service = self._http_from_conf()
        self.cache = cache_mod.ReservationCache()
        self.poller = cache_mod.RevisionPoller(store, self.cache,
                                               group.poll_interval)
        self.server = None
        self.tftp = None
        self.http = None
        self.ra = None
        self.metrics_server = None
        self._stop = threading.Event()
        self._reload = threading.Event()

    def _open_dhcp(self):
        group = self.conf.vmetal_dhcp_agent
        try:
            sock = server_mod.open_socket(self.interface, group.port,
                                          group.receive_buffer)
        except OSError as exc:
            raise ConfigError(f'cannot listen for DHCP on {self.interface} '
                              f'port {group.port}: {exc.strerror}') from None
        self.server = server_mod.DhcpServer(
            sock, self.settings, self.cache, self.metrics,
            dynamic=self.dynamic, client_port=group.client_port,
            server_port=group.port, batch_size=group.batch_size)

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
                max_windowsize=group.max_windowsize)
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
            # is down now, the poller keeps trying.
            self.poller.refresh(force=True)
            self.metrics.cache_size.set(len(self.cache))
            self.poller.start()
            self._start_tftp()
            self._start_http()
            self._start_ra()
            self._start_metrics()
        except Exception:
            self.stop()
            raise
        LOG.info('vmetal-dhcp-agent serving on %s (%s), %d reservations, '
                 'TFTP %s, HTTP boot %s, IPv6 RA %s', self.interface,
                 self.server_address, len(self.cache),
                 'on' if self.tftp else 'off',
                 f'port {self.http.port}' if self.http else 'off',
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
            settings = settings_from_conf(
                self.conf, group.server_address or self.server_address)
            dynamic = dynamic_from_conf(self.conf)
        except Exception as exc:  # keep serving
            LOG.error('Reload failed, keeping the running configuration: '
                      '%s', exc)
            return
        if dynamic is not None and self.dynamic is not None and (
                (dynamic.first, dynamic.last)
                == (self.dynamic.first, self.dynamic.last)):
            dynamic = self.dynamic
        self.settings = settings
        self.dynamic = dynamic
        self.server.update_settings(settings, dynamic)
        self.poller.interval = self.conf.vmetal_dhcp_agent.poll_interval
        self.poller.wake()
        LOG.info('Configuration reloaded')

    def run(self):
        """Serve until :meth:`request_stop`; then stop everything."""
        summary_every = self.conf.vmetal_dhcp_agent.summary_interval
        next_summary = time.monotonic() + summary_every
        try:
            while not self._stop.is_set():
                self.server.serve_once(0.5)
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                now = time.monotonic()
                if now >= next_summary:
                    next_summary = now + summary_every
                    self.metrics.cache_stale.set(int(self.cache.stale))
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
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server = None
        if self.tftp is not None:
            self.tftp.stop()
            self.tftp = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.server is not None:
            self.server.sock.close()
            LOG.info('vmetal-dhcp-agent stopped. %s', self.server.summary())
            self.server = None
