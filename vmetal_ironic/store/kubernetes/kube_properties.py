"""Where a BareMetalHost's properties come from, as pure functions.

The Kubernetes store fetches the host, the NodeProviders and the Network
Environments; this module decides which of them apply, so the rules are
unit tested without a cluster:

1. the host's own annotations;
2. the properties of its node type. A host names its node type with the
   label ``[vmetal_kubernetes]node_type_label`` (``<node type>`` or
   ``<node provider>_<node type>``: a label value allows no ``/``, and
   ``_`` never occurs in a NodeProvider's name); without it, the node type is the one
   whose ``bareMetalHosts.selector`` matches the host's labels, which is
   how vMetal itself assigns hosts to node types. A host matching several
   node types must be labelled, rather than get one picked at random;
3. the Network Environment named by the property
   ``vcluster.com/network-environment`` (from the two layers above), else
   the one annotated ``machines.vcluster.com/is-default-environment:
   "true"``; when several are default, the one whose ``spec.providerRef``
   is the host's node provider.
"""

import dataclasses
import json

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import properties as props

LOG = log.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Sources:
    """The property sources every host shares, as one reader holds them.

    :ivar providers: the NodeProvider objects.
    :ivar environments: the NetworkEnvironment objects.
    """

    providers: tuple = ()
    environments: tuple = ()

ENVIRONMENT_PROPERTY = 'vcluster.com/network-environment'
DEFAULT_ENVIRONMENT_ANNOTATION = 'machines.vcluster.com/is-default-environment'
_TRUE = ('true', 'yes', '1')
# Between provider and node type in the node-type label value: legal in a
# label value, and never part of a NodeProvider (DNS subdomain) name.
TYPE_SEPARATOR = '_'


def _meta(obj):
    return (obj or {}).get('metadata') or {}


def name_of(obj):
    return _meta(obj).get('name')


def match_selector(selector, labels):
    """Evaluate a Kubernetes label selector.

    :param selector: ``{'matchLabels': {...}, 'matchExpressions': [...]}``;
        ``None`` matches nothing, an empty selector matches everything (the
        Kubernetes rule).
    :param labels: the object's labels.
    :raises vmetal_ironic.exception.InvalidProperty: unknown operator.
    """
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get('matchLabels') or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get('matchExpressions') or []:
        key, operator = expr.get('key'), expr.get('operator')
        values = expr.get('values') or []
        if operator == 'In':
            ok = key in labels and labels[key] in values
        elif operator == 'NotIn':
            ok = key not in labels or labels[key] not in values
        elif operator == 'Exists':
            ok = key in labels
        elif operator == 'DoesNotExist':
            ok = key not in labels
        else:
            raise exception.InvalidProperty(
                f'label selector operator {operator!r} is not one of In, '
                'NotIn, Exists, DoesNotExist')
        if not ok:
            return False
    return True


def node_types(providers):
    """``(provider name, node type dict)`` of every NodeProvider (entries
    that are not objects are not node types: skipped)."""
    for provider in providers:
        metal3 = ((provider or {}).get('spec') or {}).get('metal3') or {}
        if not isinstance(metal3, dict):
            continue
        for node_type in metal3.get('nodeTypes') or []:
            if isinstance(node_type, dict):
                yield name_of(provider), node_type


def selects(provider_name, node_type, labels):
    """Whether ``node_type`` selects a host with ``labels``.

    :raises vmetal_ironic.exception.InvalidProperty: its selector is
        malformed, the message naming the NodeProvider and node type.
    """
    selector = (node_type.get('bareMetalHosts') or {})
    try:
        return match_selector(selector.get('selector'), labels)
    except (exception.InvalidProperty, AttributeError, TypeError) as exc:
        raise exception.InvalidProperty(
            f'NodeProvider {provider_name} node type '
            f'{node_type.get("name")!r} spec.metal3.nodeTypes.bareMetalHosts'
            f'.selector: {exc}') from None


def bad_node_types(providers):
    """``[(provider name, node type name, message)]`` of the node types
    whose selector is malformed (pure): they select no host, and are
    reported on their own rather than failing the hosts they cannot be
    selecting."""
    bad = []
    for provider_name, node_type in node_types(providers):
        try:
            selects(provider_name, node_type, {})
        except exception.InvalidProperty as exc:
            bad.append((provider_name, node_type.get('name'), str(exc)))
    return bad


