"""The deployable image: a small Debian that configures itself from the
config drive's network_data.json and says what it got.

A debootstrap root with Debian's kernel, a UEFI GRUB written to the
removable-media path ``\\EFI\\BOOT\\BOOTX64.EFI`` (no NVRAM entry needed),
cloud-init with only the ConfigDrive datasource and the networkd
renderer (the one that gave address, default route and DNS; ifupdown lost
the route). No DHCP client is installed. Once cloud-init has finished, a
one-shot unit writes one line to the serial console::

    vmetal-lab-os: iface=enp1s0 address=192.0.2.100/24 source=static ...

``source`` is ``dhcp`` when the kernel marks the address ``dynamic`` (a
lease), else ``static``. The lab reads that line from the serial log.

The disk is assembled from files (no loop devices): a GPT with a 64 MiB
EFI system partition (``mkfs.vfat -C`` + mtools) and an ext4 root made
with ``mkfs.ext4 -d``; the result is a compressed qcow2, cached under
``~/.cache/vmetal-ironic/image/<key>``.
"""

import hashlib
import shutil
import uuid

from vmetal_ironic.lab import debian

PACKAGES = ('linux-image-amd64', 'initramfs-tools', 'systemd', 'systemd-sysv',
            'udev', 'systemd-resolved', 'cloud-init', 'iproute2')
INITRAMFS_MODULES = ('virtio_pci', 'virtio_blk', 'virtio_scsi', 'sd_mod',
                     'ahci', 'nvme', 'ext4')
# Kernel module trees no lab machine or small server image needs.
PRUNE_MODULES = ('drivers/gpu', 'drivers/media', 'drivers/net/wireless',
                 'drivers/infiniband', 'drivers/staging', 'drivers/bluetooth',
                 'drivers/iio', 'drivers/input/touchscreen', 'drivers/isdn',
                 'drivers/hid', 'drivers/usb', 'sound', 'net/wireless',
                 'net/mac80211', 'net/bluetooth', 'drivers/net/ethernet/mellanox',
                 'drivers/net/ethernet/chelsio', 'drivers/scsi/qla2xxx',
                 'drivers/scsi/lpfc', 'drivers/net/can', 'drivers/mtd')
ESP_MIB = 64
REPORT_MARK = 'vmetal-lab-os:'
CLOUD_CFG = """\
datasource_list: [ ConfigDrive, None ]
# No locales are installed; cc_locale would fail cloud-config.service.
locale: false
system_info:
  network:
    renderers: [ networkd ]
    activators: [ networkd ]
"""
REPORT = f"""\
#!/bin/sh
# Say on the serial console which address the system runs with.
line=
for _ in $(seq 1 120); do
    line=$(ip -4 -o addr show scope global | head -n 1)
    [ -n "$line" ] && break
    sleep 1
done
iface=$(echo "$line" | awk '{{print $2}}')
address=$(echo "$line" | awk '{{print $4}}')
case "$line" in *dynamic*) source=dhcp ;; *) source=static ;; esac
gateway=$(ip -4 route show default | awk '{{print $3; exit}}')
dns=$(resolvectl dns "$iface" 2>/dev/null | cut -d: -f2- | xargs | tr ' ' ,)
datasource=$(python3 -c 'import json; print(json.load(open(
    "/run/cloud-init/result.json"))["v1"]["datasource"].split()[0])' \\
    2>/dev/null)
echo "{REPORT_MARK} iface=$iface address=$address source=$source" \\
    "gateway=$gateway dns=$dns datasource=$datasource" > /dev/ttyS0
"""
# cloud-final.service runs after multi-user.target: a unit wanted by
# multi-user.target and ordered after cloud-final would be a cycle that
# systemd breaks by dropping the ordering, so it hangs off cloud-init.target.
UNIT = """\
[Unit]
Description=Report the configured address on the serial console
After=cloud-final.service network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vmetal-report

[Install]
WantedBy=cloud-init.target
"""
GRUB_CFG = """\
search --no-floppy --fs-uuid --set=root {uuid}
linux /vmlinuz root=UUID={uuid} ro console=tty0 console=ttyS0,115200
initrd /initrd.img
boot
"""
GRUB_MODULES = ('part_gpt', 'fat', 'ext2', 'search', 'search_fs_uuid',
                'linux', 'normal', 'configfile', 'echo', 'gzio', 'efi_gop',
                'serial', 'terminal')


def cache_dir():
    key = debian.recipe_key(debian.SUITE, PACKAGES, INITRAMFS_MODULES,
                            PRUNE_MODULES, CLOUD_CFG, REPORT, UNIT, GRUB_CFG,
                            GRUB_MODULES, ESP_MIB, 'image-2')
    return debian.CACHE / 'image' / key


def _configure(root, root_uuid):
    root.write('etc/cloud/cloud.cfg.d/99-vmetal-lab.cfg', CLOUD_CFG)
    root.write('usr/local/sbin/vmetal-report', REPORT, 0o755)
    root.write('etc/systemd/system/vmetal-report.service', UNIT)
    root.write('etc/fstab', f'UUID={root_uuid} / ext4 defaults 0 1\n')
    root.write('etc/hostname', 'vmetal-lab-os\n')
    root.enable('vmetal-report.service', 'cloud-init.target')
    root.enable('systemd-networkd.service')
    root.enable('systemd-resolved.service')


def _kernel_version(root):
    versions = sorted(p.name for p in (root.path / 'lib/modules').iterdir())
    if not versions:
        raise debian.BuildError('the image has no kernel')
    return versions[-1]


