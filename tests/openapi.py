"""Check Kubernetes objects against the API's schema, strictly.

The official client's models carry the OpenAPI schema of every built-in
kind (``openapi_types`` and ``attribute_map``). Building a model from a
document checks required fields and types, but silently drops fields it
does not know (and so does a kube-apiserver before 1.25, without
fieldValidation); :func:`problems` also walks the document and reports
every unknown field, so a misspelt ``readinesProbe`` is an error and not a
pod without probes.
"""

import datetime
import re

from kubernetes import client

# Both spellings of the generated clients: list[X]/dict(str, X) and
# List[X]/Dict[str, X]; Optional[X] is X for a value that is present.
_OPTIONAL = re.compile(r'^Optional\[(.+)\]$')
_LIST = re.compile(r'^[lL]ist\[(.+)\]$')
_DICT = re.compile(r'^(?:dict\(|Dict\[)([^,]+), (.+)[)\]]$')
_PRIMITIVES = {
    'str': (str,),
    'int': (int,),
    'long': (int,),
    'float': (int, float),
    'bool': (bool,),
    'date': (str, datetime.date),
    'datetime': (str, datetime.datetime),
}


def model_name(obj):
    """Name of the client model of ``obj``'s kind (``V1Deployment``)."""
    version = obj['apiVersion'].rpartition('/')[2]
    return version[0].upper() + version[1:] + obj['kind']


def is_builtin(obj):
    return hasattr(client, model_name(obj))


def _walk(value, type_name, path, out):
    match = _OPTIONAL.match(type_name)
    if match:
        type_name = match.group(1)
    match = _LIST.match(type_name)
    if match:
        if not isinstance(value, list):
            out.append(f'{path}: expected a list, got {type(value).__name__}')
            return
        for index, item in enumerate(value):
            _walk(item, match.group(1), f'{path}[{index}]', out)
        return
    match = _DICT.match(type_name)
    if match:
        if not isinstance(value, dict):
            out.append(f'{path}: expected a map, got {type(value).__name__}')
            return
        for key, item in value.items():
            _walk(item, match.group(2), f'{path}.{key}', out)
        return
    if type_name == 'object':
        return
    if type_name in _PRIMITIVES:
        wanted = _PRIMITIVES[type_name]
        if not isinstance(value, wanted) or (bool not in wanted and isinstance(value, bool)):
            out.append(f'{path}: expected {type_name}, got {value!r}')
        return
    model = getattr(client, type_name)
    if not isinstance(value, dict):
        out.append(f'{path}: expected a {type_name} object, got {value!r}')
        return
    fields = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            out.append(f'{path}.{key}: unknown field of {type_name}')
            continue
        _walk(item, model.openapi_types[fields[key]], f'{path}.{key}', out)


def problems(obj):
    """:returns: a list of problems of a built-in object (empty when it is
    valid): unknown fields, wrong types, missing required fields."""
    name = model_name(obj)
    where = f'{obj["kind"]} {(obj.get("metadata") or {}).get("name")}'
    out = []
    _walk(obj, name, where, out)
    if not out:
        try:
            # Validates required fields and strict types, recursively.
            getattr(client, name).from_dict(obj)
        except (ValueError, TypeError) as exc:
            out.append(f'{where}: {exc}')
    return out


_JSON_TYPES = {
    'object': dict, 'array': list, 'string': str, 'boolean': bool,
    'integer': int, 'number': (int, float),
}


def _schema_walk(value, schema, path, out):
    kind = schema.get('type')
    if (kind and not isinstance(value, _JSON_TYPES[kind])) or (
            kind in ('integer', 'number') and isinstance(value, bool)):
        out.append(f'{path}: expected {kind}, got {value!r}')
        return
    if kind == 'array':
        for index, item in enumerate(value):
            _schema_walk(item, schema.get('items', {}), f'{path}[{index}]', out)
    if kind == 'object' and isinstance(value, dict):
        properties = schema.get('properties')
        extra = schema.get('additionalProperties')
        for key, item in value.items():
            if properties and key in properties:
                _schema_walk(item, properties[key], f'{path}.{key}', out)
            elif isinstance(extra, dict):
                _schema_walk(item, extra, f'{path}.{key}', out)
            elif properties is not None and not schema.get(
                    'x-kubernetes-preserve-unknown-fields'):
                # The API server would prune it: for us, a typo.
                out.append(f'{path}.{key}: unknown field')
        for key in schema.get('required', []):
            if key not in value:
                out.append(f'{path}.{key}: required field missing')


def crd_problems(obj, crd):
    """:returns: problems of a custom object against the served version's
    openAPIV3Schema of ``crd`` (a CustomResourceDefinition document)."""
    group, _, version = obj['apiVersion'].rpartition('/')
    where = f'{obj["kind"]} {(obj.get("metadata") or {}).get("name")}'
    spec = crd['spec']
    if group != spec['group'] or obj['kind'] != spec['names']['kind']:
        return [f'{where}: not a {spec["names"]["kind"]}.{spec["group"]}']
    for served in spec['versions']:
        if served['name'] == version and served.get('served'):
            out = []
            schema = dict(served['schema']['openAPIV3Schema'])
            # metadata is checked by the API server's ObjectMeta rules.
            props = {k: v for k, v in schema.get('properties', {}).items()
                     if k != 'metadata'}
            _schema_walk({k: v for k, v in obj.items() if k != 'metadata'},
                         {**schema, 'properties': props}, where, out)
            return out
    return [f'{where}: version {version} is not served']
