"""An ironic-python-agent ramdisk built from Debian packages and PyPI.

The kernel is the host's Debian ``linux-image-amd64``; the initramfs is a
debootstrap root holding systemd, the tools IPA calls (qemu-img, parted,
sgdisk, lshw, ...), a venv with ``ironic-python-agent`` from PyPI and
the kernel modules a lab machine needs. ``/init`` is systemd: the root
stays in memory, systemd-networkd asks DHCP on every NIC and IPA starts
once the network is online, reading ``ipa-api-url`` and the rest from
the kernel command line Ironic gives it.

The result is cached under ``~/.cache/vmetal-ironic/ipa/<key>``, the key a
digest of this recipe, so a second build is a cache hit.
"""

import pathlib
import shutil
import subprocess

from vmetal_ironic.lab import debian

IPA_VERSION = '13.0.0'
VENV = '/opt/ipa'
PACKAGES = (
    'systemd', 'systemd-sysv', 'udev', 'kmod', 'iproute2', 'python3',
    'python3-venv', 'ca-certificates', 'qemu-utils', 'util-linux', 'parted',
    'gdisk', 'lshw', 'dmidecode', 'e2fsprogs', 'dosfstools', 'efibootmgr',
    'mdadm', 'hdparm', 'pciutils', 'xfsprogs', 'procps', 'psmisc',
)
# What a QEMU (virtio, e1000, AHCI, NVMe) or a plain server needs; their
# dependencies come along through ``modprobe --show-depends``.
MODULES = (
    'virtio_pci', 'virtio_net', 'virtio_blk', 'virtio_scsi', 'virtio_rng',
    'e1000', 'e1000e', 'ahci', 'nvme', 'sd_mod', 'sr_mod', 'ext4', 'xfs',
    'vfat', 'isofs', 'dm_mod', 'raid1', 'efivarfs', '8021q', 'nls_cp437',
    # vfat mounts with iocharset "ascii" by Debian's default; UTF-8 for
    # long names.
    'nls_ascii', 'nls_utf8', 'nls_iso8859_1',
)
NETWORK = """\
[Match]
Type=ether

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
"""
UNIT = f"""\
[Unit]
Description=Ironic Python Agent
After=network-online.target
Wants=network-online.target

[Service]
ExecStart={VENV}/bin/ironic-python-agent
Restart=always
RestartSec=2
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""
WAIT_ONLINE = """\
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60
"""


def cache_dir():
    _kernel, version = debian.host_kernel()
    key = debian.recipe_key(debian.SUITE, IPA_VERSION, PACKAGES, MODULES,
                            NETWORK, UNIT, WAIT_ONLINE, version, 'ipa-1')
    return debian.CACHE / 'ipa' / key


def _copy_modules(root, version):
    """The kernel modules of :data:`MODULES` and their dependencies."""
    source = pathlib.Path('/lib/modules') / version
    files = set()
    for module in MODULES:
        out = subprocess.run(['modprobe', '-S', version, '--show-depends',
                              module], capture_output=True, text=True,
                             check=False)
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) > 1 and parts[0] == 'insmod':
                files.add(pathlib.Path(parts[1]))
    if not files:
        raise debian.BuildError(f'no modules of kernel {version} found '
                                '(is linux-image-amd64 installed?)')
    target = root / 'lib/modules' / version
    for path in files:
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    for name in ('modules.builtin', 'modules.builtin.modinfo',
                 'modules.order'):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    debian.run(['depmod', '-b', str(root), version], 'depmod')
    return len(files)


def _configure(root):
    root.write('etc/systemd/network/90-dhcp.network', NETWORK)
    root.write('etc/systemd/system/ironic-python-agent.service', UNIT)
    root.write('etc/systemd/system/systemd-networkd-wait-online.service.d/'
               'any.conf', WAIT_ONLINE)
    root.write('etc/hostname', 'ipa\n')
    root.enable('ironic-python-agent.service')
    root.enable('systemd-networkd.service')
    root.enable('systemd-networkd-wait-online.service',
                'network-online.target')
    # The kernel runs /init of an initramfs; systemd runs the root in
    # memory (no /etc/initrd-release: no switch_root expected).
    init = root.path / 'init'
    init.unlink(missing_ok=True)
    init.symlink_to('/lib/systemd/systemd')
    (root.path / 'etc/fstab').write_text('')


def _pack(root, output):
    """cpio newc of the root, zstd-compressed; ownership kept as is."""
    listing = subprocess.run(['find', '.', '-mindepth', '1'], cwd=root.path,
                             capture_output=True, check=True).stdout
    with open(output, 'wb') as out:
        cpio = subprocess.Popen(['cpio', '--quiet', '-o', '-H', 'newc'],
                                cwd=root.path, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        zstd = subprocess.Popen(['zstd', '-q', '-6', '-T0'], stdin=cpio.stdout,
                                stdout=out)
        cpio.stdout.close()
        cpio.communicate(listing)
        if cpio.wait() != 0 or zstd.wait() != 0:
            raise debian.BuildError('packing the initramfs failed')


def build(log=print, force=False):
    """Build (or find in the cache) the kernel and ramdisk.

    :param log: called with one line per step.
    :param force: rebuild even when cached.
    :returns: ``(directory, seconds, cached)``; the directory holds
        ``kernel`` and ``ramdisk``.
    :raises vmetal_ironic.lab.debian.BuildError: a step failed.
    """
    def make(staging):
        root = debian.Root(staging / 'root', log)
        root.bootstrap()
        root.install(PACKAGES)
        root.pip_venv(VENV, [f'ironic-python-agent=={IPA_VERSION}'])
        kernel, version = debian.host_kernel()
        count = _copy_modules(root.path, version)
        root._done(f'{count} kernel modules of {version}')
        _configure(root)
        root.prune()
        _pack(root, staging / 'ramdisk')
        shutil.copy(kernel, staging / 'kernel')
        root._done('packed the initramfs (zstd)')
        shutil.rmtree(root.path)

    return debian.cached_build(cache_dir(), 'ramdisk', make, force)
