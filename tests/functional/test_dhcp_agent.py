"""vmetal-dhcp-agent against real DHCP and TFTP clients (root).

One lab for the module: a server namespace running the agent and client
namespaces on the same bridge, addresses from 198.51.100.0/24.
"""

import filecmp
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from tests.functional import pxe_lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

SERVER = '198.51.100.1'
GATEWAY = '198.51.100.254'
DNS = '198.51.100.53'
SCRIPT_URL = f'http://{SERVER}:8080/boot.ipxe'


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    lab = pxe_lab.Lab(tmp_path_factory.mktemp('vpx'))
    try:
        lab.server_ns, lab.server_if = lab.node('s', f'{SERVER}/24')
        lab.tftp = pxe_lab.tftp_root(lab.workdir)
        lab.agent = lab.start_agent(
            lab.server_ns, lab.server_if,
            extra=f"""\
                ipxe_script_url = {SCRIPT_URL}
                [vmetal_tftp]
                root = {lab.tftp}
                """)
        yield lab
    finally:
        lab.close()


def _reserve(lab, mac, address, **kwargs):
    lab.reserve(mac, address, gateway=GATEWAY, dns_servers=(DNS,),
                **kwargs)
    # The agent polls the store every 0.2 s.
    lab.agent.wait_loaded()


def test_udhcpc_gets_its_reservation_and_pxe_boot_file(lab):
    mac = '52:54:00:5e:00:11'
    _reserve(lab, mac, '198.51.100.11', hostname='node-11')
    ns, interface = lab.node('u1', mac=mac)
    env = pxe_lab.udhcpc(lab, ns, interface, 'u1',
                         vendor_class='PXEClient:Arch:00000:UNDI:002001')
    assert env is not None, lab.agent.log()[-3000:]
    assert env['ip'] == '198.51.100.11'
    assert env['subnet'] == '255.255.255.0'
    assert env['router'] == GATEWAY
    assert env['dns'].split() == [DNS]
    assert env['serverid'] == SERVER
    assert env['hostname'] == 'node-11'
    assert env['boot_file'] == 'undionly.kpxe'
    assert env['siaddr'] == SERVER


def test_dhclient_gets_its_reservation(lab):
    mac = '52:54:00:5e:00:12'
    _reserve(lab, mac, '198.51.100.12')
    ns, interface = lab.node('d1', mac=mac)
    env = pxe_lab.dhclient(lab, ns, interface, 'd1')
    assert env is not None, lab.agent.log()[-3000:]
    assert env['reason'] == 'BOUND'
    assert env['new_ip_address'] == '198.51.100.12'
    assert env['new_subnet_mask'] == '255.255.255.0'
    assert env['new_routers'] == GATEWAY
    assert env['new_domain_name_servers'] == DNS
    assert env['new_dhcp_server_identifier'] == SERVER
    # An OS client is not a PXE client: no boot file for it.
    assert 'new_filename' not in env


def test_release_then_new_dora_gives_the_same_address(lab):
    mac = '52:54:00:5e:00:13'
    _reserve(lab, mac, '198.51.100.13')
    ns, interface = lab.node('d2', mac=mac)
    first = pxe_lab.dhclient(lab, ns, interface, 'd2')
    assert first['new_ip_address'] == '198.51.100.13'
    releases = lab.agent.metric('vmetal_dhcp_requests_total{type="RELEASE"}')
    pxe_lab.dhclient(lab, ns, interface, 'd2', release=True)
    pxe_lab.wait_for(
        lambda: lab.agent.metric(
            'vmetal_dhcp_requests_total{type="RELEASE"}') == releases + 1,
        10, what='RELEASE at the agent')
    (lab.workdir / 'd2.leases').unlink()
    again = pxe_lab.dhclient(lab, ns, interface, 'd2')
    assert again['new_ip_address'] == '198.51.100.13'


def test_renewal_is_answered_by_unicast_to_the_client(lab):
    mac = '52:54:00:5e:00:18'
    _reserve(lab, mac, '198.51.100.18')
    ns, interface = lab.node('n1', mac=mac)
    unicast = 'vmetal_dhcp_reply_destinations_total{to="client"}'
    proc, env = pxe_lab.udhcpc_daemon(lab, ns, interface, 'n1')
    try:
        pxe_lab.wait_for(env.exists, 20, what='udhcpc bound')
        assert pxe_lab.read_env(env)['ip'] == '198.51.100.18'
        before = lab.agent.metric(unicast)
        proc.send_signal(signal.SIGUSR1)  # udhcpc: renew now
        renewed = env.with_name(env.name + '.renew')
        pxe_lab.wait_for(renewed.exists, 20, what='udhcpc renewal')
        assert pxe_lab.read_env(renewed)['ip'] == '198.51.100.18'
        # The renewal's ACK went by unicast to the client's address.
        assert lab.agent.metric(unicast) >= before + 1
    finally:
        lab.stop(proc)


