"""The inspection range shared through the store: two DHCP agents on one
bridge, real DHCP clients with unknown MACs, a real kube-apiserver.

The agents run in network namespaces of their own with the agent's own
ServiceAccount token bound to the shipped Role only; they reach the API
server through :mod:`tests.functional.ns_relay`. A third namespace hears
every broadcast OFFER on the bridge, so the test sees which agent offered
which address to which MAC. Each test uses an address scope of its own.
"""

import concurrent.futures
import os
import random
import signal
import sys
import time

import pytest

from tests import kubectl
from tests.functional import kube
from tests.functional import ns_relay
from tests.functional import pxe_lab
from vmetal_ironic import reservation
from vmetal_ironic.dhcp_agent import lease_cache
from vmetal_ironic.lab.observe import wait_for
from vmetal_ironic.store import kubernetes as kube_store

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

NAMESPACE = 'vmetal-system'
AGENTS = ('198.51.100.1', '198.51.100.2')
GATEWAY = '198.51.100.254'
CLAIMS = ('vmetal-ironic.io', 'v1alpha1', 'addressclaims')

# Prints "<message type> <chaddr> <yiaddr> <server id>" for every DHCP
# reply broadcast on the bridge.
OBSERVER = r'''
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.bind(('', 68))
out = open(sys.argv[1], 'a')
while True:
    data, _ = sock.recvfrom(4096)
    if len(data) < 240 or data[0] != 2:
        continue
    options, i, kind, server = data[240:], 0, None, None
    while i + 1 < len(options) and options[i] != 255:
        if options[i] == 0:
            i += 1
            continue
        size = options[i + 1]
        value = options[i + 2:i + 2 + size]
        if options[i] == 53:
            kind = value[0]
        elif options[i] == 54:
            server = socket.inet_ntoa(value)
        i += 2 + size
    out.write(f'{kind} {data[28:34].hex(":")} '
              f'{socket.inet_ntoa(data[16:20])} {server}\n')
    out.flush()
'''
OFFER, ACK = 2, 5


def _agent_token(cluster, admin):
    objects = [obj for obj in kubectl.render(kube.MANIFESTS / 'agent')
               if obj['kind'] in ('ServiceAccount', 'Role', 'RoleBinding')]
    kubectl.apply(objects, cluster.kubeconfig)
    answer = admin.core.create_namespaced_service_account_token(
        'vmetal-dhcp-agent', NAMESPACE, {'spec': {'expirationSeconds': 3600}})
    return answer.status.token


@pytest.fixture(scope='module')
def site(kube_cluster, admin, tmp_path_factory):
    """A lab bridge, the relay to the API server, an OFFER observer and a
    factory of agent pairs."""
    lab = pxe_lab.Lab(tmp_path_factory.mktemp('vsi'))
    lab.relays = []
    try:
        lab.token = _agent_token(kube_cluster, admin)
        lab.cluster = kube_cluster
        lab.count = 0
        obs_ns, _ = lab.node('obs', '198.51.100.250/24')
        lab.seen = lab.workdir / 'replies.txt'
        lab.spawn(obs_ns, [sys.executable, '-c', OBSERVER, str(lab.seen)],
                  'observer.log')
        yield lab
    finally:
        for listener in lab.relays:
            listener.close()
        lab.close()


def start_pair(lab, scope, first, last, lease_time=600, skew=30,
               conflict_check=True):
    """Two agents sharing ``first``-``last`` of ``scope``."""
    agents = []
    for index, address in enumerate(AGENTS):
        lab.count += 1
        ns, interface = lab.node(f'a{lab.count}', f'{address}/24')
        lab.relays.append(ns_relay.relay_into(ns, lab.cluster.port))
        agent = lab.start_agent(
            ns, interface, name=f'{scope}-{index}',
            metrics_port=9600 + index, extra=f"""\
                inspection_range = {first}-{last}
                inspection_clock_skew = {skew}
                dynamic_lease_time = {lease_time}
                dynamic_gateway = {GATEWAY}
                inspection_conflict_check = {conflict_check}
                [vmetal_tftp]
                enabled = false
                [vmetal]
                store = kubernetes
                address_scope = {scope}
                [vmetal_kubernetes]
                api_url = {lab.cluster.url}
                ca_file = {lab.cluster.ca_file}
                token = {lab.token}
                namespace = {NAMESPACE}
                """)
        agent.interface = interface
        agents.append(agent)
    return agents


