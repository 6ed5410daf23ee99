"""PXE boot time, QEMU start -> iPXE's HTTP GET of the script (TCG).

Run as root: ``tox -e bench -- pxe_boot``. The same VMs (BIOS e1000 with
the iPXE ROM; UEFI OVMF virtio without ROM, chainloading snponly.efi over
TFTP) boot through vmetal-dhcp-agent, through dnsmasq in a base
configuration, and through dnsmasq tuned like the agent (iPXE option
175.176 no-pxedhcp, no ping, IPv6 router advertisements). Each VM is
stopped by PID once its request arrived. During the UEFI boots tcpdump
records the provisioning interface, and the firmware's own TFTP read of
snponly.efi (EDK2 asks ``blksize 1468 windowsize 4``) is timed from its
RRQ to the last datagram of the transfer.
"""

import os
import pathlib
import re
import shutil
import statistics
import sys
import tempfile
import time

import pxe_netns

HTTP_PORT = 8080
SCRIPT = f'http://{pxe_netns.SERVER}:{HTTP_PORT}/boot.ipxe'
OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'
OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd'
TIMEOUT = 120
ROUNDS = int(os.environ.get('VMETAL_BENCH_BOOT_ROUNDS', '3'))
BIOS_MAC = '52:54:00:5e:03:01'
UEFI_MAC = '52:54:00:5e:03:02'
HOSTS = [(BIOS_MAC, '198.18.3.1'), (UEFI_MAC, '198.18.3.2')]
IPV6 = '2001:db8:18::1/64'


def _dnsmasq_pxe(tuned, interface):
    argv = ['--dhcp-userclass=set:ipxe,iPXE',
            '--dhcp-match=set:efi64,option:client-arch,7',
            f'--dhcp-boot=tag:ipxe,{SCRIPT}',
            f'--dhcp-boot=tag:efi64,tag:!ipxe,snponly.efi,,{pxe_netns.SERVER}',
            '--log-dhcp', '--dhcp-boot=tag:!efi64,tag:!ipxe,undionly.kpxe,,'
            f'{pxe_netns.SERVER}']
    if tuned:
        argv += ['--dhcp-option-force=tag:ipxe,encap:175,176,1',
                 '--enable-ra',
                 f'--dhcp-range=::,constructor:{interface},ra-only']
    return argv


def _boot(lab, name, firmware, nic, mac, address):
    tap = lab.tap()
    argv = ['qemu-system-x86_64', '-accel', 'tcg', '-m', '512',
            '-nodefaults', '-display', 'none', '-vga', 'none',
            '-machine', 'pc,graphics=off', '-no-reboot',
            '-chardev', f'file,id=s0,path={lab.workdir / name}.serial',
            '-serial', 'chardev:s0',
            '-netdev', f'tap,id=n0,ifname={tap},script=no,downscript=no',
            '-device', f'{nic},netdev=n0,mac={mac}', *firmware]
    before = lab.http_log.read_text().count(f'{address} - -')
    started = time.monotonic()
    vm = lab.spawn(lab.hub, argv, f'{name}-qemu.log')
    try:
        while time.monotonic() - started < TIMEOUT and vm.poll() is None:
            if lab.http_log.read_text().count(f'{address} - -') > before:
                return time.monotonic() - started
            time.sleep(0.05)
        return None
    finally:
        lab.stop(vm)
        pxe_netns.sh('ip', '-n', lab.hub, 'link', 'del', tap, check=False)


def _once(lab, slug):
    bios = _boot(lab, f'{slug}-bios', ['-boot', 'n'], 'e1000', BIOS_MAC,
                 HOSTS[0][1])
    variables = lab.workdir / f'{slug}-vars.fd'
    shutil.copy(OVMF_VARS, variables)
    capture = lab.workdir / f'{slug}-uefi.tcpdump'
    tcpdump = lab.spawn(lab.server_ns, ['tcpdump', '-i', lab.server_if,
                                        '-n', '-tt', '-l', 'udp'],
                        capture.name)
    try:
        time.sleep(0.5)  # tcpdump opens its socket
        uefi = _boot(lab, f'{slug}-uefi',
                     ['-drive', f'if=pflash,format=raw,readonly=on,'
                                f'file={OVMF_CODE}',
                      '-drive', f'if=pflash,format=raw,file={variables}'],
                     'virtio-net-pci,romfile=', UEFI_MAC, HOSTS[1][1])
    finally:
        lab.stop(tcpdump)
    fetch = _firmware_fetch(capture, HOSTS[1][1])
    if bios is None or uefi is None:
        for path in sorted(lab.workdir.glob(f'{slug}*.log')):
            print(f'--- {path.name}\n{path.read_text()[-1500:]}')
    return bios, uefi, fetch