def test_unknown_mac_gets_nothing(lab):
    ns, interface = lab.node('x1', mac='52:54:00:5e:00:99')
    before = lab.agent.metrics()
    env = pxe_lab.udhcpc(lab, ns, interface, 'x1', tries=2)
    assert env is None
    after = lab.agent.metrics()
    assert after['vmetal_dhcp_unknown_mac_total'] >= (
        before['vmetal_dhcp_unknown_mac_total'] + 2)
    offers = 'vmetal_dhcp_replies_total{type="OFFER"}'
    assert after.get(offers, 0.0) == before.get(offers, 0.0)


def test_withdrawn_reservation_is_no_longer_answered(lab):
    mac = '52:54:00:5e:00:14'
    _reserve(lab, mac, '198.51.100.14')
    ns, interface = lab.node('u2', mac=mac)
    assert pxe_lab.udhcpc(lab, ns, interface, 'u2')['ip'] == '198.51.100.14'
    lab.store.withdraw_reservation(mac)
    lab.agent.wait_loaded()
    assert pxe_lab.udhcpc(lab, ns, interface, 'u2b', tries=2) is None


def _tftp_hpa(lab, ns, name, target, check=True):
    return lab.ns_run(ns, 'tftp', SERVER, '-m', 'binary', '-c', 'get', name,
                      str(target), timeout=60, check=check)


def test_tftp_downloads_are_byte_identical(lab):
    ns, _ = lab.node('t1', address='198.51.100.31/24')
    plain = lab.workdir / 'plain.kpxe'
    _tftp_hpa(lab, ns, 'undionly.kpxe', plain)
    assert filecmp.cmp(plain, '/usr/lib/ipxe/undionly.kpxe', shallow=False)
    # busybox tftp negotiates blksize (and tsize) with the server.
    big = lab.workdir / 'big.efi'
    lab.ns_run(ns, 'busybox', 'tftp', '-g', '-b', '1468', '-r', 'ipxe.efi',
               '-l', str(big), SERVER, timeout=60)
    assert filecmp.cmp(big, os.path.realpath('/usr/lib/ipxe/ipxe.efi'),
                       shallow=False)
    # The server counts a transfer when the last ACK comes in, after the
    # client has its file.
    lab.agent.wait_metric('vmetal_tftp_transfers_total{result="served"}', 2)
    lab.agent.wait_metric('vmetal_tftp_bytes_total',
                          os.path.getsize(plain) + os.path.getsize(big))


# Every name the jail refuses gets the same answer, "file not found": a
# client learns nothing about what lies outside the root.
@pytest.mark.parametrize('name,error', [
    ('../secret.txt', 'Error code 1'),
    ('../../../../etc/passwd', 'Error code 1'),
    ('/etc/passwd', 'Error code 1'),
    ('escape.txt', 'Error code 1'),
    ('sub/../../secret.txt', 'Error code'),
])
def test_tftp_refuses_paths_outside_the_root(lab, name, error):
    if not hasattr(lab, 'tftp_client'):
        lab.tftp_client = lab.node('t2', address='198.51.100.32/24')[0]
    target = lab.workdir / 'refused.out'
    target.unlink(missing_ok=True)
    result = _tftp_hpa(lab, lab.tftp_client, name, target, check=False)
    assert error in result.stdout + result.stderr
    assert not target.exists() or b'not for tftp' not in target.read_bytes()


def test_tftp_refuses_writes(lab):
    ns, _ = lab.node('t3', address='198.51.100.33/24')
    source = lab.workdir / 'upload.txt'
    source.write_text('hello\n')
    result = lab.ns_run(ns, 'tftp', SERVER, '-m', 'binary', '-c', 'put',
                        str(source), 'upload.txt', timeout=30, check=False)
    assert 'Error code 2' in result.stdout + result.stderr
    assert not (lab.tftp / 'upload.txt').exists()


def _bootp(op=1, htype=1, hlen=6, mac=b'\x52\x54\x00\x5e\x00\x77'):
    return (struct.pack('!BBBB4sHH4s4s4s4s', op, htype, hlen, 0,
                        b'\1\2\3\4', 0, 0x8000, bytes(4), bytes(4), bytes(4),
                        bytes(4))
            + mac.ljust(16, b'\0') + bytes(192))