def stop_pair(lab, agents):
    for agent in agents:
        lab.stop(agent.proc)
        # The next pair uses the same addresses on the bridge.
        lab.ns_run(agent.ns, 'ip', 'addr', 'flush', 'dev', agent.interface)
    for agent in agents:
        assert agent.proc.returncode == 0, agent.log()[-3000:]


def leases(admin, scope):
    """``{mac: address}`` of the scope's inspection claims, asserting one
    claim per MAC."""
    items = admin.custom.list_namespaced_custom_object(
        *CLAIMS[:2], NAMESPACE, CLAIMS[2],
        label_selector=f'vmetal-ironic.io/scope={scope},'
                       'vmetal-ironic.io/purpose=inspection')['items']
    found = {}
    for claim in items:
        mac = claim['spec'].get('mac')
        assert mac not in found, f'{mac} holds two leases: {items}'
        found[mac] = claim['spec']['address']
    return found


def replies(lab):
    """``[(type, mac, address, server)]`` broadcast on the bridge."""
    rows = []
    for line in lab.seen.read_text().splitlines():
        kind, mac, address, server = line.split()
        rows.append((int(kind), mac, address, server))
    return rows


def _client(lab, tag):
    mac = '52:54:00:' + random.randbytes(3).hex(':')
    lab.count += 1
    ns, interface = lab.node(f'c{lab.count}', mac=mac)
    return mac, ns, interface, f'{tag}{lab.count}'


def _dhcp(lab, client, tries=10):
    _mac, ns, interface, name = client
    return pxe_lab.udhcpc(lab, ns, interface, name, tries=tries,
                          vendor_class='PXEClient:Arch:00000')


def _dhclient(lab, client):
    """ISC dhclient's lease, in udhcpc's terms (ip, serverid)."""
    _mac, ns, interface, name = client
    env = pxe_lab.dhclient(lab, ns, interface, name)
    if env is None:
        return None
    return {'ip': env['new_ip_address'],
            'serverid': env['new_dhcp_server_identifier'],
            'router': env.get('new_routers')}


def _failed_client(lab, agents, index, client):
    """What the agents and the bridge saw of one client that got no lease."""
    mac, _ns, _interface, name = client
    kind = 'udhcpc' if index % 2 else 'dhclient'
    seen = [r for r in replies(lab) if r[1] == mac]
    lines = [line for agent in agents for line in agent.log().splitlines()
             if mac in line]
    own = lab.workdir / f'{name}.log'
    return (f'{kind} {mac} got no lease; replies on the bridge: {seen}; '
            f'agents: {lines[-40:]}; client log: '
            f'{own.read_text()[-2000:] if own.exists() else None}')


def _total(agents, key):
    return sum(agent.metric(key) for agent in agents)


def _event(name):
    return f'vmetal_dhcp_inspection_leases_total{{event="{name}"}}'


def test_two_agents_give_simultaneous_unknown_hosts_one_address_each(
        site, admin):
    scope = f'si{os.urandom(3).hex()}'
    agents = start_pair(site, scope, '198.51.100.200', '198.51.100.209')
    try:
        clients = [_client(site, 'u') for _ in range(8)]
        # Half busybox udhcpc as a PXE ROM, half ISC dhclient, all at once.
        with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
            envs = list(pool.map(
                lambda ic: (_dhcp if ic[0] % 2 else _dhclient)(site, ic[1]),
                enumerate(clients)))
        got = {}
        for index, (client, env) in enumerate(
                zip(clients, envs, strict=True)):
            assert env is not None, _failed_client(site, agents, index,
                                                   client)
            got[client[0]] = env['ip']
            assert env['router'] == GATEWAY
            assert env['serverid'] in AGENTS
            if index % 2:
                assert env['boot_file'] == 'undionly.kpxe'
        # Every client has an address of the range, none shared.
        assert len(set(got.values())) == len(clients)
        assert {int(a.rsplit('.', 1)[1]) for a in got.values()} <= set(
            range(200, 210))
        # The store holds exactly those leases, one per MAC.
        assert leases(admin, scope) == got
        # Both agents offered every MAC, the same address.
        offers = [r for r in replies(site) if r[0] == OFFER
                  and r[1] in got]
        for mac, address in got.items():
            mine = {(server, offered) for _, m, offered, server in offers
                    if m == mac}
            assert {offered for _, offered in mine} == {address}, mine
            assert {server for server, _ in mine} == set(AGENTS), mine
        claimed = _total(agents, _event('claimed'))
        adopted = _total(agents, _event('adopted'))
        assert claimed == len(clients), (claimed, adopted)
        assert _total(agents, 'vmetal_dhcp_replies_total{type="NAK"}') == 0
    finally:
        stop_pair(site, agents)


