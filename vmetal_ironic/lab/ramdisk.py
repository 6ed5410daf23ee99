"""A tiny initramfs that proves the address reaches the booted system.

It holds a static busybox, the kernel modules the lab VM's virtio NIC
needs, and an ``/init`` that brings the NIC up, asks DHCP for an address
(from vmetal-dhcp-agent, which answers with the node's reservation), then
reports what it got with an HTTP GET to the lab's server and powers off.
The kernel is Debian's own (``linux-image-amd64``), so nothing is
downloaded at run time.
"""

import glob
import os
import pathlib
import shutil
import struct
import subprocess

BUSYBOX = pathlib.Path('/bin/busybox')
MODULES = ('virtio_pci', 'virtio_net')
REPORT_PATH = '/vmetal-lab-report'

INIT = """#!/bin/busybox sh
bb=/bin/busybox
$bb mkdir -p /proc /sys /dev /tmp
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t devtmpfs dev /dev
for module in {modules}; do
    $bb insmod "/lib/modules/$module"
done
$bb ip link set lo up
iface=
for try in 1 2 3 4 5 6 7 8 9 10; do
    for path in /sys/class/net/*; do
        name=${{path##*/}}
        [ "$name" != lo ] && iface=$name
    done
    [ -n "$iface" ] && break
    $bb sleep 1
done
echo "vmetal-lab: ramdisk up, NIC $iface"
$bb ip link set "$iface" up
if $bb udhcpc -i "$iface" -n -q -t 10 -T 2 -s /udhcpc.sh; then
    . /tmp/lease
    echo "vmetal-lab: DHCP gave $ip/$mask router $router dns $dns"
    $bb wget -q -O /dev/null \\
        "http://{server}{report}/ip=$ip/mask=$mask/router=$router/dns=$dns"
else
    echo "vmetal-lab: no DHCP lease"
fi
$bb poweroff -f
"""

UDHCPC = """#!/bin/busybox sh
bb=/bin/busybox
case "$1" in
bound|renew)
    $bb ip addr add "$ip/$mask" dev "$interface"
    echo "ip=$ip mask=$mask router=$router dns=\\"$dns\\"" > /tmp/lease ;;
esac
exit 0
"""


class RamdiskError(Exception):
    """The kernel, busybox or a module is missing."""


PT_INTERP = 3


def is_static_elf(path):
    """Tell whether ``path`` is a 64-bit ELF without a program interpreter.

    A dynamically linked busybox would find no loader in the initramfs and
    the kernel would panic with "Failed to execute /init"; Debian's
    ``busybox`` and ``busybox-static`` packages both install /bin/busybox.
    """
    with open(path, 'rb') as binary:
        header = binary.read(64)
        if len(header) < 64 or header[:5] != b'\x7fELF\x02':
            return False
        phoff, = struct.unpack_from('<Q', header, 32)
        phentsize, phnum = struct.unpack_from('<HH', header, 54)
        binary.seek(phoff)
        table = binary.read(phentsize * phnum)
    return all(struct.unpack_from('<I', table, index * phentsize)[0]
               != PT_INTERP for index in range(phnum))


def find_kernel():
    """The newest installed Debian kernel and its version.

    :raises RamdiskError: when none is installed.
    """
    kernels = sorted(glob.glob('/boot/vmlinuz-*'))
    if not kernels:
        raise RamdiskError('no kernel in /boot; install linux-image-amd64 '
                           '(tools/install-deps lab)')
    kernel = pathlib.Path(kernels[-1])
    return kernel, kernel.name[len('vmlinuz-'):]


def module_files(version):
    """Module files for :data:`MODULES` with their dependencies, in load
    order, from ``modprobe --show-depends``."""
    files = []
    for module in MODULES:
        out = subprocess.run(['modprobe', '-S', version, '--show-depends',
                              module], capture_output=True, text=True,
                             check=False)
        if out.returncode != 0:
            raise RamdiskError(f'module {module} of kernel {version}: '
                               f'{out.stderr.strip()}')
        for line in out.stdout.splitlines():
            parts = line.split()
            if parts and parts[0] == 'insmod' and parts[1] not in files:
                files.append(parts[1])
    return files


def build(workdir, server):
    """Write the kernel and an initramfs for the lab VM.

    :param workdir: where to write ``kernel`` and ``ramdisk``.
    :param server: ``host:port`` the ramdisk reports to.
    :returns: ``(kernel_path, ramdisk_path)``.
    :raises RamdiskError: a piece is missing.
    """
    workdir = pathlib.Path(workdir)
    kernel, version = find_kernel()
    if not BUSYBOX.exists() or not is_static_elf(BUSYBOX):
        raise RamdiskError(f'{BUSYBOX} is missing or dynamically linked; '
                           'install busybox-static')
    tree = workdir / 'initramfs'
    shutil.rmtree(tree, ignore_errors=True)
    (tree / 'bin').mkdir(parents=True)
    (tree / 'lib' / 'modules').mkdir(parents=True)
    shutil.copy(BUSYBOX, tree / 'bin' / 'busybox')
    names = []
    for path in module_files(version):
        name = os.path.basename(path)
        shutil.copy(path, tree / 'lib' / 'modules' / name)
        names.append(name)
    (tree / 'init').write_text(INIT.format(modules=' '.join(names),
                                           server=server, report=REPORT_PATH))
    (tree / 'udhcpc.sh').write_text(UDHCPC)
    for script in ('init', 'udhcpc.sh'):
        (tree / script).chmod(0o755)
    ramdisk = workdir / 'ramdisk'
    listing = sorted(str(p.relative_to(tree)) for p in tree.rglob('*'))
    with open(ramdisk, 'wb') as out:
        subprocess.run(['cpio', '--quiet', '-o', '-H', 'newc'],
                       input='\n'.join(['.', *listing]).encode(), cwd=tree,
                       stdout=out, check=True)
    target = workdir / 'kernel'
    shutil.copy(kernel, target)
    return target, ramdisk