COOKIE = b'\x63\x82\x53\x63'
HOSTILE = [
    b'',
    b'\x01' * 100,                                          # truncated
    _bootp() + COOKIE + b'\x35\x01\x01',                    # no end option
    _bootp() + COOKIE + b'\x35\x01\x01\x3d\xff\x01\xff',    # length overrun
    _bootp() + COOKIE + b'\x35\x05\x01\xff',                # overrun of 53
    _bootp(op=2) + COOKIE + b'\x35\x01\x01\xff',            # wrong op
    _bootp(htype=6) + COOKIE + b'\x35\x01\x01\xff',         # wrong htype
    _bootp(hlen=16) + COOKIE + b'\x35\x01\x01\xff',         # wrong hlen
    _bootp() + b'\0\0\0\0' + b'\x35\x01\x01\xff',           # no cookie
    _bootp() + COOKIE + b'\x0c\x02hi\xff',                  # no type
    _bootp() + COOKIE + b'\x35\x01\x03\x32\x02\x01\x02\xff',  # bad opt 50
    _bootp() + COOKIE + b'\x35\x01\x01' + b'\0' * 1300 + b'\x0c',  # no end
    _bootp() + COOKIE + b'\x35\x01\x01' + b'\0' * 1400 + b'\xff',  # oversize
]


def test_hostile_packets_are_counted_dropped_and_clients_still_served(lab):
    ns, interface = lab.node('h1', address='198.51.100.41/24')
    before = lab.agent.metric('vmetal_dhcp_malformed_total')
    payloads = lab.workdir / 'hostile.bin'
    with open(payloads, 'wb') as handle:
        for packet in HOSTILE:
            handle.write(struct.pack('!I', len(packet)) + packet)
    sender = (
        'import socket,struct,sys\n'
        's=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n'
        's.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)\n'
        f's.setsockopt(socket.SOL_SOCKET,socket.SO_BINDTODEVICE,'
        f'b"{interface}")\n'
        'data=open(sys.argv[1],"rb").read()\n'
        'i=0\n'
        'while i<len(data):\n'
        '    n=struct.unpack("!I",data[i:i+4])[0]\n'
        '    s.sendto(data[i+4:i+4+n],("255.255.255.255",67))\n'
        '    i+=4+n\n')
    lab.ns_run(ns, sys.executable, '-c', sender, str(payloads))
    pxe_lab.wait_for(
        lambda: lab.agent.metric('vmetal_dhcp_malformed_total')
        == before + len(HOSTILE), 10, what='malformed packets counted')
    assert lab.agent.proc.poll() is None
    mac = '52:54:00:5e:00:15'
    _reserve(lab, mac, '198.51.100.15')
    cns, cif = lab.node('h2', mac=mac)
    assert pxe_lab.udhcpc(lab, cns, cif, 'h2')['ip'] == '198.51.100.15'
    assert 'Traceback' not in lab.agent.log()


def test_unknown_mac_flood_does_not_block_known_clients(lab):
    ns, interface = lab.node('f1', address='198.51.100.42/24')
    flood = (
        'import socket,struct,os,time\n'
        's=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n'
        's.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)\n'
        f's.setsockopt(socket.SOL_SOCKET,socket.SO_BINDTODEVICE,'
        f'b"{interface}")\n'
        'end=time.monotonic()+3\n'
        'n=0\n'
        'while time.monotonic()<end and n<20000:\n'
        '    mac=b"\\x02"+os.urandom(5)\n'
        '    p=struct.pack("!BBBB4sHH",1,1,6,0,os.urandom(4),0,0x8000)'
        '+bytes(16)+mac+bytes(10)+bytes(192)'
        '+b"\\x63\\x82\\x53\\x63\\x35\\x01\\x01\\xff"\n'
        '    s.sendto(p,("255.255.255.255",67))\n'
        '    n+=1\n')
    proc = lab.spawn(ns, [sys.executable, '-c', flood], 'flood.log')
    try:
        mac = '52:54:00:5e:00:16'
        _reserve(lab, mac, '198.51.100.16')
        cns, cif = lab.node('f2', mac=mac)
        started = time.monotonic()
        env = pxe_lab.udhcpc(lab, cns, cif, 'f2')
        assert env['ip'] == '198.51.100.16'
        assert time.monotonic() - started < 10
    finally:
        proc.wait(30)
    assert lab.agent.metric('vmetal_dhcp_unknown_mac_total') > 100