def test_a_lease_expires_and_its_address_is_claimed_again(site, admin):
    """Range of two, 20 s leases: a host that keeps renewing keeps its
    address, one that left loses it, and a host refused while the range
    was full gets that one."""
    scope = f'si{os.urandom(3).hex()}'
    agents = start_pair(site, scope, '198.51.100.220', '198.51.100.221',
                        lease_time=20, skew=1)
    keeper_mac, ns, interface, name = _client(site, 'k')
    keeper, keeper_env = pxe_lab.udhcpc_daemon(site, ns, interface, name)
    try:
        wait_for(keeper_env.exists, 20, what='the renewing host bound')
        kept = pxe_lab.read_env(keeper_env)['ip']
        gone = _client(site, 'e')
        env = _dhcp(site, gone)
        assert env is not None, [a.log()[-3000:] for a in agents]
        assert {kept, env['ip']} == {'198.51.100.220', '198.51.100.221'}
        # The range is full: a third host is refused, not given a taken
        # address.
        late = _client(site, 'e')
        assert _dhcp(site, late, tries=2) is None
        assert _total(agents, _event('refused')) >= 1
        # The one-shot client (udhcpc -q exits once bound) does not renew:
        # its lease expires and an agent takes it back; the keeper's
        # renewals (unicast REQUESTs at half lease) move its expiry.
        # Past half the lease: the keeper renews now (udhcpc on SIGUSR1).
        time.sleep(max(0.0, 11 - (time.time() - keeper_env.stat().st_mtime)))
        keeper.send_signal(signal.SIGUSR1)
        renewed = keeper_env.with_name(keeper_env.name + '.renew')
        wait_for(renewed.exists, 15, what='the keeper renewed')
        assert pxe_lab.read_env(renewed)['ip'] == kept
        wait_for(lambda: _total(agents, _event('expired')) >= 1, 40,
                 interval=0.5, what='the lease of the host gone expired')
        wait_for(lambda: leases(admin, scope) == {keeper_mac: kept}, 10,
                 interval=0.2, what='the store to hold the keeper only')
        assert _total(agents, _event('renewed')) >= 1
        env = _dhcp(site, late)
        assert env is not None and env['ip'] == (
            {'198.51.100.220', '198.51.100.221'} - {kept}).pop()
        assert leases(admin, scope) == {keeper_mac: kept,
                                        late[0]: env['ip']}
        assert keeper.poll() is None
    finally:
        site.stop(keeper)
        stop_pair(site, agents)


def test_a_reservation_published_later_wins(site, admin, kube_cluster):
    scope = f'si{os.urandom(3).hex()}'
    agents = start_pair(site, scope, '198.51.100.230', '198.51.100.239')
    store = kube_store.KubernetesStore(kube.store_conf(
        kube_cluster.settings(namespace=NAMESPACE)))
    client = _client(site, 'r')
    try:
        env = _dhcp(site, client)
        assert env is not None and env['ip'].startswith('198.51.100.23')
        assert leases(admin, scope) == {client[0]: env['ip']}
        # The Machine claims the host: its reservation is published.
        store.publish_reservation(reservation.Reservation(
            mac=client[0], address='198.51.100.61', prefixlen=24,
            gateway=GATEWAY, lease_time=600))
        wait_for(lambda: leases(admin, scope) == {}, 15, interval=0.2,
                 what='the inspection lease taken back')
        # The claim goes first, the record second; the agent counts the
        # withdrawal once both deletes have been answered.
        wait_for(lambda: _total(agents, _event('withdrawn')) >= 1, 10,
                 interval=0.2, what='the withdrawal counted')
        env = _dhcp(site, client)
        assert env is not None and env['ip'] == '198.51.100.61'
    finally:
        store.withdraw_reservation(client[0])
        store.close()
        stop_pair(site, agents)


