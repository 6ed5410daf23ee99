"""The agent between two networks, in namespaces, with curl and a real
Ironic.

* provisioning L2 (the lab bridge): the agent 198.51.100.1/24 and a
  machine 198.51.100.20/24 whose default route points at the agent, so
  that a forwarded packet would get through if the agent's namespace
  routed;
* cluster network (a veth pair of its own): the agent 203.0.113.2/24 and
  Ironic's namespace 203.0.113.1/24, holding a real Ironic (API and
  conductor) and busybox httpd serving Ironic's HTTP root (a 1 GiB sparse
  image among the files).

Both cluster-side legs are TLS with certificates of CAs the test makes
(:mod:`vmetal_ironic.lab.tls`): Ironic's API (``[api]enable_ssl_api``, as
Metal3 serves it), which the agent checks with ``[vmetal_bridge]ca_file``,
and the agent's callback listener, as Ironic would check it with
``[agent]verify_ca`` (the conductor's side is curl with that CA).

The ramdisk's API is played by Python's http.server on the machine's port
9999 (IPA itself needs a booted ramdisk: the full-flow lab runs the real
one); everything else is the real thing.
"""

import json
import os
import re
import ssl
import subprocess
import sys

import pytest

from tests.functional import ironic_fixture
from tests.functional import pxe_lab
from vmetal_ironic.lab import proxy
from vmetal_ironic.lab import tls

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

AGENT = '198.51.100.1'
MACHINE = '198.51.100.20'
MAC = '52:54:00:5e:17:20'
AGENT_CLUSTER = '203.0.113.2'
IRONIC = '203.0.113.1'
HTTP_ROOT_PORT = 8088
DYNAMIC_RANGE = ('198.51.100.100', '198.51.100.109')
LEASED_MAC = '52:54:00:5e:17:21'
IPA_PORT = 9999
BIG = 2**30


class Net:
    """Names and helpers of the running two-network lab."""

    def __init__(self, lab, agent, agent_ns, machine_ns, ironic_ns, ironic,
                 httpd, root, callback_tls):
        self.lab = lab
        self.agent = agent
        self.agent_ns = agent_ns
        self.machine_ns = machine_ns
        self.ironic_ns = ironic_ns
        self.ironic = ironic
        self.httpd = httpd
        self.root = root
        self.callback_tls = callback_tls

    def conductor(self, path, *args, ca_file=None, **kwargs):
        """The conductor's call to the callback listener: curl in Ironic's
        namespace over TLS, checked against the agent's CA (or
        ``ca_file``)."""
        ca_file = ca_file or self.callback_tls.ca_file
        return self.curl(self.ironic_ns, '--cacert', str(ca_file), *args,
                         f'https://{AGENT_CLUSTER}:8081{path}', **kwargs)

    def curl(self, ns, *args, timeout=60):
        """curl in ``ns``: ``(exit code, body, status)``; the status comes
        from ``-w``, on the last line."""
        result = subprocess.run(
            ['ip', 'netns', 'exec', ns, 'curl', '-sS', '--max-time',
             str(timeout - 5), '-w', '\n%{http_code}', *args],
            capture_output=True, timeout=timeout, check=False)
        body, _, status = result.stdout.rpartition(b'\n')
        return result.returncode, body, int(status or 0)

    def refused(self, listener, reason):
        return self.agent.metric(
            f'vmetal_bridge_refused_total{{listener="{listener}",'
            f'reason="{reason}"}}')