def test_two_agents_serve_the_same_store_side_by_side(lab):
    second_ns, second_if = lab.node('s2', '198.51.100.2/24')
    second = lab.start_agent(second_ns, second_if, name='agent2',
                             metrics_port=9568,
                             extra='[vmetal_tftp]\nenabled = false\n')
    try:
        macs = [f'52:54:00:5e:01:{i:02x}' for i in range(1, 7)]
        for index, mac in enumerate(macs):
            _reserve(lab, mac, f'198.51.100.{100 + index}')
        second.wait_loaded()
        servers = set()
        for index, mac in enumerate(macs):
            ns, interface = lab.node(f'a{index}', mac=mac)
            if index % 2:
                env = pxe_lab.udhcpc(lab, ns, interface, f'a{index}')
                address, server = env['ip'], env['serverid']
            else:
                env = pxe_lab.dhclient(lab, ns, interface, f'a{index}')
                address = env['new_ip_address']
                server = env['new_dhcp_server_identifier']
            assert address == f'198.51.100.{100 + index}'
            servers.add(server)
        # Both agents offered to every client; each client took one offer
        # and the other agent stayed silent: no NAK anywhere.
        for agent in (lab.agent, second):
            assert agent.metric('vmetal_dhcp_replies_total{type="NAK"}') == 0
            assert agent.metric(
                'vmetal_dhcp_ignored_total{reason="request for another '
                'server"}') + agent.metric(
                'vmetal_dhcp_replies_total{type="ACK"}') >= len(macs)
        assert servers <= {SERVER, '198.51.100.2'}
    finally:
        lab.stop(second.proc)
    assert second.proc.returncode == 0


def test_bad_configuration_is_one_line_and_exit_1(lab, tmp_path):
    conf = tmp_path / 'bad.conf'
    conf.write_text('[vmetal_dhcp_agent]\ninterface = vpxnosuchif0\n'
                    f'[vmetal_local_store]\ndatabase = {tmp_path}/x.db\n')
    result = subprocess.run([pxe_lab.AGENT, '--config-file', str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "vmetal-dhcp-agent: error: [vmetal_dhcp_agent]interface "
        "'vpxnosuchif0' does not exist"]
    conf.write_text('[vmetal_local_store]\n'
                    f'database = {tmp_path}/x.db\n')
    result = subprocess.run([pxe_lab.AGENT, '--config-file', str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert 'interface is not set' in result.stderr
    assert 'Traceback' not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sighup_reloads_configuration(lab):
    conf = lab.workdir / 'agent.conf'
    text = conf.read_text()
    new_url = SCRIPT_URL + '?v=2'
    conf.write_text(text.replace(SCRIPT_URL, new_url))
    mac = '52:54:00:5e:00:17'
    _reserve(lab, mac, '198.51.100.17')
    ns, interface = lab.node('r1', mac=mac)
    ipxe = ['-x', '0x4d:' + b'iPXE'.hex()]  # user class "iPXE"
    reloads = 'vmetal_dhcp_config_reloads_total{result="ok"}'
    before = lab.agent.metric(reloads)
    try:
        lab.agent.proc.send_signal(signal.SIGHUP)
        pxe_lab.wait_for(lambda: lab.agent.metric(reloads) == before + 1,
                         10, what='reload')
        env = pxe_lab.udhcpc(lab, ns, interface, 'r1',
                             vendor_class='PXEClient:Arch:00007',
                             extra=ipxe)
        assert env['boot_file'] == new_url
        # The firmware stage of the same host still gets the boot file.
        env = pxe_lab.udhcpc(lab, ns, interface, 'r1b',
                             vendor_class='PXEClient:Arch:00007')
        assert env['boot_file'] == 'snponly.efi'
        assert lab.agent.proc.poll() is None
    finally:
        conf.write_text(text)
        lab.agent.proc.send_signal(signal.SIGHUP)


def test_dynamic_range_leases_to_unknown_hosts_for_inspection(lab):
    dyn_ns, dyn_if = lab.node('s3', '198.51.100.3/24')
    agent = lab.start_agent(dyn_ns, dyn_if, name='agent3', metrics_port=9569,
                            extra=f"""\
                                dynamic_range = 198.51.100.200-198.51.100.201
                                dynamic_gateway = {GATEWAY}
                                dynamic_dns_servers = {DNS}
                                [vmetal_tftp]
                                enabled = false
                                """)
    try:
        ns, interface = lab.node('y1', mac='52:54:00:5e:00:aa')
        env = pxe_lab.udhcpc(lab, ns, interface, 'y1',
                             vendor_class='PXEClient:Arch:00000')
        assert env['ip'] == '198.51.100.200'
        assert env['serverid'] == '198.51.100.3'
        assert env['router'] == GATEWAY
        assert env['boot_file'] == 'undionly.kpxe'
        # The same host asks again: same address.
        env = pxe_lab.udhcpc(lab, ns, interface, 'y1b')
        assert env['ip'] == '198.51.100.200'
    finally:
        lab.stop(agent.proc)
