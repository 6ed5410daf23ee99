"""What the controller will not act on: objects written by someone else
that are malformed in a way the CRD schemas do not (or, on an older CRD,
did not) refuse (pure).

Each check returns ``None`` for an object the controller may act on, or a
:class:`Problem`: a short ``reason`` (the metric's label) and one line
naming the bad value and where it is, for the Event on that object. The
controller leaves such an object out, and only it: the pass, the other
hosts and the other objects go on.
"""

import collections
import re

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod

Problem = collections.namedtuple('Problem', 'reason message')

# apimachinery's IsDNS1123Label (namespaces) and IsDNS1123Subdomain
# (object names).
_DNS_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')
_DNS_SUBDOMAIN = re.compile(r'^(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')
_KIND = re.compile(r'^[A-Za-z][A-Za-z0-9]{0,62}$')


def _where(obj):
    metadata = (obj or {}).get('metadata') or {}
    if metadata.get('namespace'):
        return f'{metadata.get("namespace")}/{metadata.get("name")}'
    return str(metadata.get('name'))


def _spec(kind, obj):
    """``(spec, problem)``: the object's spec when it is an object."""
    spec = (obj or {}).get('spec')
    if spec is None:
        return {}, None
    if not isinstance(spec, dict):
        return None, Problem('spec', f'{kind} {_where(obj)} spec {spec!r} '
                                     'is not an object')
    return spec, None


def host_problem(host):
    """A BareMetalHost's ``spec.consumerRef``, when one is set, names an
    object: a kind, an object name and, if given, a namespace."""
    where = f'BareMetalHost {_where(host)}'
    spec, problem = _spec('BareMetalHost', host)
    if problem:
        return problem
    ref = spec.get('consumerRef')
    if ref is None or ref == {}:
        return None
    if not isinstance(ref, dict):
        return Problem('consumer_ref', f'{where} spec.consumerRef {ref!r} '
                                       'is not an object reference')
    checks = (('kind', ref.get('kind'), _KIND, 'a Kubernetes kind'),
              ('name', ref.get('name'), _DNS_SUBDOMAIN, 'an object name'))
    for field, value, pattern, what in checks:
        if not isinstance(value, str) or not pattern.match(value):
            return Problem('consumer_ref', f'{where} spec.consumerRef.'
                                           f'{field} {value!r} is not {what}')
    namespace = ref.get('namespace')
    if namespace not in (None, '') and not (
            isinstance(namespace, str) and _DNS_LABEL.match(namespace)):
        return Problem('consumer_ref', f'{where} spec.consumerRef.namespace '
                                       f'{namespace!r} is not a namespace')
    return None


def _host_field(kind, obj, spec):
    host = spec.get('host')
    if host is None:
        return None
    namespace, sep, name = host.partition('/') if isinstance(
        host, str) else ('', '', '')
    if not (sep and _DNS_LABEL.match(namespace)
            and _DNS_SUBDOMAIN.match(name)):
        return Problem('host', f'{kind} {_where(obj)} spec.host {host!r} is '
                               'not <namespace>/<name> of a BareMetalHost')
    return None


def _owner_field(kind, obj, spec):
    try:
        owner_mod.parse(spec.get('owner'))
    except exception.InvalidProperty as exc:
        return Problem('owner', f'{kind} {_where(obj)} spec.owner: {exc}')
    return None


def store_object_problem(kind, obj):
    """An AddressClaim's or AddressOwner's ``spec.owner`` parses and its
    ``spec.host``, when set, names a host (the controller's index of what
    is used on which host rests on both)."""
    spec, problem = _spec(kind, obj)
    if problem:
        return problem
    return (_owner_field(kind, obj, spec)
            or _host_field(kind, obj, spec))