@pytest.fixture(scope='module')
def net(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('bridge')
    lab = pxe_lab.Lab(workdir / 'net')
    ironic = None
    try:
        agent_ns, agent_if = lab.node('a', f'{AGENT}/24')
        machine_ns, _ = lab.node('m', f'{MACHINE}/24', mac=MAC)
        ironic_ns = lab.namespace('k')
        lab.wire(agent_ns, ironic_ns, f'{AGENT_CLUSTER}/24', f'{IRONIC}/24')
        lab.ns_run(machine_ns, 'ip', 'route', 'add', 'default', 'via', AGENT)
        root = workdir / 'httproot'
        root.mkdir()
        (root / 'boot.ipxe').write_text('#!ipxe\nchain next\n')
        with open(root / 'big.img', 'wb') as big:
            big.truncate(BIG)
        httpd = lab.spawn(ironic_ns, ['busybox', 'httpd', '-f', '-p',
                                      f'{IRONIC}:{HTTP_ROOT_PORT}', '-h',
                                      str(root)], 'httpd.log')
        ramdisk = workdir / 'ramdisk'
        (ramdisk / 'v1' / 'commands').mkdir(parents=True)
        (ramdisk / 'v1' / 'commands' / 'index.html').write_text(
            '{"commands": []}')
        lab.spawn(machine_ns, [sys.executable, '-m', 'http.server',
                               str(IPA_PORT), '--bind', MACHINE,
                               '--directory', str(ramdisk)], 'ramdisk.log')
        ironic_tls = tls.issue(workdir / 'tls', [IRONIC, '127.0.0.1'],
                               label='ironic')
        ironic = ironic_fixture.IronicProcess(
            workdir / 'ironic', overrides={'api': {
                'host_ip': IRONIC, 'enable_ssl_api': 'true',
                'cert_file': str(ironic_tls.cert_file),
                'key_file': str(ironic_tls.key_file)}})
        relay_port, _relay = proxy.start(lab, ironic_ns, IRONIC, ironic.port)
        ironic.command_prefix = ['ip', 'netns', 'exec', ironic_ns]
        ironic.url = f'https://127.0.0.1:{relay_port}'
        ironic.tls_context = ssl.create_default_context(
            cafile=str(ironic_tls.ca_file))
        ironic.ca_file = ironic_tls.ca_file
        ironic.start()
        lab.reserve(MAC, MACHINE)
        callback_tls = tls.issue(workdir / 'tls', [AGENT_CLUSTER],
                                 label='callback')
        agent = lab.start_agent(agent_ns, agent_if, extra=f"""
            [vmetal_dhcp_agent]
            dynamic_range = {DYNAMIC_RANGE[0]}-{DYNAMIC_RANGE[1]}
            [vmetal_bridge]
            enabled = true
            ironic_http_url = http://{IRONIC}:{HTTP_ROOT_PORT}
            ironic_api_url = https://{IRONIC}:{ironic.port}
            ca_file = {ironic_tls.ca_file}
            callback_address = {AGENT_CLUSTER}
            callback_cert_file = {callback_tls.cert_file}
            callback_key_file = {callback_tls.key_file}
            header_timeout = 2
            """)
        yield Net(lab, agent, agent_ns, machine_ns, ironic_ns, ironic,
                  httpd, root, callback_tls)
    finally:
        if ironic is not None:
            ironic.stop()
        lab.close()


def test_nothing_is_routed_between_the_networks(net):
    forwarding = net.lab.ns_run(net.agent_ns, 'sysctl', '-n',
                                'net.ipv4.ip_forward').stdout.strip()
    assert forwarding == '0'
    addresses = net.lab.ns_run(net.ironic_ns, 'ip', '-4', '-o', 'addr',
                               'show').stdout
    assert '198.51.100.' not in addresses, addresses
    route = net.lab.ns_run(net.ironic_ns, 'ip', 'route', 'get', MACHINE,
                           check=False)
    assert route.returncode != 0, route.stdout
    # The machine routes through the agent, and still cannot reach Ironic.
    code, _, _ = net.curl(net.machine_ns, '--connect-timeout', '3',
                          f'http://{IRONIC}:{HTTP_ROOT_PORT}/boot.ipxe',
                          timeout=15)
    assert code != 0


def test_http_root_streams_through_the_agent(net):
    code, body, status = net.curl(net.machine_ns,
                                  f'http://{AGENT}:8080/boot.ipxe')
    assert (code, status, body) == (0, 200, b'#!ipxe\nchain next\n')
    code, head, status = net.curl(net.machine_ns, '-I',
                                  f'http://{AGENT}:8080/big.img')
    assert status == 200
    assert re.search(rb'(?i)content-length: %d' % BIG, head), head
    code, body, status = net.curl(net.machine_ns, '-r', '100-199',
                                  f'http://{AGENT}:8080/big.img')
    assert (status, len(body)) == (206, 100)
    rss_before = _rss_kib(net.agent.proc.pid)
    code, body, status = net.curl(
        net.machine_ns, '-o', '/dev/null', '-w',
        '%{size_download}\n%{http_code}',
        f'http://{AGENT}:8080/big.img', timeout=300)
    assert (code, status) == (0, 200)
    assert int(body.split()[-1]) == BIG
    # 1 GiB went through; the agent grew by far less than that.
    grown = _hwm_kib(net.agent.proc.pid) - rss_before
    assert grown < 64 * 1024, f'agent grew {grown} KiB'


def test_only_the_ramdisks_api_calls_reach_ironic(net):
    """Ironic's API over TLS upstream, checked against its CA; the
    ramdisk's side stays plain HTTP on the provisioning L2."""
    _code, body, status = net.curl(net.machine_ns, f'http://{AGENT}:6385/')
    assert status == 200 and 'versions' in json.loads(body)
    _code, body, status = net.curl(
        net.machine_ns, '-H', 'X-OpenStack-Ironic-API-Version: 1.68',
        f'http://{AGENT}:6385/v1/lookup?addresses={MAC}')
    # Ironic's own answer (no node has this MAC), not the agent's refusal.
    assert status == 404 and b'error_message' in body
    before = net.refused('api', 'path')
    _code, _body, status = net.curl(net.machine_ns,
                                  f'http://{AGENT}:6385/v1/nodes')
    assert status == 403
    # Ironic would have answered it.
    direct = net.lab.ns_run(net.ironic_ns, 'curl', '-sS', '-o', '/dev/null',
                            '-w', '%{http_code}', '--cacert',
                            str(net.ironic.ca_file),
                            f'https://{IRONIC}:{net.ironic.port}/v1/nodes')
    assert direct.stdout == '200'
    net.agent.wait_metric(
        'vmetal_bridge_refused_total{listener="api",reason="path"}',
        before + 1)
    # Both forwarded calls went to Ironic over checked TLS, none plain.
    connections = 'vmetal_bridge_upstream_connections_total{{listener="api",' \
        'scheme="{}"}}'
    assert net.agent.metric(connections.format('https')) >= 2
    assert net.agent.metric(connections.format('http')) == 0


def test_the_agent_is_no_proxy(net):
    code, _, status = net.curl(
        net.machine_ns, '-x', f'http://{AGENT}:8080',
        f'http://{IRONIC}:{HTTP_ROOT_PORT}/boot.ipxe')
    assert status == 403
    code, _, status = net.curl(
        net.machine_ns, '-p', '-x', f'http://{AGENT}:6385',
        f'http://{IRONIC}:{net.ironic.port}/v1/nodes')
    assert code != 0 and status in (0, 403)
    assert net.refused('http', 'not_origin_form') >= 1
    assert net.refused('api', 'not_origin_form') >= 1


def test_conductor_reaches_the_ramdisk_through_the_agent_only(net):
    # IPA's heartbeat, its callback_url forged to another host: the agent
    # learns the ramdisk by the connection's source and Ironic (no such
    # node here) answers.
    body = json.dumps({'callback_url': f'http://203.0.113.99:{IPA_PORT}',
                       'agent_token': 'x', 'agent_version': '13.0.0'})
    code, _, status = net.curl(
        net.machine_ns, '-H', 'Content-Type: application/json',
        '-H', 'X-OpenStack-Ironic-API-Version: 1.68', '--data', body,
        f'http://{AGENT}:6385/v1/heartbeat/'
        '1be26c0b-03f2-4d2e-ae87-c02d7f33c123')
    assert status == 404
    code, body, status = net.conductor(f'/{MACHINE}/v1/commands/')
    assert (status, json.loads(body)) == (200, {'commands': []})
    # Not reserved (the agent itself), the ramdisk's other ports, and the
    # ramdisk directly: none is reachable from the cluster side.
    code, _, status = net.conductor(f'/{AGENT}/v1/commands/')
    assert status == 403
    code, _, status = net.conductor(f'/{MACHINE}:22/v1/')
    assert status == 403
    code, _, _ = net.curl(net.ironic_ns, '--connect-timeout', '3',
                          f'http://{MACHINE}:{IPA_PORT}/v1/commands/',
                          timeout=15)
    assert code != 0
    # The callback listener is on the cluster side only.
    code, _, _ = net.curl(net.machine_ns, '--connect-timeout', '3',
                          f'https://{AGENT}:8081/{MACHINE}/v1/commands/',
                          timeout=15)
    assert code != 0


def test_callback_listener_is_tls_checked_against_the_agents_ca(net):
    """What Ironic's [agent]verify_ca does: trust the agent's CA and
    nothing else; a plain-HTTP call gets no answer from the ramdisk."""
    code, _body, status = net.conductor(f'/{MACHINE}/v1/commands/')
    assert (code, status) == (0, 200)
    other = tls.issue(net.lab.workdir / 'other-ca', [AGENT_CLUSTER])
    code, _, status = net.conductor(f'/{MACHINE}/v1/commands/',
                                    ca_file=other.ca_file)
    assert code == 60 and status == 0   # curl: peer certificate not trusted
    code, _, status = net.curl(
        net.ironic_ns, f'http://{AGENT_CLUSTER}:8081/{MACHINE}/v1/commands/')
    assert status != 200


def test_conductor_reaches_a_ramdisk_on_a_dynamic_lease(net):
    """A host with no reservation takes an address of dynamic_range with a
    real DHCP client (udhcpc) and runs a ramdisk there: the conductor
    reaches it through the agent while the lease runs; an address of the
    range nobody took stays shut."""
    ns, interface = net.lab.node('l', mac=LEASED_MAC)
    env = pxe_lab.udhcpc(net.lab, ns, interface, 'leased')
    assert env is not None, 'no lease from dynamic_range'
    leased = env['ip']
    net.lab.ns_run(ns, 'ip', 'addr', 'add', f'{leased}/24', 'dev', interface)
    ramdisk = net.lab.workdir / 'leased-ramdisk' / 'v1' / 'commands'
    ramdisk.mkdir(parents=True)
    (ramdisk / 'index.html').write_text('{"commands": ["leased"]}')
    net.lab.spawn(ns, [sys.executable, '-m', 'http.server', str(IPA_PORT),
                       '--bind', leased, '--directory',
                       str(ramdisk.parent.parent)], 'leased-ramdisk.log')
    body = json.dumps({'callback_url': f'http://{leased}:{IPA_PORT}',
                       'agent_token': 'x', 'agent_version': '13.0.0'})
    _code, _, status = net.curl(
        ns, '-H', 'Content-Type: application/json',
        '-H', 'X-OpenStack-Ironic-API-Version: 1.68', '--data', body,
        f'http://{AGENT}:6385/v1/heartbeat/'
        '1be26c0b-03f2-4d2e-ae87-c02d7f33c124')
    assert status == 404   # Ironic's answer: no such node here
    pxe_lab.wait_for(lambda: net.conductor(
        f'/{leased}/v1/commands/')[2] == 200, 15, what='ramdisk up')
    _code, body, status = net.conductor(f'/{leased}/v1/commands/')
    assert json.loads(body) == {'commands': ['leased']}
    free = DYNAMIC_RANGE[1] if leased != DYNAMIC_RANGE[1] else \
        DYNAMIC_RANGE[0]
    before = net.refused('callback', 'not_reserved')
    _code, _, status = net.conductor(f'/{free}/v1/commands/')
    assert status == 403
    net.agent.wait_metric('vmetal_bridge_refused_total{'
                          'listener="callback",reason="not_reserved"}',
                          before + 1)


def test_ironic_down_is_a_clean_502(net):
    net.lab.stop(net.httpd)
    code, _, status = net.curl(net.machine_ns,
                               f'http://{AGENT}:8080/boot.ipxe')
    assert (code, status) == (0, 502)
    # Prometheus prints the labels sorted.
    net.agent.wait_metric('vmetal_bridge_upstream_errors_total{'
                          'kind="unreachable",listener="http"}', 1)


def _status(pid):
    return open(f'/proc/{pid}/status').read()


def _rss_kib(pid):
    return int(re.search(r'VmRSS:\s+(\d+)', _status(pid)).group(1))


def _hwm_kib(pid):
    return int(re.search(r'VmHWM:\s+(\d+)', _status(pid)).group(1))