_RRQ = re.compile(r'^(\d+\.\d+) IP (\S+)\.(\d+) > \S+\.69: .*RRQ '
                  r'"snponly\.efi"(.*)$')


def _firmware_fetch(capture, client):
    """The firmware's TFTP read of snponly.efi in a tcpdump text capture:
    from its last RRQ to the last datagram of that transfer.

    :returns: ``(seconds, options asked)`` or ``None``.
    """
    lines = capture.read_text(errors='replace').splitlines()
    start = port = asked = None
    for line in lines:
        match = _RRQ.match(line)
        if match and match.group(2) == client:
            start, port = float(match.group(1)), match.group(3)
            asked = match.group(4).strip()
    if start is None:
        return None
    end = start
    endpoint = f'{client}.{port}'
    for line in lines:
        stamp = line.split(' ', 1)[0]
        if endpoint in line and stamp.replace('.', '', 1).isdigit():
            end = max(end, float(stamp))
    return end - start, asked


def _both(lab, label):
    slug = re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')
    results = [_once(lab, f'{slug}-{n}') for n in range(ROUNDS)]

    def fmt(values):
        values = [v for v in values if v is not None]
        if not values:
            return 'timeout'
        return (f'median {statistics.median(values):5.1f} s (min '
                f'{min(values):4.1f}, {len(values)}/{ROUNDS} booted)')
    print(f'{label:<28} BIOS e1000 iPXE ROM {fmt(r[0] for r in results)}')
    print(f'{"":<28} UEFI virtio chainload {fmt(r[1] for r in results)}')
    fetches = [r[2] for r in results if r[2] is not None]
    if fetches:
        times = [f[0] * 1000 for f in fetches]
        print(f'{"":<28} UEFI firmware TFTP of snponly.efi median '
              f'{statistics.median(times):6.1f} ms (min {min(times):.1f}; '
              f'asked: {fetches[-1][1]})')
    else:
        print(f'{"":<28} UEFI firmware TFTP of snponly.efi: not captured')


def main():
    if os.geteuid() != 0:
        print('bench_pxe_boot needs root (network namespaces); skipped')
        return
    with tempfile.TemporaryDirectory(prefix='vpx-bench-') as tmp:
        tmp = pathlib.Path(tmp)
        root = tmp / 'tftp'
        root.mkdir()
        for name in ('undionly.kpxe', 'snponly.efi'):
            shutil.copy(f'/usr/lib/ipxe/{name}', root / name)
        web = tmp / 'web'
        web.mkdir()
        (web / 'boot.ipxe').write_text('#!ipxe\nsleep 600\n')
        lab = pxe_netns.Lab(tmp)
        try:
            pxe_netns.sh('ip', '-n', lab.server_ns, 'addr', 'add', IPV6,
                         'dev', lab.server_if, 'nodad')
            lab.spawn(lab.server_ns, [sys.executable, '-u', '-m',
                                      'http.server', '--bind',
                                      pxe_netns.SERVER, '--directory',
                                      str(web), str(HTTP_PORT)], 'http.log')
            lab.http_log = tmp / 'http.log'
            deadline = time.monotonic() + 10
            while 'Serving HTTP' not in lab.http_log.read_text():
                if time.monotonic() > deadline:
                    raise RuntimeError('http server did not start')
                time.sleep(0.05)
            print(f'QEMU (TCG) start -> HTTP GET of the iPXE script, '
                  f'{ROUNDS} boots each')
            agent = lab.start_agent(HOSTS, 'agent-boot', tftp_root=root,
                                    extra=f'ipxe_script_url = {SCRIPT}\n')
            try:
                _both(lab, 'vmetal-dhcp-agent')
            finally:
                lab.stop(agent)
            for label, tuned in (('dnsmasq base', False),
                                 ('dnsmasq tuned (175.176, RA)', True)):
                name = 'dnsmasq-tuned' if tuned else 'dnsmasq-base'
                dnsmasq = lab.start_dnsmasq(
                    HOSTS, name, tftp_root=root,
                    extra=_dnsmasq_pxe(tuned, lab.server_if), no_ping=tuned)
                try:
                    _both(lab, label)
                finally:
                    lab.stop(dnsmasq)
        finally:
            lab.close()


if __name__ == '__main__':
    main()
