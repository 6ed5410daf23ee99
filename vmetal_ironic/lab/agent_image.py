"""The agent's container image, built here with podman (cached).

``tools/build-agent-image`` runs :func:`main`; the lab's ``--agent-image``
calls :func:`build`. No registry is needed:

1. the base: ``debootstrap --variant=minbase`` Debian, slimmed with
   Debian's ``debuerreotype-minimizing-config`` and
   ``debuerreotype-slimify`` (the recipe of the official ``-slim``
   images), packed and ``podman import``-ed as
   ``localhost/vmetal-debian-base:<key>`` (cached by its recipe);
2. the image: ``etc/container/Containerfile`` built with
   ``--pull=never`` on that base, pip reaching the index with the
   machine's CA bundle mounted read-only, tagged
   ``localhost/vmetal-dhcp-agent:<key>``, where the key digests every
   input (the Containerfile, the requirements, the package's sources):
   a cached build is one ``podman image exists``.

Podman runs with the settings of ``etc/container/podman/containers.conf``
and a storage of its own under the cache (:func:`podman_env`), never the
machine's configuration; the build's ``RUN`` steps share the host's
network namespace (``--network=host``), so podman creates no bridge and
puts no address anywhere.

Only the standard library: the build runs from ``tools/`` with the
system Python as well as from the lab.
"""

import argparse
import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import time

from vmetal_ironic.lab import debian

TOP = pathlib.Path(__file__).resolve().parents[2]
CONTAINER_DIR = TOP / 'etc' / 'container'
CONTAINERFILE = CONTAINER_DIR / 'Containerfile'
REQUIREMENTS = CONTAINER_DIR / 'agent-requirements.txt'
PODMAN_CONF = CONTAINER_DIR / 'podman' / 'containers.conf'
CACHE = debian.CACHE / 'agent-image'
#: podman's run-time state; on tmpfs, gone at reboot as it must be.
RUN_ROOT = pathlib.Path('/run/vmetal-ironic/podman')
IMAGE = 'localhost/vmetal-dhcp-agent'
BASE = 'localhost/vmetal-debian-base'
#: Bumped when the base's recipe changes in a way no input shows.
BASE_RECIPE = 1
#: Everything of the source tree that shapes the image besides the
#: package itself.
INPUTS = ('etc/container/Containerfile', '.dockerignore', 'setup.cfg', 'setup.py',
          'requirements.txt', 'etc/container/agent-requirements.txt',
          'etc/container/podman/containers.conf')
#: Where the build's RUN steps find the machine's CA bundle.
BUILD_CA = '/run/vmetal-host-ca.crt'


def podman_env():
    """The environment every podman call of the lab runs with.

    Writes the storage configuration (its paths depend on the cache) on
    first use.
    """
    storage = CACHE / 'storage.conf'
    text = ('# Written by vmetal_ironic.lab.agent_image: the storage of '
            'the agent image\n# builds and the lab pods, apart from the '
            "machine's.\n[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{CACHE / "storage"}"\n'
            f'runroot = "{RUN_ROOT / "storage"}"\n')
    if not storage.exists() or storage.read_text() != text:
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = storage.with_suffix('.tmp')
        partial.write_text(text)
        os.rename(partial, storage)
    return {**os.environ, 'CONTAINERS_CONF': str(PODMAN_CONF),
            'CONTAINERS_STORAGE_CONF': str(storage)}


def podman_argv(*argv):
    """A podman command line (run it with :func:`podman_env`)."""
    return ['podman', *argv]


def podman(*argv, step, timeout=1800):
    """Run podman; :returns: its standard output.

    :raises vmetal_ironic.lab.debian.BuildError: it failed.
    """
    return debian.run(podman_argv(*argv), step, timeout=timeout,
                      env=podman_env())


def exists(name):
    return subprocess.run(podman_argv('image', 'exists', name),
                          env=podman_env(), capture_output=True,
                          check=False).returncode == 0


def source_files(top=TOP):
    """The files whose content the image depends on, sorted."""
    files = [top / name for name in INPUTS if (top / name).exists()]
    files += sorted(path for path in (top / 'vmetal_ironic').rglob('*.py'))
    return files


def inputs_key(top=TOP):
    """A digest of every input's path and content."""
    digest = hashlib.sha256()
    for path in source_files(top):
        digest.update(str(path.relative_to(top)).encode() + b'\0')
        digest.update(path.read_bytes() + b'\0')
    return digest.hexdigest()[:12]


def base_key():
    return debian.recipe_key(debian.SUITE, debian.MIRROR, 'minbase',
                             'debuerreotype-slim', BASE_RECIPE)


