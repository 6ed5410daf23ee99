"""Real PXE boots through vmetal-dhcp-agent: QEMU (TCG) on the lab bridge.

BIOS: SeaBIOS with the iPXE option ROM of ipxe-qemu, so the first DHCP
client is already iPXE; it gets the script URL and fetches it over HTTP.
UEFI: OVMF with a virtio NIC without option ROM, so the firmware's own PXE
client asks: it must get snponly.efi over TFTP from the agent, chainload
it, and iPXE then fetches the script; once more with the agent's TFTP in
single-port mode (every transfer from port 69). The HTTP server the test
runs proves the request came from the reserved address. VMs are stopped by PID as soon
as the request arrived.
"""

import os

import pytest

from tests.functional import pxe_lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

BOOT_TIMEOUT = 150

lab = pxe_lab.script_lab_fixture('vpxboot')


def _boot(lab, name, mac, address, firmware_args, nic):
    _elapsed, requests = pxe_lab.boot_to_script(
        lab, name, mac, address, firmware_args, nic, BOOT_TIMEOUT)
    assert requests == [(address, pxe_lab.SCRIPT_PATH)]


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
    served = lab.agent.metric('vmetal_tftp_transfers_total{result="served"}')
    _boot(lab, 'uefi', mac, address, pxe_lab.ovmf(lab, 'uefi'),
          'virtio-net-pci,romfile=')
    lines = [line for line in lab.agent.log().splitlines()
             if f'from {mac}' in line and 'ACK' in line]
    # First the firmware (arch 7) got the boot file, then iPXE the script.
    assert any('boot pxe snponly.efi' in line for line in lines), lines
    assert any('boot ipxe http://' in line for line in lines), lines
    assert lab.agent.metric(
        'vmetal_tftp_transfers_total{result="served"}') > served
    assert lab.agent.metric('vmetal_tftp_bytes_total') >= os.path.getsize(
        '/usr/lib/ipxe/snponly.efi')


single_port_lab = pxe_lab.script_lab_fixture(
    'vpxsingle', tftp_extra='single_port = true\n')


def test_uefi_firmware_pxe_with_single_port_tftp(single_port_lab):
    lab = single_port_lab
    mac = '52:54:00:5e:02:03'
    _boot(lab, 'uefi-single', mac, '198.51.100.152',
          pxe_lab.ovmf(lab, 'uefi-single'), 'virtio-net-pci,romfile=')
    assert lab.agent.metric(
        'vmetal_tftp_transfers_total{result="served"}') >= 1
