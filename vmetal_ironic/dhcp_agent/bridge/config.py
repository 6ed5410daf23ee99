"""``[vmetal_bridge]`` read and checked, before anything is opened.

Every problem is one :class:`~vmetal_ironic.dhcp_agent.settings.ConfigError`
line naming the option and its value.
"""

import dataclasses
import ipaddress
import ssl
import urllib.parse

from vmetal_ironic.dhcp_agent.bridge import exchange
from vmetal_ironic.dhcp_agent.bridge import upstream as upstream_mod
from vmetal_ironic.dhcp_agent.bridge import urls
from vmetal_ironic.dhcp_agent import settings as settings_mod


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
    """Everything :class:`~.service.BridgeService` needs."""

    provisioning_address: str
    http_port: int
    api_port: int
    callback_address: str
    callback_port: int
    http_upstream: upstream_mod.Upstream
    api_upstream: upstream_mod.Upstream
    http_advertise_url: str
    api_advertise_url: str
    callback_advertise_url: str
    ipa_port: int
    max_connections: int
    max_connections_per_client: int
    limits: exchange.Limits
    #: Ironic's URLs to the advertised ones, in what crosses to the
    #: provisioning side (:mod:`.urls`).
    translation: urls.Translation = None
    #: The callback listener's TLS (an ``ssl.SSLContext``), or ``None``
    #: for plain HTTP.
    callback_tls: ssl.SSLContext = None
    #: Where the local copies of the HTTP root live (:mod:`.http_cache`),
    #: or ``None``: none kept.
    cache_dir: str = None
    #: Their budget in bytes.
    cache_max_bytes: int = 0
    #: Threads sending copies, a download each (:class:`~.splice.Sender`);
    #: 0: the event loop's thread only.
    cache_send_threads: int = 32
    #: The files of ``callback_tls``, checked for a new pair every
    #: ``callback_cert_check_interval`` seconds (:mod:`.cert_reload`).
    callback_cert_file: str = None
    callback_key_file: str = None
    callback_cert_check_interval: float = 30.0


def _error(text):
    return settings_mod.ConfigError(f'[vmetal_bridge]{text}')


def _specific(name, value):
    """``value`` unless it is a wildcard address (which would listen on
    both networks)."""
    try:
        if ipaddress.ip_address(value).is_unspecified:
            raise _error(f'{name} {value!r} listens on every network: name '
                         'the address on the one side it belongs to')
    except ValueError:
        pass
    return value


def callback_tls(group):
    """The callback listener's server context, or ``None`` (plain).

    :raises ConfigError: a key without a certificate, or files that do not
        load.
    """
    if not group.callback_cert_file:
        if group.callback_key_file:
            raise _error(f'callback_key_file {group.callback_key_file!r} '
                         'is set without callback_cert_file')
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(group.callback_cert_file,
                                group.callback_key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise _error(f'callback_cert_file {group.callback_cert_file!r} / '
                     f'callback_key_file {group.callback_key_file!r}: '
                     f'{getattr(exc, "strerror", None) or exc}') from None
    return context


def _callback_advertise_url(group, callback, tls):
    """``callback_advertise_url``, defaulted, its scheme the listener's."""
    scheme = 'https' if tls is not None else 'http'
    url = (group.callback_advertise_url
           or f'{scheme}://{callback}:{group.callback_port}')
    if urllib.parse.urlsplit(url).scheme != scheme:
        raise _error(f'callback_advertise_url {url!r} is not {scheme}: the '
                     'callback listener serves '
                     f'{"TLS" if tls else "plain HTTP"} (callback_cert_file '
                     f'{"set" if tls else "unset"})')
    return url


def ipxe_script_url(conf):
    """The iPXE script URL DHCP hands out through the bridge, or ``None``
    when the bridge is off or no provisioning address is known yet."""
    group = conf.vmetal_bridge
    if not group.enabled:
        return None
    base = group.http_advertise_url or (
        f'http://{group.provisioning_address}:{group.http_port}'
        if group.provisioning_address else None)
    return f'{base.rstrip("/")}/boot.ipxe' if base else None


def from_conf(conf, server_address):
    """:returns: a :class:`BridgeConfig`, or ``None`` when disabled.

    :param server_address: the agent's provisioning address, the default
        of ``provisioning_address``.
    :raises ConfigError: a missing or bad value.
    """
    group = conf.vmetal_bridge
    if not group.enabled:
        return None
    for name in ('ironic_http_url', 'ironic_api_url', 'callback_address'):
        if not getattr(group, name):
            raise _error(f'{name} is not set (required when enabled)')
    try:
        http = upstream_mod.from_url('[vmetal_bridge]ironic_http_url',
                                     group.ironic_http_url, group.ca_file)
        api = upstream_mod.from_url('[vmetal_bridge]ironic_api_url',
                                    group.ironic_api_url, group.ca_file)
    except upstream_mod.UpstreamError as exc:
        raise settings_mod.ConfigError(str(exc)) from None
    provisioning = _specific('provisioning_address',
                             group.provisioning_address or server_address)
    callback = _specific('callback_address', group.callback_address)
    if callback == provisioning:
        raise _error(f'callback_address {callback!r} is the provisioning '
                     'address: the callback proxy belongs on the cluster '
                     'side only')
    if group.http_port == group.api_port:
        raise _error(f'http_port and api_port are both {group.http_port}')
    tftp = conf.vmetal_tftp
    if tftp.http_port and (tftp.address or server_address) == provisioning \
            and tftp.http_port in (group.http_port, group.api_port):
        raise _error(f'port {tftp.http_port} is also [vmetal_tftp]http_port '
                     'on the same address')
    tls = callback_tls(group)
    http_advertise = (group.http_advertise_url
                      or f'http://{provisioning}:{group.http_port}')
    api_advertise = (group.api_advertise_url
                     or f'http://{provisioning}:{group.api_port}')
    return BridgeConfig(
        translation=urls.Translation(
            ((group.ironic_http_url, http_advertise),
             (group.ironic_api_url, api_advertise))),
        provisioning_address=provisioning,
        http_port=group.http_port,
        api_port=group.api_port,
        callback_address=callback,
        callback_port=group.callback_port,
        http_upstream=http,
        api_upstream=api,
        http_advertise_url=http_advertise,
        api_advertise_url=api_advertise,
        callback_advertise_url=_callback_advertise_url(group, callback, tls),
        callback_tls=tls,
        callback_cert_file=group.callback_cert_file or None,
        callback_key_file=group.callback_key_file or None,
        callback_cert_check_interval=group.callback_cert_check_interval,
        ipa_port=group.ipa_port,
        max_connections=group.max_connections,
        max_connections_per_client=group.max_connections_per_client,
        cache_dir=group.cache_dir or None,
        cache_max_bytes=group.cache_max_bytes,
        cache_send_threads=group.cache_send_threads,
        limits=exchange.Limits(
            header_timeout=group.header_timeout,
            idle_timeout=group.idle_timeout,
            upstream_timeout=group.upstream_timeout,
            max_header_bytes=group.max_header_bytes,
            max_heartbeat_bytes=group.max_heartbeat_bytes))