def _make_base(staging, log):
    root = debian.Root(staging / 'root', log)
    root.bootstrap()
    # The debuerreotype scripts date what they touch from this file.
    (root.path / 'debuerreotype-epoch').write_text(f'{int(time.time())}\n')
    for script in ('debuerreotype-minimizing-config',
                   'debuerreotype-slimify'):
        debian.run([script, str(root.path)], script)
    (root.path / 'debuerreotype-epoch').unlink()
    for relative in ('var/cache/apt', 'var/lib/apt/lists'):
        shutil.rmtree(root.path / relative, ignore_errors=True)
        (root.path / relative).mkdir()
    root._done(f'slimmed: {root.size() / 2**20:.0f} MiB')
    debian.run(['tar', '--numeric-owner', '--xattrs', '--xattrs-include=*',
                '-C', str(root.path), '-cf', str(staging / 'rootfs.tar'),
                '.'], 'tar')
    shutil.rmtree(root.path)


def build_base(log=print):
    """The slim Debian base, imported into the lab's storage.

    :returns: the image name.
    """
    key = base_key()
    name = f'{BASE}:{key}'
    if exists(name):
        return name
    directory, _seconds, _cached = debian.cached_build(
        CACHE / f'base-{key}', 'rootfs.tar', lambda staging: _make_base(
            staging, log))
    podman('import', '--change', 'CMD ["/bin/bash"]',
           str(directory / 'rootfs.tar'), name, step='podman import')
    log(f'  base {name} imported')
    return name


def _version():
    """pbr's version of the tree, for a build context without ``.git``."""
    result = subprocess.run(['git', '-C', str(TOP), 'describe', '--tags',
                             '--abbrev=0'], capture_output=True, text=True,
                            check=False)
    return result.stdout.strip() or '0.0.0'


def image_size(name):
    """Bytes of the image, as ``podman image inspect`` counts them."""
    return int(podman('image', 'inspect', '--format', '{{.Size}}', name,
                      step='podman image inspect').strip())


def _prune(keep):
    """Drop the images of earlier inputs (never one a container uses),
    and build layers a day old: younger ones make the next build of a
    changed tree faster."""
    listed = podman('images', '--format', '{{.Repository}}:{{.Tag}}',
                    IMAGE, step='podman images').split()
    for name in listed:
        if name != keep:
            subprocess.run(podman_argv('rmi', name), env=podman_env(),
                           capture_output=True, check=False)
    subprocess.run(podman_argv('image', 'prune', '--force', '--filter',
                               'until=24h'),
                   env=podman_env(), capture_output=True, check=False)


def build(log=print, force=False):
    """Build the agent image unless the same inputs were built before.

    :returns: ``(name, seconds, cached)``.
    :raises vmetal_ironic.lab.debian.BuildError: a step failed, or this
        is no source tree.
    """
    if os.geteuid() != 0:
        raise debian.BuildError('building needs root (debootstrap, podman)')
    if shutil.which('podman') is None:
        raise debian.BuildError('podman is missing; run tools/install-deps '
                                'lab')
    if not CONTAINERFILE.exists():
        raise debian.BuildError(f'no {CONTAINERFILE}: the image is built '
                                'from a source tree')
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / '.build.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        base = build_base(log)
        name = f'{IMAGE}:{debian.recipe_key(base, inputs_key())}'
        if exists(name) and not force:
            return name, 0.0, True
        partial = f'{IMAGE}-partial:{os.getpid()}'
        try:
            podman('build', '--pull=never', '--network=host',
                   '--volume', f'{debian.HOST_CA}:{BUILD_CA}:ro',
                   '--build-arg', f'BASE={base}',
                   '--build-arg', f'CA_BUNDLE={BUILD_CA}',
                   '--build-arg', f'VERSION={_version()}',
                   '--file', str(CONTAINERFILE), '--tag', partial, str(TOP),
                   step='podman build')
            # Named only once complete: a tag is the cache's marker.
            podman('tag', partial, name, step='podman tag')
        finally:
            # The name twice: without it, untag drops every name.
            subprocess.run(podman_argv('untag', partial, partial),
                           env=podman_env(),
                           capture_output=True, check=False)
        _prune(name)
        return name, time.monotonic() - started, False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--force', action='store_true',
                        help='rebuild even when cached')
    args = parser.parse_args(argv)

    log = debian.log_to_stderr
    try:
        name, seconds, cached = build(log, args.force)
        size = image_size(name)
    except debian.BuildError as exc:
        sys.stderr.write(f'build-agent-image: {exc}\n')
        return 1
    how = 'cached' if cached else f'built in {seconds:.0f}s'
    log(f'agent image: {how}: {name} {size / 2**20:.0f} MiB')
    print(name)
    return 0


if __name__ == '__main__':
    sys.exit(main())
