"""Build the lab's IPA ramdisk and deployable image (cached).

``python -m vmetal_ironic.lab.build ipa|image [--force]``, run by
``tools/build-ipa-ramdisk`` and ``tools/build-lab-image``: prints each
step, then the cache directory, the sizes and the build time; the last
line is the directory. A cached build prints at once.
"""

import argparse
import fcntl
import os
import sys

from vmetal_ironic.lab import debian
from vmetal_ironic.lab import ipa_ramdisk
from vmetal_ironic.lab import os_image

BUILDERS = {'ipa': ipa_ramdisk.build, 'image': os_image.build}


def _mib(path):
    return f'{path.stat().st_size / 2**20:.1f} MiB'


def build(what, log, force=False):
    """Build one artefact under a lock, so concurrent callers share it.

    :returns: ``(directory, seconds, cached)``.
    :raises vmetal_ironic.lab.debian.BuildError: a step failed.
    """
    if os.geteuid() != 0:
        raise debian.BuildError('building needs root (debootstrap, chroot)')
    debian.CACHE.mkdir(parents=True, exist_ok=True)
    with open(debian.CACHE / f'.{what}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return BUILDERS[what](log=log, force=force)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('what', choices=sorted(BUILDERS))
    parser.add_argument('--force', action='store_true',
                        help='rebuild even when cached')
    args = parser.parse_args(argv)

    log = debian.log_to_stderr
    try:
        directory, seconds, cached = build(args.what, log, args.force)
    except debian.BuildError as exc:
        sys.stderr.write(f'build {args.what}: {exc}\n')
        return 1
    files = ', '.join(f'{p.name} {_mib(p)}' for p in sorted(
        directory.iterdir()) if p.is_file() and p.stat().st_size > 4096)
    how = 'cached' if cached else f'built in {seconds:.0f}s'
    log(f'{args.what}: {how}: {files}')
    print(directory)
    return 0


if __name__ == '__main__':
    sys.exit(main())