def find_node_type(providers, host, label):
    """The node type a host belongs to.

    :param providers: NodeProvider objects (dicts).
    :param host: the BareMetalHost (dict).
    :param label: the label key that names a node type explicitly.
    :returns: ``(provider name, node type dict)`` or ``None``.
    :raises vmetal_ironic.exception.InvalidProperty: the label names an
        unknown node type, or several node types select the host.
    """
    labels = _meta(host).get('labels') or {}
    candidates = list(node_types(providers))
    wanted = labels.get(label)
    host_name = f'{_meta(host).get("namespace")}/{name_of(host)}'
    if wanted:
        provider_name, sep, type_name = wanted.partition(TYPE_SEPARATOR)
        if not sep:
            provider_name, type_name = '', wanted
        found = [(p, t) for p, t in candidates
                 if t.get('name') == type_name
                 and (not provider_name or p == provider_name)]
        if not found:
            raise exception.InvalidProperty(
                f'BareMetalHost {host_name}: label {label}={wanted!r} names '
                'no node type of any NodeProvider')
        if len(found) > 1:
            raise exception.InvalidProperty(
                f'BareMetalHost {host_name}: label {label}={wanted!r} names '
                f'node type {type_name!r} of several NodeProviders '
                f'({", ".join(sorted(p for p, _ in found))}); use '
                f'<provider>{TYPE_SEPARATOR}<node type>')
        return found[0]
    matching = []
    for provider_name, node_type in candidates:
        try:
            if selects(provider_name, node_type, labels):
                matching.append((provider_name, node_type))
        except exception.InvalidProperty as exc:
            # One team's bad selector must not break every other host:
            # the node type selects nothing and is reported on its own.
            _report_bad_node_type(str(exc))
    if len(matching) > 1:
        names = ', '.join(sorted(f'{p}{TYPE_SEPARATOR}{t.get("name")}'
                                 for p, t in matching))
        raise exception.InvalidProperty(
            f'BareMetalHost {host_name} is selected by several node types '
            f'({names}); label it '
            f'{label}=<provider>{TYPE_SEPARATOR}<node type>')
    return matching[0] if matching else None


_reported = set()


def _report_bad_node_type(message):
    """Log a malformed node type once per process (and per message), not
    once per host judged."""
    if message in _reported:
        return
    if len(_reported) > 1000:
        _reported.clear()
    _reported.add(message)
    LOG.warning('%s; it selects no host until fixed', message)


def _provider_ref(environment):
    ref = ((environment or {}).get('spec') or {}).get('providerRef')
    if isinstance(ref, dict):
        return ref.get('name')
    return ref


def find_environment(environments, wanted=None, provider=None):
    """The Network Environment whose properties apply.

    :param environments: Network Environment objects (dicts).
    :param wanted: name given by the network-environment property, if any.
    :param provider: the host's NodeProvider name, if known.
    :returns: the environment dict, or ``None`` when no default exists.
    :raises vmetal_ironic.exception.InvalidProperty: ``wanted`` does not
        exist, or the default is ambiguous.
    """
    if wanted:
        for environment in environments:
            if name_of(environment) == wanted:
                return environment
        raise exception.InvalidProperty(
            f'{ENVIRONMENT_PROPERTY} {wanted!r} names no Network Environment')
    defaults = [
        env for env in environments
        if str(_meta(env).get('annotations', {}).get(
            DEFAULT_ENVIRONMENT_ANNOTATION, '')).strip().lower() in _TRUE]
    if len(defaults) > 1 and provider:
        mine = [env for env in defaults if _provider_ref(env) == provider]
        defaults = mine or defaults
    if len(defaults) > 1:
        names = ', '.join(sorted(name_of(env) for env in defaults))
        raise exception.InvalidProperty(
            f'several Network Environments are marked default ({names}); '
            f'mark one, or set {ENVIRONMENT_PROPERTY}')
    return defaults[0] if defaults else None


def written_values(annotations, key='vmetal-ironic.io/written'):
    """The ``{annotation: value}`` the store recorded having written."""
    try:
        value = json.loads((annotations or {}).get(key) or '{}')
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def user_annotations(annotations, written_annotation):
    """A host's annotations without the values the store wrote itself.

    The store writes ``metal3.vcluster.com/dns-servers`` onto the host as
    an output, and the same key is an input property. A value equal to the
    one recorded as written is the store's own, so it must not pin the
    host to it when the node type or environment changes later; a user who
    sets a different value wins as usual.
    """
    written = written_values(annotations, written_annotation)
    return {key: value for key, value in (annotations or {}).items()
            if key == written_annotation or written.get(key) != value}


def layers(host, providers, environments, label,
           written_annotation='vmetal-ironic.io/written'):
    """Property layers of a host, most specific first.

    :param written_annotation: see :func:`user_annotations`.
    :returns: ``[host annotations, node type properties, environment
        properties]``; a missing layer is an empty dict.
    """
    host_name = f'{_meta(host).get("namespace")}/{name_of(host)}'
    annotations = props.Layer(
        user_annotations(_meta(host).get('annotations'), written_annotation),
        f'BareMetalHost {host_name} annotations')
    found = find_node_type(providers, host, label)
    provider, node_type = found if found else (None, {})
    type_props = props.Layer(
        node_type.get('properties'),
        f'node type {provider}{TYPE_SEPARATOR}{node_type.get("name")}')
    wanted = annotations.get(ENVIRONMENT_PROPERTY) or type_props.get(
        ENVIRONMENT_PROPERTY)
    environment = find_environment(environments, wanted, provider)
    env_props = props.Layer(
        ((environment or {}).get('spec') or {}).get('properties'),
        f'NetworkEnvironment {name_of(environment)}')
    return [annotations, type_props, env_props]
