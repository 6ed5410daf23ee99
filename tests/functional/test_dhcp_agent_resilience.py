"""vmetal-dhcp-agent when its data or its network go wrong (root).

Bad rows in the store, the provisioning interface deleted and created
again, and an INIT-REBOOT from a client the agent has no record of, each
against the real agent with real DHCP clients in namespaces. Addresses
from 198.51.100.0/24. Every check reads the agent's metrics, not its log.
"""

import json
import os
import sqlite3
import time

import pytest

from tests.functional import pxe_lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

SERVER = '198.51.100.1'
DYNAMIC_SERVER = '198.51.100.3'
GATEWAY = '198.51.100.254'


def _write_raw_row(lab, mac, document):
    """Put a row in the store as another writer (or a human) might, past
    the reservation type's checks."""
    db = sqlite3.connect(lab.store_path, timeout=30)
    try:
        with db:
            db.execute('INSERT INTO reservations (mac, document, updated_at) '
                       'VALUES (?, ?, 0) ON CONFLICT(mac) DO UPDATE SET '
                       'document = excluded.document', (mac, document))
            db.execute("INSERT INTO counters (name, value) VALUES "
                       "('reservations', 1) ON CONFLICT(name) DO UPDATE SET "
                       'value = value + 1')
    finally:
        db.close()


def _bad_row(mac, address, **fields):
    row = {'mac': mac, 'address': address, 'prefixlen': 24,
           'dns_servers': [], 'boot': {}}
    row.update(fields)
    return json.dumps(row)


BAD_ROWS = [
    ('52:54:00:5e:02:01', {'prefixlen': 33}),
    ('52:54:00:5e:02:02', {'hostname': 'h' * 300}),
    ('52:54:00:5e:02:03', {'lease_time': 2 ** 32}),
    ('52:54:00:5e:02:04', {'gateway': 'not an ip'}),
    ('52:54:00:5e:02:05',
     {'dns_servers': [f'198.51.100.{i}' for i in range(70)]}),
    ('52:54:00:5e:02:06', {'boot': {'bootfile': 'b' * 300}}),
]


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    lab = pxe_lab.Lab(tmp_path_factory.mktemp('vpxres'))
    try:
        lab.server_ns, lab.server_if = lab.node('s', f'{SERVER}/24')
        # The agent must start although the store already holds a bad row.
        _write_raw_row(lab, BAD_ROWS[0][0],
                       _bad_row(BAD_ROWS[0][0], '198.51.100.60',
                                **BAD_ROWS[0][1]))
        lab.tftp = pxe_lab.tftp_root(lab.workdir)
        lab.agent = lab.start_agent(
            lab.server_ns, lab.server_if,
            extra='interface_check_interval = 0.2\n'
                  f'[vmetal_tftp]\nroot = {lab.tftp}\n')
        yield lab
    finally:
        lab.close()


def test_bad_rows_are_skipped_counted_and_later_rows_served(lab):
    agent = lab.agent
    pxe_lab.wait_for(lambda: agent.metric(
        'vmetal_dhcp_reservations_skipped') == 1, 10, what='bad row counted')
    for index, (mac, fields) in enumerate(BAD_ROWS[1:], start=61):
        _write_raw_row(lab, mac, _bad_row(mac, f'198.51.100.{index}',
                                          **fields))
    mac = '52:54:00:5e:02:10'
    lab.reserve(mac, '198.51.100.70', gateway=GATEWAY)
    agent.wait_loaded()
    ns, interface = lab.node('b1', mac=mac)
    env = pxe_lab.udhcpc(lab, ns, interface, 'b1',
                         vendor_class='PXEClient:Arch:00000')
    assert env is not None and env['ip'] == '198.51.100.70'
    metrics = agent.metrics()
    assert metrics['vmetal_dhcp_reservations_skipped'] == len(BAD_ROWS)
    assert metrics['vmetal_dhcp_reservations'] == 1
    assert metrics['vmetal_dhcp_store_feed{vmetal_dhcp_store_feed="ok"}'] \
        == 1
    # A client of a bad row gets nothing, and costs no traceback.
    bad_ns, bad_if = lab.node('b2', mac=BAD_ROWS[-1][0])
    assert pxe_lab.udhcpc(lab, bad_ns, bad_if, 'b2', tries=2,
                          vendor_class='PXEClient:Arch:00000') is None
    assert agent.metric('vmetal_dhcp_internal_errors_total') == 0
    assert agent.proc.poll() is None
    # Fixing the rows brings them back without a restart.
    for mac, _fields in BAD_ROWS:
        lab.store.withdraw_reservation(mac)
    agent.wait_loaded()
    assert agent.metric('vmetal_dhcp_reservations_skipped') == 0