def test_a_declined_address_is_held_and_the_host_gets_another(site, admin):
    """udhcpc checks the offered address by ARP (-a): a squatter holds the
    first address the agents offer it, so it DECLINEs; the agents keep
    that address for nobody and offer it the next one. (The agents' own
    ARP check would find the squatter first: off here, so the client's
    DECLINE is what is tested; test_dhcp_agent_hostile tests the check.)"""
    scope = f'si{os.urandom(3).hex()}'
    first = int.from_bytes(bytes([198, 51, 100, 246]), 'big')
    agents = start_pair(site, scope, '198.51.100.246', '198.51.100.248',
                        conflict_check=False)
    client = _client(site, 'd')
    squatted = lease_cache.candidates(client[0], first, first + 2, set())[0]
    site.count += 1
    site.node(f'q{site.count}', f'{squatted}/24')
    try:
        _mac, ns, interface, name = client
        env = pxe_lab.udhcpc(site, ns, interface, name, tries=8,
                             timeout=60, extra=('-a1000',))
        assert env is not None, [a.log()[-3000:] for a in agents]
        assert env['ip'] != squatted
        # The decline and the next claim are separate store work, done in
        # either order.
        wait_for(lambda: _total(agents, _event('declined')) >= 1, 10,
                 interval=0.2, what='the decline counted')
        items = admin.custom.list_namespaced_custom_object(
            *CLAIMS[:2], NAMESPACE, CLAIMS[2],
            label_selector=f'vmetal-ironic.io/scope={scope}')['items']
        held = {c['spec']['address']: c['spec'].get('declined', False)
                for c in items}
        assert held == {squatted: True, env['ip']: False}
    finally:
        stop_pair(site, agents)


def _bad_claim(admin, scope, address, mac, owner=None, expires=True):
    """An inspection claim the API server's rules let through but the
    agents cannot read as a lease (an owner that is not its MAC's, or no
    expiry: written by hand or by an older release)."""
    name = f'{scope}.{address}'
    spec = {'scope': scope, 'address': address, 'purpose': 'inspection',
            'mac': mac, 'owner': owner or f'Inspection/{mac}'}
    if expires:
        spec['expires'] = int(time.time()) + 600
    admin.custom.create_namespaced_custom_object(
        *CLAIMS[:2], NAMESPACE, CLAIMS[2], {
            'apiVersion': 'vmetal-ironic.io/v1alpha1',
            'kind': 'AddressClaim',
            'metadata': {'name': name, 'labels': {
                'app.kubernetes.io/managed-by': 'vmetal-ironic',
                'vmetal-ironic.io/component': 'address',
                'vmetal-ironic.io/scope': scope,
                'vmetal-ironic.io/purpose': 'inspection'}},
            'spec': spec})


def test_bad_inspection_claims_are_skipped_and_counted(site, admin):
    scope = f'si{os.urandom(3).hex()}'
    # Before the agents start (their list) ...
    _bad_claim(admin, scope, '198.51.100.240', '52:54:00:00:00:98',
               expires=False)
    agents = start_pair(site, scope, '198.51.100.240', '198.51.100.242')
    try:
        # ... and while they follow (their watch).
        _bad_claim(admin, scope, '198.51.100.241', '52:54:00:00:00:99',
                   owner='Machine/default/someone')
        wait_for(lambda: all(a.metric(
            'vmetal_dhcp_inspection_leases_skipped') == 2 for a in agents),
            10, interval=0.2, what='two bad claims skipped by both agents')
        # Still serving: the one address left goes to a new host.
        client = _client(site, 'b')
        env = _dhcp(site, client)
        assert env is not None and env['ip'] == '198.51.100.242'
        assert all(agent.proc.poll() is None for agent in agents)
    finally:
        stop_pair(site, agents)
        admin.custom.delete_collection_namespaced_custom_object(
            *CLAIMS[:2], NAMESPACE, CLAIMS[2],
            label_selector=f'vmetal-ironic.io/scope={scope}')


# -- claimers interleaved on purpose ------------------------------------------

def claim_worker(settings, scope, macs, pool_owners, gate):
    """Worker body (spawned process): claim a lease for each MAC, and
    allocate from a pool covering the range for each pool owner, once the
    barrier opens. :returns: ``(leases [(mac, address, created, taken)],
    allocations [(owner, address)])``."""
    from vmetal_ironic.ipam import pool as ipam_pool
    conf = kube.store_conf(settings)
    conf.set_override('address_scope', scope, group='vmetal')
    store = kube_store.KubernetesStore(conf)
    pool = ipam_pool.parse_pool('198.51.100.1/24',
                                '198.51.100.200-198.51.100.215')
    first = int.from_bytes(bytes([198, 51, 100, 200]), 'big')
    try:
        gate[0].put(os.getpid())
        gate[1].wait(120)
        got, allocated = [], []
        for mac in macs:
            lease, taken, created = store.inspection_leases().claim(
                mac, lease_cache.candidates(mac, first, first + 15, set()),
                time.time() + 600)
            got.append((mac, lease.address if lease else None, created,
                        taken))
        for owner in pool_owners:
            allocated.append((owner, store.allocate(pool, owner).address))
        return got, allocated
    finally:
        store.close()


