"""Real PXE boots through vmetal-dhcp-agent: QEMU (TCG) on the lab bridge.

BIOS: SeaBIOS with the iPXE option ROM of ipxe-qemu, so the first DHCP
client is already iPXE; it gets the script URL and fetches it over HTTP.
UEFI: OVMF with a virtio NIC without option ROM, so the firmware's own PXE
client asks: it must get snponly.efi over TFTP from the agent, chainload
it, and iPXE then fetches the script. The HTTP server the test runs proves
the request came from the reserved address. VMs are stopped by PID as soon
as the request arrived.
"""

import os
import shutil
import time

import pytest

from tests.functional import pxe_lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

SERVER = '198.51.100.1'
HTTP_PORT = 8080
SCRIPT_PATH = '/boot.ipxe'
OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'
OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd'
BOOT_TIMEOUT = 150


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    lab = pxe_lab.Lab(tmp_path_factory.mktemp('vpxboot'))
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
                """)
        yield lab
    finally:
        lab.close()


def _boot(lab, name, mac, address, firmware_args, nic):
    lab.reserve(mac, address, gateway=SERVER, dns_servers=(SERVER,))
    lab.agent.wait_loaded()
    tap = lab.tap()
    serial = lab.workdir / f'{name}-serial.log'
    argv = ['qemu-system-x86_64', '-accel', 'tcg', '-m', '512',
            '-nodefaults', '-display', 'none', '-vga', 'none',
            '-machine', 'pc,graphics=off', '-no-reboot',
            '-chardev', f'file,id=s0,path={serial}', '-serial', 'chardev:s0',
            '-netdev', f'tap,id=n0,ifname={tap},script=no,downscript=no',
            '-device', f'{nic},netdev=n0,mac={mac}', *firmware_args]
    started = time.monotonic()
    vm = lab.spawn(lab.hub, argv, f'{name}-qemu.log')
    try:
        requests = pxe_lab.wait_for(
            lambda: vm.poll() is not None or [
                request for request in pxe_lab.http_requests(lab.http_log)
                if request[0] == address],
            BOOT_TIMEOUT, interval=0.1, what=f'{name} VM to fetch the script')
        elapsed = time.monotonic() - started
        assert vm.poll() is None, (lab.workdir / f'{name}-qemu.log').read_text()
    finally:
        lab.stop(vm)
    print(f'{name}: QEMU start -> HTTP request {elapsed:.1f} s')
    assert requests == [(address, SCRIPT_PATH)]
    return elapsed


def test_bios_ipxe_rom_boots_through_the_agent(lab):
    mac = '52:54:00:5e:02:01'
    address = '198.51.100.150'
    _boot(lab, 'bios', mac, address, ['-boot', 'n'], 'e1000')
    log = lab.agent.log()
    assert (f'REQUEST from {mac}' in log and f'ACK {address}' in log)
    ack_lines = [line for line in log.splitlines()
                 if f'from {mac}' in line and 'ACK' in line]
    assert any('boot ipxe http://' in line for line in ack_lines), ack_lines
    assert lab.agent.metric('vmetal_ipv6_ra_sent_total') >= 1


def test_uefi_firmware_pxe_chainloads_snponly_over_tftp(lab):
    mac = '52:54:00:5e:02:02'
    address = '198.51.100.151'
    variables = lab.workdir / 'OVMF_VARS.fd'
    shutil.copy(OVMF_VARS, variables)
    served = lab.agent.metric('vmetal_tftp_transfers_total{result="served"}')
    firmware = ['-drive', f'if=pflash,format=raw,readonly=on,file={OVMF_CODE}',
                '-drive', f'if=pflash,format=raw,file={variables}']
    _boot(lab, 'uefi', mac, address, firmware, 'virtio-net-pci,romfile=')
    lines = [line for line in lab.agent.log().splitlines()
             if f'from {mac}' in line and 'ACK' in line]
    # First the firmware (arch 7) got the boot file, then iPXE the script.
    assert any('boot pxe snponly.efi' in line for line in lines), lines
    assert any('boot ipxe http://' in line for line in lines), lines
    assert lab.agent.metric(
        'vmetal_tftp_transfers_total{result="served"}') > served
    assert lab.agent.metric('vmetal_tftp_bytes_total') >= os.path.getsize(
        '/usr/lib/ipxe/snponly.efi')
