"""kube-apiserver stopped in the middle of allocations: a clear temporary
error while it is down, success after it is back, and no address handed
out twice or lost."""

import threading
import time

from vmetal_ironic.lab.observe import wait_for
from vmetal_ironic import exception
from vmetal_ironic import host_network
from vmetal_ironic import properties as props

HOSTS = 60


def test_apiserver_outage_mid_run(kube_cluster, admin, namespace, make_store):
    owners = []
    for index in range(HOSTS):
        name = f'h{index:02d}'
        admin.create_host(namespace, name, f'52:54:00:00:01:{index:02x}',
                          annotations={props.NETWORK_CIDR: '192.0.2.1/24'})
        owners.append((f'BareMetalHost/{namespace}/{name}',
                       f'52:54:00:00:01:{index:02x}'))
    # Few, short retries so the outage surfaces quickly and boundedly.
    store = make_store(max_retries=2, retry_backoff=0.1, connect_timeout=1.0,
                       request_timeout=5.0)
    done, failures = {}, []
    finished = threading.Event()

    def allocate_all():
        deadline = time.monotonic() + 240
        pending = list(owners)
        while pending and time.monotonic() < deadline:
            owner, mac = pending[0]
            try:
                result = host_network.ensure(store, owner, mac)
            except exception.TemporaryError as exc:
                failures.append(exc)
                time.sleep(0.2)
                continue
            done[owner] = result.allocation.address
            pending.pop(0)
        finished.set()

    worker = threading.Thread(target=allocate_all, daemon=True)
    worker.start()
    try:
        wait_for(lambda: len(done) >= 15, timeout=60, what='first allocations')
        kube_cluster.stop_apiserver()
        wait_for(lambda: failures, timeout=60, what='a temporary error')
        down_since = time.monotonic()
        time.sleep(2)
    finally:
        kube_cluster.start_apiserver()
    assert finished.wait(240), 'allocations did not finish after restart'
    worker.join(5)

    error = failures[0]
    assert isinstance(error, exception.StoreUnavailable)
    assert str(error).startswith(f'Kubernetes API {kube_cluster.url} '
                                 'unavailable: ')
    assert '\n' not in str(error)
    assert error.retry_after > 0
    assert time.monotonic() - down_since < 120
    assert len(done) == HOSTS
    addresses = list(done.values())
    assert len(set(addresses)) == HOSTS
    data = admin.pool_data(namespace, '192.0.2.0/24')
    assert data == {address: owner for owner, address in done.items()}
    for owner, address in done.items():
        host = admin.get_host(namespace, owner.rsplit('/', 1)[1])
        assert host['metadata']['annotations'][props.IP_ADDRESS] == (
            f'{address}/24')
