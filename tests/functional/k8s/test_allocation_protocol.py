"""The allocation protocol on a real kube-apiserver: the claim is
created first and the owner's record bound to its UID second (two creates
and one read-back for a new owner), and whatever happens between the two
(another writer for the same owner, a release, the writer killed) an
address has one holder and an owner one address.

Writers are held between the claim's create and the record's bind by a
gate around their record create: the real request is sent when the gate
opens (instrumentation of the real path, not a stand-in for the API
server).
"""

import multiprocessing
import os
import signal
import threading
import time

from tests.functional import kube
from tests.functional.k8s.test_kubernetes_store_v2 import allocate_from
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.ipam_controller import reconciler

POOL = ipam_pool.parse_pool('192.0.2.1/24')
OWNER = 'Machine/ns/m0'


class Gate:
    """Holds a store's owner-record creates until :attr:`go` is set;
    :attr:`arrived` is set when one waits (its claim is created)."""

    def __init__(self, store):
        self.arrived = threading.Event()
        self.go = threading.Event()
        real = store.addresses.owners.create

        def create(owner, spec):
            self.arrived.set()
            assert self.go.wait(60)
            return real(owner, spec)

        store.addresses.owners.create = create


def _in_thread(func):
    result = {}

    def run():
        try:
            result['value'] = func()
        except Exception as exc:  # handed to the test
            result['error'] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _held_between_creates(store):
    """Start ``store`` allocating for OWNER in a thread and wait until it
    is held between its claim and its record.

    :returns: ``(gate, thread, result)``; ``gate.go.set()`` lets it on.
    """
    gate = Gate(store)
    thread, result = _in_thread(lambda: store.allocate(POOL, OWNER).address)
    assert gate.arrived.wait(60)
    return gate, thread, result


def _held(admin, namespace, owner):
    return sorted(c['spec']['address'] for c in admin.claims(namespace)
                  if c['spec']['owner'] == owner)


def test_a_new_owner_costs_three_requests_and_a_repeat_two(make_store):
    store = make_store()
    # The first allocation of a process reads the held addresses (one
    # list, kept for address_cache_seconds) and claims the gateway.
    store.allocate(POOL, 'Machine/ns/warm')
    before = store.api.requests
    first = store.allocate(POOL, OWNER)
    assert store.api.requests - before == 3
    before = store.api.requests
    assert store.allocate(POOL, OWNER) == first
    assert store.api.requests - before == 2


def test_a_second_writer_for_the_owner_wins_and_the_first_gives_back(
        admin, namespace, make_store):
    first, second = make_store(), make_store()
    gate, thread, result = _held_between_creates(first)
    [candidate] = _held(admin, namespace, OWNER)
    assert OWNER not in admin.owner_records(namespace)
    got = second.allocate(POOL, OWNER).address
    assert got != candidate
    gate.go.set()
    thread.join(60)
    assert result == {'value': got}
    assert _held(admin, namespace, OWNER) == [got]
    record = admin.owner_records(namespace)[OWNER]
    assert record['spec']['claim'] == f'default.{got}'


def test_a_release_while_the_record_is_on_its_way_lets_the_allocation_win(
        admin, namespace, make_store):
    first, second = make_store(), make_store()
    gate, thread, result = _held_between_creates(first)
    assert second.release(OWNER) is None
    gate.go.set()
    thread.join(60)
    assert second.get_allocation(OWNER).address == result['value']
    assert _held(admin, namespace, OWNER) == [result['value']]


def _allocate_and_stop_between(settings, owner, cidr, ready):
    """Child process: create the claim, then stop before the record's
    bind (the parent kills it there)."""
    from vmetal_ironic.ipam import pool as pool_mod
    from vmetal_ironic.store import kubernetes as store_mod

    store = store_mod.KubernetesStore(kube.store_conf(settings))

    def create(owner, spec):
        ready.put(os.getpid())
        time.sleep(600)

    store.addresses.owners.create = create
    store.allocate(pool_mod.parse_pool(cidr), owner)


def _kill_between_create_and_bind(kube_cluster, namespace):
    context = multiprocessing.get_context('spawn')
    ready = context.Queue()
    child = context.Process(target=_allocate_and_stop_between, args=(
        kube_cluster.settings(namespace=namespace), OWNER,
        '192.0.2.1/24', ready), daemon=True)
    child.start()
    try:
        pid = ready.get(timeout=120)
        os.kill(pid, signal.SIGKILL)
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join(5)
    assert child.exitcode == -signal.SIGKILL


def test_a_writer_killed_between_create_and_bind_is_bound_by_collect(
        kube_cluster, admin, namespace, make_store):
    _kill_between_create_and_bind(kube_cluster, namespace)
    [left] = _held(admin, namespace, OWNER)
    assert OWNER not in admin.owner_records(namespace)
    store = make_store()
    assert reconciler.Reconciler(store).collect() == []
    assert admin.owner_records(namespace)[OWNER]['spec']['claim'] == (
        f'default.{left}')
    assert store.allocate(POOL, OWNER).address == left
    assert _held(admin, namespace, OWNER) == [left]


def test_a_killed_writers_claim_is_freed_once_its_owner_holds_another(
        kube_cluster, admin, namespace, make_store):
    _kill_between_create_and_bind(kube_cluster, namespace)
    [left] = _held(admin, namespace, OWNER)
    store = make_store()
    got = store.allocate(POOL, OWNER).address
    assert got != left
    freed = reconciler.Reconciler(store).collect()
    assert [(a.owner, a.address) for a in freed] == [(OWNER, left)]
    assert _held(admin, namespace, OWNER) == [got]


def test_one_owner_from_six_writers_in_one_pool_holds_one_address(
        kube_cluster, admin, namespace):
    settings = kube_cluster.settings(namespace=namespace)
    owners = [f'Machine/default/worker-{n}' for n in range(10)]
    results, _ = kube.run_together(
        6, allocate_from, lambda i: (settings, '192.0.2.1/24', owners))
    for owner in owners:
        held = _held(admin, namespace, owner)
        assert len(held) == 1, (owner, held)
        answers = {address for chunk in results
                   for who, address, _ in chunk if who == owner}
        assert answers == set(held), (owner, answers, held)
    records = admin.owner_records(namespace)
    assert {owner: records[owner]['spec']['address'] for owner in owners} == {
        owner: _held(admin, namespace, owner)[0] for owner in owners}


def test_a_claim_create_whose_answer_was_lost_is_recognised(
        admin, namespace, make_store):
    # The API server creates the claim, the answer never arrives, the
    # client sends the create again and gets 409: the claim is the
    # owner's own, not a taken address. A lost answer cannot be caused on
    # demand, so the first answer is dropped here (a stand-in for the
    # network, the create itself is real).
    import urllib3

    store = make_store(retry_backoff=0.01)
    store.allocate(POOL, 'Machine/ns/warm')
    custom = store.api.custom
    real = custom.create_namespaced_custom_object
    dropped = []

    def create(group, version, ns, plural, body, **kwargs):
        answer = real(group, version, ns, plural, body, **kwargs)
        if plural == 'addressclaims' and not dropped:
            dropped.append(body['metadata']['name'])
            raise urllib3.exceptions.ReadTimeoutError(None, '', 'read timed out')
        return answer

    custom.create_namespaced_custom_object = create
    got = store.allocate(POOL, OWNER).address
    assert dropped == [f'default.{got}']
    assert _held(admin, namespace, OWNER) == [got]