def test_claimers_racing_never_share_an_address(kube_cluster, namespace,
                                                admin):
    """Six processes released together claim leases for the same ten MACs
    (each in its own order) in a range of 16, while two of them also
    allocate two pool addresses each from a pool covering the range."""
    scope = f'si{os.urandom(3).hex()}'
    settings = kube_cluster.settings(namespace=namespace)
    # Five pairs of MACs whose walks begin at the same address: each pair
    # races for it.
    first = int.from_bytes(bytes([198, 51, 100, 200]), 'big')
    by_start = {}
    for i in range(512):
        mac = f'52:54:00:aa:{i >> 8:02x}:{i & 255:02x}'
        start = lease_cache.candidates(mac, first, first + 15, set())[0]
        by_start.setdefault(start, []).append(mac)
    macs = [mac for pair in list(by_start.values())[:5] for mac in pair[:2]]
    assert len(macs) == 10

    def args_for(index):
        order = list(macs)
        random.Random(index).shuffle(order)
        owners = ([f'Machine/{namespace}/m{index}-{n}' for n in range(2)]
                  if index < 2 else [])
        return settings, scope, order, owners

    results, _ = kube.run_together(6, claim_worker, args_for)
    answers = {}
    for got, _ in results:
        for mac, address, _created, _taken in got:
            assert address is not None
            answers.setdefault(mac, set()).add(address)
    # Every claimer was told the same address for a MAC ...
    assert all(len(found) == 1 for found in answers.values()), answers
    by_mac = {mac: found.pop() for mac, found in answers.items()}
    # ... no two MACs share one ...
    assert len(set(by_mac.values())) == len(macs)
    # ... exactly one claimer created each lease ...
    created = [mac for got, _ in results for mac, _a, made, _t in got
               if made]
    assert sorted(created) == sorted(macs)
    # ... and the pool went around the leases.
    pool_addresses = [address for _, allocated in results
                      for _, address in allocated]
    assert len(set(pool_addresses)) == 4
    assert not set(pool_addresses) & set(by_mac.values())
    # Only pool addresses are reported taken: another MAC's lease is in
    # the agents' feed, and a duplicate lease deleted under a claimer's
    # feet leaves its address free, not remembered as held for 30 s.
    reported = {address for got, _ in results for *_r, taken in got
                for address in taken}
    assert reported <= set(pool_addresses), reported
    claims = admin.claims(namespace)
    names = [claim['metadata']['name'] for claim in claims]
    assert len(names) == len(set(names))
    inspection = {c['spec']['mac']: c['spec']['address'] for c in claims
                  if c['spec']['purpose'] == 'inspection'}
    assert inspection == by_mac
    records = admin.custom.list_namespaced_custom_object(
        'vmetal-ironic.io', 'v1alpha1', namespace, 'addressowners')['items']
    bound = {r['spec']['owner']: r['spec']['address'] for r in records}
    for mac, address in by_mac.items():
        assert bound[f'Inspection/{mac}'] == address


def test_renewal_and_removal_compare_and_swap(make_store):
    """A removal at the version read loses to a renewal made since, and a
    renewal of a removed lease is refused."""
    store = make_store()
    book = store.inspection_leases()
    lease, _, created = book.claim('52:54:00:aa:01:01', ['198.51.100.250'],
                                   time.time() + 5)
    assert created and lease.address == '198.51.100.250'
    renewed = book.renew(lease, time.time() + 600)
    assert renewed is not None and renewed.version != lease.version
    assert book.remove(lease) is False          # the old version
    assert book.renew(lease, time.time() + 900) is None
    assert book.remove(renewed) is True
    assert book.renew(renewed, time.time() + 900) is None
    _revision, found, rejected = book.snapshot()
    assert found == [] and rejected == {}
    # The MAC's record went with it: a new claim binds afresh.
    again, _, created = book.claim('52:54:00:aa:01:01', ['198.51.100.251'],
                                   time.time() + 5)
    assert created and again.address == '198.51.100.251'
