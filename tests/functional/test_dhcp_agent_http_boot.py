"""UEFI HTTP boot from the agent itself: OVMF (TCG) on the lab bridge.

Debian's OVMF (2022.11) has HTTP boot: its boot options are, in order,
"UEFI PXEv4", "UEFI PXEv6", "UEFI HTTPv4", "UEFI HTTPv6" for each NIC.
The reservation's PXE boot file does not exist, so the firmware's PXEv4
attempt ends at once with a TFTP "file not found"; PXEv6 finds no DHCPv6
server; then HTTPv4 asks DHCP with vendor class ``HTTPClient``, is
answered with ``http://<agent>:<http_port>/snponly.efi``, loads iPXE over
HTTP from the agent's own server, and iPXE fetches Ironic's script from a
stand-in HTTP server (the http_root role). The VM is stopped by PID once
the script request arrived.
"""

import os
import shutil
import time

import pytest

from tests.functional import pxe_lab
from vmetal_ironic.reservation import BootOptions

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

SERVER = '198.51.100.1'
HTTP_PORT = 8080
BOOT_HTTP_PORT = 8069
SCRIPT_PATH = '/boot.ipxe'
OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'
OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd'
BOOT_TIMEOUT = 420


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    lab = pxe_lab.Lab(tmp_path_factory.mktemp('vpxhttp'))
    try:
        lab.server_ns, lab.server_if = lab.node('s', f'{SERVER}/24')
        web = lab.workdir / 'web'
        web.mkdir()
        (web / 'boot.ipxe').write_text('#!ipxe\necho vmetal boot script\n'
                                       'sleep 600\n')
        lab.http, lab.http_log = pxe_lab.http_server(
            lab, lab.server_ns, SERVER, HTTP_PORT, web)
        lab.tftp = pxe_lab.tftp_root(lab.workdir)
        lab.agent = lab.start_agent(
            lab.server_ns, lab.server_if,
            extra=f"""\
                ipxe_script_url = http://{SERVER}:{HTTP_PORT}{SCRIPT_PATH}
                [vmetal_tftp]
                root = {lab.tftp}
                http_port = {BOOT_HTTP_PORT}
                """)
        yield lab
    finally:
        lab.close()


def test_ovmf_http_boots_the_bootloader_from_the_agent(lab):
    mac = '52:54:00:5e:04:01'
    address = '198.51.100.161'
    lab.reserve(mac, address, gateway=SERVER, dns_servers=(SERVER,),
                boot=BootOptions(bootfile='no-such-file.efi'))
    revision = lab.store.reservations_revision()
    pxe_lab.wait_for(lambda: f'(revision {revision})' in lab.agent.log(), 5,
                     what='reservation loaded')
    variables = lab.workdir / 'OVMF_VARS.fd'
    shutil.copy(OVMF_VARS, variables)
    tap = lab.tap()
    serial = lab.workdir / 'http-serial.log'
    argv = ['qemu-system-x86_64', '-accel', 'tcg', '-m', '512',
            '-nodefaults', '-display', 'none', '-vga', 'none',
            '-machine', 'pc,graphics=off', '-no-reboot',
            '-chardev', f'file,id=s0,path={serial}', '-serial', 'chardev:s0',
            '-netdev', f'tap,id=n0,ifname={tap},script=no,downscript=no',
            '-device', f'virtio-net-pci,netdev=n0,mac={mac},romfile=',
            '-drive', f'if=pflash,format=raw,readonly=on,file={OVMF_CODE}',
            '-drive', f'if=pflash,format=raw,file={variables}']
    started = time.monotonic()
    vm = lab.spawn(lab.hub, argv, 'http-qemu.log')
    try:
        requests = pxe_lab.wait_for(
            lambda: vm.poll() is not None or [
                request for request in pxe_lab.http_requests(lab.http_log)
                if request[0] == address],
            BOOT_TIMEOUT, interval=0.2, what='the VM to fetch the script')
        elapsed = time.monotonic() - started
        assert vm.poll() is None, (lab.workdir / 'http-qemu.log').read_text()
    finally:
        lab.stop(vm)
    print(f'OVMF HTTP boot: QEMU start -> script request {elapsed:.1f} s')
    assert requests == [(address, SCRIPT_PATH)]
    console = serial.read_text(errors='replace')
    assert 'Start HTTP Boot over IPv4' in console, console[-2000:]
    lines = [line for line in lab.agent.log().splitlines()
             if f'from {mac}' in line and 'ACK' in line]
    url = f'http://{SERVER}:{BOOT_HTTP_PORT}/snponly.efi'
    assert any(f'boot http {url}' in line for line in lines), lines
    assert any('boot ipxe http://' in line for line in lines), lines
    # The bootloader came from the agent's HTTP server, whole.
    assert lab.agent.metric(
        'vmetal_http_boot_requests_total{result="served"}') >= 1
    assert lab.agent.metric('vmetal_http_boot_bytes_total') >= (
        os.path.getsize('/usr/lib/ipxe/snponly.efi'))