def _install(root):
    # The initramfs is made once, after pruning the module tree.
    root.write('usr/share/initramfs-tools/modules.d/vmetal-lab',
               '\n'.join(INITRAMFS_MODULES) + '\n')
    root.write('etc/initramfs-tools/conf.d/vmetal-lab', 'MODULES=list\n')
    with root.mounted():
        root.chroot('apt-get', 'update', '-qq', step='apt-get update')
        root.chroot('apt-get', 'install', '-y', '-qq',
                    '--no-install-recommends', *PACKAGES,
                    step='apt-get install', env={'INITRD': 'No'})
        root._done(f'installed {len(PACKAGES)} packages')
        version = _kernel_version(root)
        for tree in PRUNE_MODULES:
            shutil.rmtree(root.path / 'lib/modules' / version / 'kernel' / tree,
                          ignore_errors=True)
        root.chroot('depmod', version, step='depmod')
        root.chroot('update-initramfs', '-c', '-k', version,
                    step='update-initramfs')
    # The kernel was installed before its initramfs existed, so Debian
    # made no /initrd.img link; GRUB's configuration names both links.
    for link, target in (('vmlinuz', 'vmlinuz'), ('initrd.img', 'initrd.img')):
        path = root.path / link
        path.unlink(missing_ok=True)
        path.symlink_to(f'boot/{target}-{version}')
    root._done(f'initramfs of {version}')


def _esp(workdir, root_uuid):
    """A FAT image holding GRUB as the removable-media boot loader."""
    config = workdir / 'grub.cfg'
    config.write_text(GRUB_CFG.format(uuid=root_uuid))
    loader = workdir / 'BOOTX64.EFI'
    debian.run(['grub-mkimage', '-O', 'x86_64-efi', '-o', str(loader),
                '-p', '/EFI/BOOT', '-c', str(config), *GRUB_MODULES],
               'grub-mkimage')
    esp = workdir / 'esp.img'
    debian.run(['mkfs.vfat', '-C', '-n', 'EFI', str(esp),
                str(ESP_MIB * 1024)], 'mkfs.vfat')
    debian.run(['mmd', '-i', str(esp), '::/EFI', '::/EFI/BOOT'], 'mmd')
    debian.run(['mcopy', '-i', str(esp), str(loader), '::/EFI/BOOT/'],
               'mcopy')
    return esp


def _disk(workdir, tree, root_uuid):
    """Raw GPT disk: ESP then the ext4 root, both made from files."""
    used = int(debian.run(['du', '-sb', str(tree)], 'du').split()[0])
    root_mib = used * 13 // 10 // 2**20 + 256
    rootfs = workdir / 'root.img'
    debian.run(['mkfs.ext4', '-q', '-F', '-L', 'root', '-U', root_uuid,
                '-d', str(tree), str(rootfs), f'{root_mib}M'], 'mkfs.ext4')
    esp = _esp(workdir, root_uuid)
    disk = workdir / 'disk.raw'
    sector = 512
    esp_start = 2048
    root_start = esp_start + ESP_MIB * 2**20 // sector
    root_end = root_start + root_mib * 2**20 // sector - 1
    total = (root_end + 1 + 2048) * sector
    with open(disk, 'wb') as out:
        out.truncate(total)
    debian.run(['sgdisk', '-o', '-n', f'1:{esp_start}:+{ESP_MIB}M',
                '-t', '1:ef00', '-c', '1:EFI', '-n',
                f'2:{root_start}:{root_end}', '-t', '2:8300', '-c', '2:root',
                str(disk)], 'sgdisk')
    for image, start in ((esp, esp_start), (rootfs, root_start)):
        debian.run(['dd', f'if={image}', f'of={disk}', 'bs=1M',
                    f'seek={start * sector}', 'oflag=seek_bytes',
                    'conv=notrunc,sparse', 'status=none'], 'dd')
    return disk


def build(log=print, force=False):
    """Build (or find in the cache) the deployable qcow2 image.

    :returns: ``(directory, seconds, cached)``; the directory holds
        ``image.qcow2`` and ``image.qcow2.sha256``.
    :raises vmetal_ironic.lab.debian.BuildError: a step failed.
    """
    def make(staging):
        root_uuid = str(uuid.uuid4())
        root = debian.Root(staging / 'root', log)
        root.bootstrap()
        _install(root)
        _configure(root, root_uuid)
        root.prune()
        disk = _disk(staging, root.path, root_uuid)
        shutil.rmtree(root.path)
        image = staging / 'image.qcow2'
        debian.run(['qemu-img', 'convert', '-c', '-O', 'qcow2', str(disk),
                    str(image)], 'qemu-img convert')
        for name in ('disk.raw', 'root.img', 'esp.img', 'BOOTX64.EFI',
                     'grub.cfg'):
            (staging / name).unlink(missing_ok=True)
        digest = hashlib.sha256()
        with open(image, 'rb') as data:
            for block in iter(lambda: data.read(2**20), b''):
                digest.update(block)
        (staging / 'image.qcow2.sha256').write_text(digest.hexdigest() + '\n')
        root._done('disk image (GPT, ESP + ext4) as compressed qcow2')

    return debian.cached_build(cache_dir(), 'image.qcow2', make, force)


def parse_report(text):
    """The fields of the last report line in a serial log, or ``None``."""
    lines = [line for line in text.splitlines() if REPORT_MARK in line
             and 'echo' not in line]
    if not lines:
        return None
    fields = {}
    for part in lines[-1].split(REPORT_MARK, 1)[1].split():
        key, sep, value = part.partition('=')
        if sep:
            fields[key] = value
    return fields

