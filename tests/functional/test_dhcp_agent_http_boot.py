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

import pytest

from tests.functional import pxe_lab
from vmetal_ironic.reservation import BootOptions

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

SERVER = pxe_lab.SCRIPT_SERVER
BOOT_HTTP_PORT = 8069
BOOT_TIMEOUT = 420

lab = pxe_lab.script_lab_fixture('vpxhttp',
                                 tftp_extra=f'http_port = {BOOT_HTTP_PORT}\n')


def test_ovmf_http_boots_the_bootloader_from_the_agent(lab):
    mac = '52:54:00:5e:04:01'
    address = '198.51.100.161'
    _elapsed, requests = pxe_lab.boot_to_script(
        lab, 'http', mac, address, pxe_lab.ovmf(lab, 'http'),
        'virtio-net-pci,romfile=', BOOT_TIMEOUT,
        boot=BootOptions(bootfile='no-such-file.efi'))
    assert requests == [(address, pxe_lab.SCRIPT_PATH)]
    console = (lab.workdir / 'http-serial.log').read_text(errors='replace')
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
