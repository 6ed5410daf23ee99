"""What a request may reach through the bridge: pure decisions, no I/O.

Each listener has one routing function taking the method and the request
target exactly as the client sent them. Only origin-form targets
(``/path?query``) are routed; absolute-form (``http://host/...``),
authority-form (``CONNECT``) and asterisk-form targets are refused, so the
bridge is never a proxy to a host the client names.
"""

import dataclasses
import ipaddress
import re
import urllib.parse

#: Reasons a request is refused (the label of the refusal counter).
NOT_ORIGIN_FORM = 'not_origin_form'
METHOD = 'method'
PATH = 'path'
NOT_RESERVED = 'not_reserved'

# Node identifiers Ironic accepts in /v1/heartbeat/<ident>: a UUID or a
# logical name (RFC 3986 unreserved characters, which the names
# baremetal-operator gives, "namespace~host", use).
_NODE_IDENT = re.compile(r'[A-Za-z0-9._~-]{1,255}')
# Paths of Ironic's API the IPA ramdisk (ironic-python-agent 13) calls:
# version discovery at the root (and its reachability probe), lookup,
# heartbeat, and continue_inspection for the built-in agent inspection.
_API_GET = ('/', '/v1', '/v1/', '/v1/lookup')
_API_POST = ('/v1/continue_inspection',)
_HEARTBEAT = '/v1/heartbeat/'


@dataclasses.dataclass(frozen=True)
class Route:
    """Where a request goes: ``path`` (with the query) on the upstream,
    ``address`` for the callback proxy's ramdisk, ``heartbeat`` when its
    body's callback URL must be rewritten; or a refusal with ``reason``."""

    path: str = None
    address: str = None
    heartbeat: bool = False
    reason: str = None

    @property
    def refused(self):
        return self.reason is not None


def _refuse(reason):
    return Route(reason=reason)


def _origin(target):
    """``(path, query)`` of an origin-form target, or ``None``.

    Refused: anything not starting with one ``/``, a fragment, control
    characters, a ``..`` or ``.`` segment (also percent-encoded), and an
    encoded slash or backslash, which an upstream might decode into a
    different path than the one checked here.
    """
    if not target.startswith('/') or target.startswith('//'):
        return None
    if any(ord(c) < 0x21 or ord(c) == 0x7f for c in target) or '#' in target:
        return None
    path, _, query = target.partition('?')
    lowered = path.lower()
    if '%2f' in lowered or '%5c' in lowered or '\\' in path:
        return None
    for segment in urllib.parse.unquote(path).split('/'):
        if segment in ('.', '..'):
            return None
    return path, query


def _with_query(path, query):
    return f'{path}?{query}' if query else path


def http_root(method, target):
    """Route of a request to the provisioning side's HTTP-root forward:
    ``GET`` and ``HEAD`` of any clean path."""
    origin = _origin(target)
    if origin is None:
        return _refuse(NOT_ORIGIN_FORM)
    if method not in ('GET', 'HEAD'):
        return _refuse(METHOD)
    return Route(path=_with_query(*origin))


def ironic_api(method, target):
    """Route of a request to the provisioning side's API forward: only the
    calls the IPA ramdisk makes."""
    origin = _origin(target)
    if origin is None:
        return _refuse(NOT_ORIGIN_FORM)
    path, query = origin
    if method in ('GET', 'HEAD') and path in _API_GET:
        return Route(path=_with_query(path, query))
    if method == 'POST' and path in _API_POST:
        return Route(path=_with_query(path, query))
    if path.startswith(_HEARTBEAT):
        ident = path[len(_HEARTBEAT):]
        if method == 'POST' and _NODE_IDENT.fullmatch(ident):
            return Route(path=_with_query(path, query), heartbeat=True)
        return _refuse(METHOD if _NODE_IDENT.fullmatch(ident) else PATH)
    known = path in _API_GET or path in _API_POST
    return _refuse(METHOD if known else PATH)


def callback(method, target, allowed):
    """Route of a conductor's call on the cluster side.

    The target is ``/<IPv4 address>/v1/...``: the address the heartbeat
    came from (see :mod:`.heartbeat`), then the path of IPA's API.

    :param allowed: a container of packed IPv4 addresses (4 bytes) of the
        agent's hosts: those it holds reservations for and those leased
        now from its dynamic or shared inspection range. Any other address
        is refused (``not_reserved``).
    """
    origin = _origin(target)
    if origin is None:
        return _refuse(NOT_ORIGIN_FORM)
    if method not in ('GET', 'POST'):
        return _refuse(METHOD)
    path, query = origin
    _, address, rest = path.split('/', 2) if path.count('/') >= 2 else (
        '', '', '')
    try:
        parsed = ipaddress.IPv4Address(address)
    except ValueError:
        return _refuse(PATH)
    # The canonical spelling only: "010.0.0.1" or "1.2.3.4 " are not
    # another way to name an address.
    if str(parsed) != address or not (rest == 'v1' or
                                      rest.startswith('v1/')):
        return _refuse(PATH)
    if parsed.packed not in allowed:
        return _refuse(NOT_RESERVED)
    return Route(path=_with_query('/' + rest, query), address=address)