def test_recreated_interface_is_bound_again_and_clients_answered(lab):
    agent = lab.agent
    mac = '52:54:00:5e:02:20'
    lab.reserve(mac, '198.51.100.80', gateway=GATEWAY)
    agent.wait_loaded()
    ns, interface = lab.node('l1', mac=mac)
    assert pxe_lab.udhcpc(lab, ns, interface, 'l1')['ip'] == '198.51.100.80'
    rebinds = agent.metric('vmetal_dhcp_interface_rebinds_total')
    lab.recreate_link(lab.server_ns, lab.server_if, f'{SERVER}/24')
    pxe_lab.wait_for(lambda: agent.metric(
        'vmetal_dhcp_interface_rebinds_total') == rebinds + 1, 10,
        interval=0.2, what='the agent to re-bind')
    assert agent.metric('vmetal_dhcp_interface_up') == 1
    # A real client on the re-created link is answered again.
    env = pxe_lab.udhcpc(lab, ns, interface, 'l1b')
    assert env is not None and env['ip'] == '198.51.100.80'
    dhclient_ns, dhclient_if = lab.node('l2', mac='52:54:00:5e:02:21')
    lab.reserve('52:54:00:5e:02:21', '198.51.100.81', gateway=GATEWAY)
    agent.wait_loaded()
    env = pxe_lab.dhclient(lab, dhclient_ns, dhclient_if, 'l2')
    assert env is not None and env['new_ip_address'] == '198.51.100.81'
    # TFTP is bound to the address, not the interface: it serves again
    # once the address is back.
    tftp_ns, _ = lab.node('l3', address='198.51.100.82/24')
    target = lab.workdir / 'after-recreate.kpxe'
    lab.ns_run(tftp_ns, 'tftp', SERVER, '-m', 'binary', '-c', 'get',
               'undionly.kpxe', str(target), timeout=60)
    assert target.stat().st_size == (lab.tftp / 'undionly.kpxe').stat(
        ).st_size
    assert agent.proc.poll() is None


LEASE = """lease {{
  interface "{interface}";
  fixed-address {address};
  option subnet-mask 255.255.255.0;
  option dhcp-server-identifier 198.51.100.250;
  renew 4 2037/01/01 00:00:00;
  rebind 4 2037/01/01 00:00:00;
  expire 4 2037/01/01 00:00:00;
}}
"""


def test_init_reboot_from_an_unknown_client_gets_silence(lab):
    # RFC 2131 4.3.2: a server with no record of the client MUST remain
    # silent; a NAK would break the lease another server gave it.
    dyn_ns, dyn_if = lab.node('s3', f'{DYNAMIC_SERVER}/24')
    agent = lab.start_agent(dyn_ns, dyn_if, name='agent3', metrics_port=9569,
                            extra="""\
                                dynamic_range = 198.51.100.200-198.51.100.201
                                [vmetal_tftp]
                                enabled = false
                                """)
    try:
        ns, interface = lab.node('i1', mac='52:54:00:5e:02:30')
        # dhclient finds an unexpired lease from another server in its
        # lease file and starts in INIT-REBOOT: REQUEST with option 50 and
        # no server identifier.
        (lab.workdir / 'i1.leases').write_text(LEASE.format(
            interface=interface, address='198.51.100.200'))
        requests = 'vmetal_dhcp_requests_total{type="REQUEST"}'
        started = time.monotonic()
        env = pxe_lab.dhclient(lab, ns, interface, 'i1')
        metrics = agent.metrics()
        assert metrics.get(requests, 0) >= 1, 'no INIT-REBOOT seen'
        assert metrics.get('vmetal_dhcp_replies_total{type="NAK"}', 0) == 0
        # With silence the client waits out its reboot timeout, then
        # starts over with DISCOVER and gets a dynamic address.
        assert env is not None, 'dhclient got no lease'
        assert env['new_ip_address'] in ('198.51.100.200', '198.51.100.201')
        assert env['new_dhcp_server_identifier'] == DYNAMIC_SERVER
        assert time.monotonic() - started < 40
    finally:
        lab.stop(agent.proc)
