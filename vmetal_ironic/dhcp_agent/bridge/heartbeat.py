"""The heartbeat's callback URL, rewritten to the agent: pure, no I/O.

IPA tells Ironic where its API is in each heartbeat's ``callback_url``
(``http(s)://<its address>:<its port>``). Across two networks the
conductor cannot reach that address, so the agent replaces it with its own
cluster-side URL followed by the heartbeat's **source address**
(``<callback_advertise_url>/<source>``). The address comes from the TCP
connection, not from the body: a ramdisk that writes someone else's
address into ``callback_url`` still gets a URL naming itself, so a forged
body cannot aim the conductor at another host.

When IPA runs its API over TLS (auto TLS: ``https`` and the certificate in
``agent_verify_ca``), the agent keeps the certificate to check the
ramdisk with and removes it from the body: the conductor checks the agent
(HTTPS with the agent's own certificate, or plain HTTP) by Ironic's
configuration, never by a certificate the ramdisk sent, and the agent
talks TLS to the ramdisk.
"""

import dataclasses
import json
import urllib.parse


class HeartbeatError(ValueError):
    """The heartbeat cannot be rewritten; the message says why."""


@dataclasses.dataclass(frozen=True)
class Ramdisk:
    """How to reach one ramdisk's API: ``scheme`` (``http`` or ``https``)
    and, for ``https``, the PEM certificate it sent (``verify_ca``)."""

    scheme: str
    verify_ca: str = None


def rewrite(body, source, advertise_url, ipa_port):
    """Rewrite one heartbeat body.

    :param body: the JSON body IPA sent (bytes).
    :param source: the IPv4 address the heartbeat came from (text).
    :param advertise_url: the callback proxy's base URL as the conductor
        reaches it.
    :param ipa_port: the only port a ramdisk's API may listen on.
    :returns: ``(new_body, Ramdisk)``.
    :raises HeartbeatError: not a JSON object, no usable callback_url, or
        a port other than ``ipa_port``.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HeartbeatError('heartbeat body is not JSON') from None
    if not isinstance(data, dict):
        raise HeartbeatError('heartbeat body is not a JSON object')
    url = data.get('callback_url')
    if not isinstance(url, str):
        raise HeartbeatError('heartbeat has no callback_url')
    parsed = urllib.parse.urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme not in ('http', 'https'):
        raise HeartbeatError(f'callback_url {url[:100]!r} is not http(s)')
    if port != ipa_port:
        raise HeartbeatError(
            f'callback_url {url[:100]!r}: port {port} is not '
            f'[vmetal_bridge]ipa_port {ipa_port}')
    verify_ca = data.pop('agent_verify_ca', None)
    if parsed.scheme == 'https' and not isinstance(verify_ca, str):
        # Without the certificate the agent could not check the ramdisk.
        raise HeartbeatError('https callback_url without agent_verify_ca')
    data['callback_url'] = f'{advertise_url.rstrip("/")}/{source}'
    ramdisk = Ramdisk(parsed.scheme,
                      verify_ca if parsed.scheme == 'https' else None)
    return json.dumps(data).encode(), ramdisk
