"""The allocation protocol on a real kube-apiserver: the owner's record is
created before its claim (two requests for a new owner), and whatever
happens between the two creates (another writer for the same owner,
another owner taking the candidate, a release, the writer killed) an
address has one holder and an owner one address.

Writers are held between the two creates by a gate around their claim
create: the real request is sent when the gate opens (instrumentation of
the real path, not a stand-in for the API server).
"""

import multiprocessing
import os
import signal
import threading
import time

from tests.functional import kube
from tests.functional.k8s.test_kubernetes_store_v2 import allocate_from
from vmetal_ironic.ipam import pool as ipam_pool
from vmetal_ironic.store.kubernetes import allocation

POOL = ipam_pool.parse_pool('192.0.2.1/24')
OWNER = 'Machine/ns/m0'


class Gate:
    """Holds a store's allocation claim creates until :attr:`go` is set;
    :attr:`arrived` is set when one waits (its owner record is bound)."""

    def __init__(self, store):
        self.arrived = threading.Event()
        self.go = threading.Event()
        real = store.addresses.claims.create

        def create(body):
            if body['spec'].get('purpose') == 'allocation':
                self.arrived.set()
                assert self.go.wait(60)
            return real(body)

        store.addresses.claims.create = create


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
    is held between its record and its claim.

    :returns: ``(gate, thread, result)``; ``gate.go.set()`` lets it on.
    """
    gate = Gate(store)
    thread, result = _in_thread(lambda: store.allocate(POOL, OWNER).address)
    assert gate.arrived.wait(60)
    return gate, thread, result


def _held(admin, namespace, owner):
    return sorted(c['spec']['address'] for c in admin.claims(namespace)
                  if c['spec']['owner'] == owner)


def test_a_new_owner_costs_two_requests_and_a_repeat_two(make_store):
    store = make_store()
    # The first allocation of a process reads the held addresses (one
    # list, kept for address_cache_seconds) and claims the gateway.
    store.allocate(POOL, 'Machine/ns/warm')
    before = store.api.requests
    first = store.allocate(POOL, OWNER)
    assert store.api.requests - before == 2
    before = store.api.requests
    assert store.allocate(POOL, OWNER) == first
    assert store.api.requests - before == 2


def test_a_second_writer_completes_the_record_the_first_is_binding(
        admin, namespace, make_store):
    first, second = make_store(), make_store()
    gate, thread, result = _held_between_creates(first)
    record = admin.owner_records(namespace)[OWNER]
    assert _held(admin, namespace, OWNER) == []
    # The second writer finds the record pending and creates its claim.
    got = second.allocate(POOL, OWNER).address
    assert got == record['spec']['address']
    gate.go.set()
    thread.join(60)
    assert result == {'value': got}
    assert _held(admin, namespace, OWNER) == [got]


def test_a_candidate_taken_meanwhile_moves_the_record_and_waiters_follow(
        admin, namespace, make_store):
    first, other, waiter = make_store(), make_store(), make_store()
    gate, thread, result = _held_between_creates(first)
    candidate = admin.owner_records(namespace)[OWNER]['spec']['address']
    # Another owner takes the candidate: the record names a claim that is
    # not its owner's (lost).
    assert other.allocate(POOL, 'Machine/ns/z').address == candidate
    waiting, waited = _in_thread(lambda: waiter.allocate(POOL, OWNER).address)
    time.sleep(0.5)     # lets the waiter find the lost record first
    gate.go.set()
    thread.join(60)
    waiting.join(60)
    assert 'error' not in result and 'error' not in waited
    assert result['value'] == waited['value'] != candidate
    assert _held(admin, namespace, OWNER) == [result['value']]
    assert _held(admin, namespace, 'Machine/ns/z') == [candidate]
    assert admin.owner_records(namespace)[OWNER]['spec']['address'] == (
        result['value'])


def test_a_release_while_the_claim_is_on_its_way_lets_the_allocation_win(
        admin, namespace, make_store):
    first, second = make_store(), make_store()
    gate, thread, result = _held_between_creates(first)
    assert second.release(OWNER) is None
    assert OWNER in admin.owner_records(namespace)
    gate.go.set()
    thread.join(60)
    assert second.get_allocation(OWNER).address == result['value']
    assert _held(admin, namespace, OWNER) == [result['value']]


def _allocate_and_stop_between(settings, owner, cidr, ready):
    """Child process: bind the owner's record, then stop before the
    claim's create (the parent kills it there)."""
    from vmetal_ironic.ipam import pool as pool_mod
    from vmetal_ironic.store import kubernetes as store_mod

    store = store_mod.KubernetesStore(kube.store_conf(settings))
    real = store.addresses.claims.create

    def create(body):
        if body['spec'].get('purpose') == 'allocation':
            ready.put(os.getpid())
            time.sleep(600)
        return real(body)

    store.addresses.claims.create = create
    store.allocate(pool_mod.parse_pool(cidr), owner)


def _kill_between_the_creates(kube_cluster, namespace):
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


def test_a_writer_killed_between_the_creates_is_completed_by_the_next(
        kube_cluster, admin, namespace, make_store):
    _kill_between_the_creates(kube_cluster, namespace)
    named = admin.owner_records(namespace)[OWNER]['spec']['address']
    assert _held(admin, namespace, OWNER) == []
    store = make_store()
    assert store.allocate(POOL, OWNER).address == named
    assert _held(admin, namespace, OWNER) == [named]


def test_a_killed_writers_candidate_taken_is_moved_after_the_grace(
        kube_cluster, admin, namespace, make_store, monkeypatch):
    _kill_between_the_creates(kube_cluster, namespace)
    named = admin.owner_records(namespace)[OWNER]['spec']['address']
    store = make_store()
    # Nothing holds the dead writer's candidate: another owner takes it.
    assert store.allocate(POOL, 'Machine/ns/z').address == named
    # Waiting the real 60 s would only slow the test: the grace is the
    # same rule with a smaller number.
    monkeypatch.setattr(allocation, 'SETTLE_GRACE', 2)
    monkeypatch.setattr(allocation, 'CHECK_AFTER', 0.5)
    got = make_store().allocate(POOL, OWNER).address
    assert got != named
    assert _held(admin, namespace, OWNER) == [got]
    assert _held(admin, namespace, 'Machine/ns/z') == [named]


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
