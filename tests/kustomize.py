"""Render a kustomization the way ``kubectl kustomize`` would, for the
subset of kustomize the project's manifests use.

No kustomize binary exists on the test machines, so the tests render the
shipped kustomizations here: ``resources`` (YAML files, and directories
holding a kustomization.yaml, recursively). A field this
renderer does not know is an error, never ignored, so a kustomization
cannot quietly grow a feature the tests would render wrongly. Like
kustomize, two objects with the same group/kind/namespace/name are an
error.
"""

import pathlib

import yaml

KNOWN_FIELDS = {'apiVersion', 'kind', 'resources'}


class KustomizeError(Exception):
    """The kustomization cannot be rendered."""


def _load_documents(path):
    try:
        docs = [doc for doc in yaml.safe_load_all(path.read_text())
                if doc is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise KustomizeError(f'{path}: {exc}') from None
    for doc in docs:
        if not isinstance(doc, dict) or 'kind' not in doc or 'apiVersion' not in doc:
            raise KustomizeError(f'{path}: a document without kind/apiVersion')
    return docs


def object_id(obj):
    """``(group, kind, namespace, name)`` of a Kubernetes object."""
    group = obj['apiVersion'].rpartition('/')[0]
    metadata = obj.get('metadata') or {}
    return (group, obj['kind'], metadata.get('namespace', ''), metadata.get('name'))


def render(directory, _seen=None):
    """:returns: the list of objects the kustomization in ``directory``
    produces, in order.

    :raises KustomizeError: naming the file and the problem.
    """
    directory = pathlib.Path(directory).resolve()
    seen = set() if _seen is None else _seen
    if directory in seen:
        raise KustomizeError(f'{directory}: kustomization cycle')
    seen = seen | {directory}
    path = directory / 'kustomization.yaml'
    if not path.is_file():
        raise KustomizeError(f'{directory}: no kustomization.yaml')
    kustomization = yaml.safe_load(path.read_text()) or {}
    unknown = set(kustomization) - KNOWN_FIELDS
    if unknown:
        raise KustomizeError(f'{path}: fields this renderer does not handle: '
                             f'{sorted(unknown)}')
    if kustomization.get('kind') != 'Kustomization':
        raise KustomizeError(f'{path}: kind is not Kustomization')
    objects = []
    for entry in kustomization.get('resources') or []:
        target = (directory / entry).resolve()
        if target.is_dir():
            objects.extend(render(target, seen))
        elif target.is_file():
            objects.extend(_load_documents(target))
        else:
            raise KustomizeError(f'{path}: resource {entry!r} does not exist')
    ids = {}
    for obj in objects:
        key = object_id(obj)
        if key in ids:
            raise KustomizeError(f'{path}: {key} is defined twice')
        ids[key] = obj
    return objects
