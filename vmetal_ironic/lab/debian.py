"""Debian roots made with debootstrap, for the lab's ramdisk and image.

Only the standard library: the builders run from ``tools/`` with the
system Python as well as from the lab. A chroot gets its own ``/proc``
and nothing else of the host: the host's ``/dev`` is never bind-mounted,
because systemd's and udev's maintainer scripts would re-own the host's
device nodes (they did once: libvirtd hung on a re-owned ``/dev/kvm``);
debootstrap's static device nodes are enough. Service starts are refused
with a ``policy-rc.d`` inside the root.
"""

import contextlib
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

SUITE = 'bookworm'
MIRROR = os.environ.get('VMETAL_DEBIAN_MIRROR', 'http://deb.debian.org/debian')
CACHE = pathlib.Path(os.environ.get(
    'VMETAL_CACHE', pathlib.Path.home() / '.cache' / 'vmetal-ironic'))
HOST_CA = pathlib.Path('/etc/ssl/certs/ca-certificates.crt')
# Trees of a Debian root that nothing in the lab reads.
PRUNE = ('usr/share/doc', 'usr/share/man', 'usr/share/info',
         'usr/share/locale', 'var/cache/apt', 'var/lib/apt/lists')


class BuildError(Exception):
    """A build step failed; the message names the step and its output."""


def recipe_key(*parts):
    """A short digest of everything that shapes a build, for its cache."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b'\0')
    return digest.hexdigest()[:12]


def run(argv, step, timeout=1800, env=None, cwd=None):
    """Run one build command.

    :raises BuildError: it failed; the message ends with its output.
    """
    try:
        result = subprocess.run(argv, capture_output=True, text=True,
                                timeout=timeout, env=env, cwd=cwd,
                                check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f'{step}: no result after {timeout}s') from None
    except OSError as exc:
        raise BuildError(f'{step}: cannot run {argv[0]}: {exc}') from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise BuildError(f'{step} failed ({result.returncode}):\n'
                         + '\n'.join(output[-25:]))
    return result.stdout


def host_kernel():
    """``(vmlinuz path, version)`` of the newest installed Debian kernel.

    :raises BuildError: none installed.
    """
    kernels = sorted(pathlib.Path('/boot').glob('vmlinuz-*'))
    if not kernels:
        raise BuildError('no kernel in /boot: install linux-image-amd64 '
                         '(tools/install-deps lab)')
    return kernels[-1], kernels[-1].name[len('vmlinuz-'):]


class Root:
    """A Debian root under construction.

    :param path: an empty directory to debootstrap into.
    :param log: a callable receiving one line per finished step.
    """

    def __init__(self, path, log=print):
        self.path = pathlib.Path(path)
        self.log = log
        self.started = time.monotonic()

    def _done(self, what):
        self.log(f'  {time.monotonic() - self.started:6.1f}s  {what}')

    def bootstrap(self):
        run(['debootstrap', '--variant=minbase', SUITE, str(self.path),
             MIRROR], 'debootstrap')
        policy = self.path / 'usr/sbin/policy-rc.d'
        policy.write_text('#!/bin/sh\nexit 101\n')
        policy.chmod(0o755)
        self._done(f'debootstrap {SUITE} (minbase)')

    @contextlib.contextmanager
    def mounted(self):
        """A private ``/proc`` in the root, and never the host's /dev."""
        proc = self.path / 'proc'
        proc.mkdir(exist_ok=True)
        run(['mount', '-t', 'proc', 'proc', str(proc)], 'mount /proc')
        try:
            yield
        finally:
            subprocess.run(['umount', '-l', str(proc)], check=False,
                           capture_output=True)

    def chroot(self, *argv, step, env=None):
        full_env = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin',
                    'DEBIAN_FRONTEND': 'noninteractive', 'LC_ALL': 'C.UTF-8',
                    'HOME': '/root', **(env or {})}
        return run(['chroot', str(self.path), *argv], step, env=full_env)

    def install(self, packages):
        with self.mounted():
            self.chroot('apt-get', 'update', '-qq', step='apt-get update')
            self.chroot('apt-get', 'install', '-y', '-qq',
                        '--no-install-recommends', *packages,
                        step='apt-get install ' + ' '.join(packages))
        self._done(f'installed {len(packages)} packages')

    def pip_venv(self, venv, requirements):
        """A venv inside the root with ``requirements`` from PyPI.

        pip in the chroot reaches the index only with the host's CA
        bundle; the copy is removed afterwards.
        """
        ca = self.path / 'tmp' / 'host-ca.crt'
        shutil.copy(HOST_CA, ca)
        # A path inside the chroot, not the host's /tmp.
        env = {'PIP_CERT': '/tmp/host-ca.crt',  # noqa: S108
               'PIP_DISABLE_PIP_VERSION_CHECK': '1'}
        for name in ('PIP_INDEX_URL', 'PIP_EXTRA_INDEX_URL'):
            value = os.environ.get(name, '')
            if value.startswith('http'):
                env[name] = value
        try:
            with self.mounted():
                self.chroot('python3', '-m', 'venv', venv, step='venv')
                self.chroot(f'{venv}/bin/pip', 'install', '--quiet',
                            '--only-binary', ':all:', *requirements,
                            step='pip install ' + ' '.join(requirements),
                            env=env)
        finally:
            ca.unlink(missing_ok=True)
        self._done('pip install ' + ' '.join(requirements))

    def write(self, relative, text, mode=0o644):
        target = self.path / relative.lstrip('/')
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def enable(self, unit, wanted_by='multi-user.target'):
        """Enable a systemd unit the way ``systemctl enable`` links it."""
        wants = self.path / 'etc/systemd/system' / f'{wanted_by}.wants'
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / unit
        link.unlink(missing_ok=True)
        for base in ('etc/systemd/system', 'lib/systemd/system'):
            if (self.path / base / unit).exists():
                link.symlink_to(f'/{base}/{unit}')
                return
        raise BuildError(f'no unit {unit} in the root to enable')

    def prune(self, extra=()):
        for relative in (*PRUNE, *extra):
            target = self.path / relative
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir()
        (self.path / 'usr/sbin/policy-rc.d').unlink(missing_ok=True)

    def size(self):
        return int(run(['du', '-sb', str(self.path)], 'du').split()[0])


def cached_build(final, marker, make, force=False):
    """Run ``make(staging)`` unless ``final/marker`` is already cached.

    The build happens in a fresh directory beside ``final`` and is moved
    into place only when ``make`` returned, so a failed or interrupted
    build never leaves a half-made cache entry.

    :returns: ``(directory, seconds, cached)``.
    """
    final = pathlib.Path(final)
    if (final / marker).exists() and not force:
        return final, 0.0, True
    if force:
        shutil.rmtree(final, ignore_errors=True)
    started = time.monotonic()
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix='.build-',
                                            dir=final.parent))
    try:
        make(staging)
        final = publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final, time.monotonic() - started, False


def publish(staging, final):
    """Move a finished build into its cache directory atomically."""
    final = pathlib.Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(staging, ignore_errors=True)
        return final
    os.rename(staging, final)
    return final


def log_to_stderr(line):
    """Progress of a builder run from the command line: on stderr, at once
    (its last stdout line is the result a script reads)."""
    sys.stderr.write(line + '\n')
    sys.stderr.flush()
