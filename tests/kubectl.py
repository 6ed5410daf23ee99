"""The real ``kubectl`` for the manifest tests: render and apply.

``kubectl kustomize`` renders a kustomization exactly as ``kubectl apply
-k`` sends it; ``kubectl apply --dry-run=server`` lets a real API server
judge it. kubectl comes from the machine (tools/install-deps installs
Debian's kubernetes-client where there is none). The manifests list
directories in ``resources``, which needs the kustomize of kubectl 1.21 or
later (kustomize v4+); an older kubectl is reported as such instead of
failing on the first overlay with kustomize's own message.
"""

import functools
import json
import pathlib
import shutil
import subprocess

import yaml

TIMEOUT = 120
# kubectl 1.21 moved to kustomize v4, the first that loads directories
# listed in ``resources``.
MIN_MINOR = 21


class KubectlError(Exception):
    """kubectl is missing, too old, or refused the kustomization."""


@functools.cache
def binary():
    """The path of a kubectl able to render the shipped kustomizations.

    :raises KubectlError: none on PATH, or one older than 1.21.
    """
    path = shutil.which('kubectl')
    if path is None:
        raise KubectlError('kubectl not found on PATH; tools/install-deps '
                           'installs it')
    answer = subprocess.run([path, 'version', '--client', '-o', 'json'],
                            capture_output=True, text=True, timeout=TIMEOUT,
                            check=False)
    try:
        version = json.loads(answer.stdout)['clientVersion']
        minor = int(version['minor'].rstrip('+'))
    except (ValueError, KeyError, TypeError):
        raise KubectlError(f'{path}: cannot read its version: '
                           f'{answer.stderr.strip()}') from None
    if minor < MIN_MINOR:
        raise KubectlError(
            f'{path} is kubectl {version.get("gitVersion")}; the manifests '
            f'need kubectl 1.{MIN_MINOR} or later (kustomize v4+)')
    return path


def run(*args, kubeconfig=None, check=True, stdin=None):
    """Run kubectl with ``args``, ``stdin`` (text) as its input.

    :returns: the CompletedProcess (text output).
    :raises KubectlError: a non-zero exit when ``check``, with kubectl's
        error output.
    """
    argv = [binary(), *args]
    if kubeconfig is not None:
        argv[1:1] = ['--kubeconfig', str(kubeconfig)]
    result = subprocess.run(argv, capture_output=True, text=True,
                            input=stdin, timeout=TIMEOUT, check=False)
    if check and result.returncode != 0:
        raise KubectlError(f'kubectl {" ".join(args)}: '
                           f'{result.stderr.strip()}')
    return result


def render(directory):
    """The objects the kustomization in ``directory`` produces, in order.

    :raises KubectlError: kustomize refused it (kubectl's message).
    """
    text = run('kustomize', str(pathlib.Path(directory))).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def apply(objects, kubeconfig, dry_run=False, validate=True):
    """``kubectl apply`` the objects; with ``dry_run``, as a server-side
    dry run (``--dry-run=server``: the API server validates, defaults and
    admits each object, then stores nothing). ``validate=False`` skips
    kubectl's own schema check, leaving the judgement to the server.

    :returns: the API server's answer for each object, in order.
    :raises KubectlError: kubectl's validation or the server refused one.
    """
    args = ['apply', '-o', 'json', '-f', '-']
    if dry_run:
        args.insert(1, '--dry-run=server')
    if not validate:
        args.insert(1, '--validate=false')
    answer = json.loads(run(*args, kubeconfig=kubeconfig,
                            stdin=yaml.safe_dump_all(objects)).stdout)
    return answer['items'] if answer.get('kind') == 'List' else [answer]


def object_id(obj):
    """``(group, kind, namespace, name)`` of a Kubernetes object."""
    group = obj['apiVersion'].rpartition('/')[0]
    metadata = obj.get('metadata') or {}
    return (group, obj['kind'], metadata.get('namespace', ''),
            metadata.get('name'))
