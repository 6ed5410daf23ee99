"""The agent's local copies of Ironic's HTTP root, in namespaces, with
curl and a real HTTP server upstream.

* provisioning L2 (the lab bridge): the agent 198.51.100.1/24 and a
  machine 198.51.100.20/24;
* cluster network (a veth pair of its own): the agent 203.0.113.2/24 and
  Ironic's namespace 203.0.113.1/24, where Python's ``http.server`` serves
  the HTTP root as the lab's Ironic does (``Last-Modified`` and
  ``If-Modified-Since``; its access log tells 200 from 304).

The agent keeps copies within 20 MiB (``cache_max_bytes``): two of the
8 MiB files at most, sent by two threads (``cache_send_threads``): with
more downloads at once than threads, the others go from the event loop.
"""

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.functional import pxe_lab
from vmetal_ironic.lab import observe

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

AGENT = '198.51.100.1'
MACHINE = '198.51.100.20'
AGENT_CLUSTER = '203.0.113.2'
IRONIC = '203.0.113.1'
PORT = 8088
MIB = 2**20
BUDGET = 20 * MIB

# A download given up part way, run on the machine: the head and the first
# ``keep`` bytes of the body are read, then the socket is closed with the
# rest unread (the kernel resets the connection). The receive buffer is
# fixed small before connecting, which turns its autotuning off: the
# machine's kernel can then take in only this much that nobody reads, so
# the agent cannot have sent the whole file when the client goes (a curl
# timed out after a second could: tcp_rmem lets its buffer grow to 32 MiB).
CUT_CLIENT = r"""
import socket, sys
host, name, keep = sys.argv[1], sys.argv[2], int(sys.argv[3])
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
sock.settimeout(30)
sock.connect((host, 8080))
sock.sendall(b'GET /' + name.encode() + b' HTTP/1.1\r\nHost: ' +
             host.encode() + b'\r\n\r\n')
data = b''
while b'\r\n\r\n' not in data:
    data += sock.recv(65536)
head, _, body = data.partition(b'\r\n\r\n')
got = len(body)
while got < keep:
    piece = sock.recv(65536)
    if not piece:
        break
    got += len(piece)
sock.close()
print(head.split(b'\r\n')[0].decode(), got)
"""


class Net:
    def __init__(self, lab, start, machine_ns, root, access_log, copies,
                 ironic):
        self.lab = lab
        #: Ironic's HTTP server (its process).
        self.ironic = ironic
        self._start = start
        self.agent = start()
        self.machine_ns = machine_ns
        self.root = root
        self.access_log = access_log
        self.copies = copies

    def put(self, name, size, seed=b''):
        """A file of Ironic's HTTP root, modified a minute ago (its
        Last-Modified is a strong validator)."""
        data = hashlib.sha256(name.encode() + seed).digest() * (size // 32)
        path = self.root / name
        path.write_bytes(data)
        past = time.time() - 60
        os.utime(path, (past, past))
        return data

    def put_digest(self, name, size, seed=b''):
        return hashlib.sha256(self.put(name, size, seed)).hexdigest()

    def curl(self, name, *args, timeout=60):
        """curl on the machine through the agent: ``(exit code, body,
        head)``."""
        head = self.lab.workdir / 'head.txt'
        head.unlink(missing_ok=True)
        result = subprocess.run(
            ['ip', 'netns', 'exec', self.machine_ns, 'curl', '-sS', '-D',
             str(head), *args, f'http://{AGENT}:8080/{name}'],
            capture_output=True, timeout=timeout, check=False)
        return result.returncode, result.stdout, head.read_text(
            errors='replace').lower() if head.exists() else ''

    def cut(self, name, keep):
        """Download ``name`` through the agent and give up after ``keep``
        bytes of its body: ``(status line, bytes read)``."""
        result = self.lab.ns_run(self.machine_ns, sys.executable, '-c',
                                 CUT_CLIENT, AGENT, name, str(keep),
                                 timeout=60)
        status, got = result.stdout.strip().rsplit(' ', 1)
        return status, int(got)

    def get(self, name):
        """The file's digest, downloaded whole through the agent."""
        code, body, head = self.curl(name)
        assert code == 0, head
        return hashlib.sha256(body).hexdigest()

    def statuses(self, name):
        """Ironic's answers to the agent's GETs of ``name``, in order."""
        text = self.access_log.read_text(errors='replace')
        return [status for _client, path, status in
                observe.http_requests(text) if path == f'/{name}']

    def count(self, name, result=None):
        labels = f'{{result="{result}"}}' if result else ''
        return self.agent.metric(f'vmetal_bridge_cache_{name}_total{labels}')

    def held(self):
        return sorted(p.name.split('-')[0] for p in self.copies.iterdir())

    def restart(self, while_down=None):
        """Stop the agent (SIGTERM, as the kubelet stops a container),
        call ``while_down()``, start it again on the same directory."""
        self.lab.stop(self.agent.proc)
        if while_down is not None:
            while_down()
        self.agent = self._start()


@pytest.fixture(scope='module')
def net(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('bridge-cache')
    lab = pxe_lab.Lab(workdir / 'net')
    try:
        agent_ns, agent_if = lab.node('a', f'{AGENT}/24')
        machine_ns, _ = lab.node('m', f'{MACHINE}/24')
        ironic_ns = lab.namespace('k')
        lab.wire(agent_ns, ironic_ns, f'{AGENT_CLUSTER}/24', f'{IRONIC}/24')
        root = workdir / 'httproot'
        ironic, access_log = pxe_lab.http_server(lab, ironic_ns, IRONIC,
                                                 PORT, root)
        copies = workdir / 'copies'
        extra = f"""
            [vmetal_tftp]
            enabled = false
            [vmetal_bridge]
            enabled = true
            ironic_http_url = http://{IRONIC}:{PORT}
            ironic_api_url = http://{IRONIC}:6385
            callback_address = {AGENT_CLUSTER}
            cache_dir = {copies}
            cache_max_bytes = {BUDGET}
            cache_send_threads = 2
            """
        yield Net(lab, lambda: lab.start_agent(agent_ns, agent_if,
                                               extra=extra),
                  machine_ns, root, access_log, copies, ironic)
    finally:
        lab.close()


@pytest.fixture(autouse=True)
def _no_fill_left(net):
    """Each test ends with no fill under way: a test's last download may
    still be filling a copy when its client has the last byte, and the
    next test's count of published fills (or its first download of a
    file, a miss while the copy is not yet there) would take it for its
    own. A fill is a directory of its own from its first byte until it
    is renamed into a copy or removed."""
    yield
    observe.wait_for(lambda: 'fill' not in net.held(), 10,
                     what='the last fill published or removed')


def _published(net, count):
    net.agent.wait_metric('vmetal_bridge_cache_fills_total'
                          '{result="published"}', count)


def test_warm_download_is_served_from_the_copy(net):
    data = net.put_digest('warm.img', 8 * MIB)
    before = net.count('fills', 'published')
    assert net.get('warm.img') == data
    _published(net, before + 1)
    hits = net.count('requests', 'hit')
    assert net.get('warm.img') == data
    # Asked again, answered 304 by Ironic: the body came from the copy.
    assert net.statuses('warm.img') == [200, 304]
    assert net.count('requests', 'hit') == hits + 1


def test_file_changed_upstream_is_served_new_at_once(net):
    old = net.put_digest('changed.img', 8 * MIB)
    before = net.count('fills', 'published')
    assert net.get('changed.img') == old
    _published(net, before + 1)
    # Same length, other bytes, a newer mtime: what a new ramdisk is.
    new = net.put_digest('changed.img', 8 * MIB, seed=b'v2')
    now = time.time() - 5
    os.utime(net.root / 'changed.img', (now, now))
    changed = net.count('requests', 'changed')
    assert net.get('changed.img') == new
    assert net.count('requests', 'changed') == changed + 1
    # The fill, the question answered 200 (its body not read), then the
    # download's own forward.
    assert net.statuses('changed.img') == [200, 200, 200]


def test_range_and_head_are_answered_from_the_copy(net):
    data = net.put('ranged.img', 8 * MIB)
    before = net.count('fills', 'published')
    net.get('ranged.img')
    _published(net, before + 1)
    code, body, head = net.curl('ranged.img', '-r', '1000-1999')
    assert code == 0 and body == data[1000:2000]
    assert head.startswith('http/1.1 206')
    assert f'content-range: bytes 1000-1999/{len(data)}' in head
    code, _body, head = net.curl('ranged.img', '-I')
    assert code == 0
    assert head.startswith('http/1.1 200')
    assert f'content-length: {len(data)}' in head
    code, _body, head = net.curl('ranged.img', '-r', f'{len(data)}-')
    assert head.startswith('http/1.1 416')
    assert f'content-range: bytes */{len(data)}' in head
    # Each of them revalidated (the HEAD too: the bridge's question is a
    # conditional GET whatever the client's method), none took a body
    # from Ironic.
    assert net.statuses('ranged.img') == [200, 304, 304, 304]


def test_cut_cold_fill_leaves_nothing(net):
    net.put('cut.img', 16 * MIB)
    discarded = net.count('fills', 'discarded')
    published = net.count('fills', 'published')
    # The client gives up 1 MiB into the 16 MiB download: the agent was
    # filling a copy as it sent.
    status, got = net.cut('cut.img', MIB)
    assert status.split()[1] == '200' and MIB <= got < 16 * MIB
    net.agent.wait_metric('vmetal_bridge_cache_fills_total'
                          '{result="discarded"}', discarded + 1)
    assert net.count('fills', 'published') == published
    held = net.held()
    assert 'fill' not in held
    # What is held is whole copies (all 8 MiB here), nothing of cut.img.
    assert net.agent.metric('vmetal_bridge_cache_bytes') == \
        8 * MIB * held.count('copy')
    # Nothing kept: the next download is a miss and fills anew.
    misses = net.count('requests', 'miss')
    net.get('cut.img')
    assert net.count('requests', 'miss') == misses + 1


def test_budget_evicts_the_least_recently_used_copy(net):
    files = {name: net.put_digest(name, 8 * MIB)
             for name in ('x.img', 'y.img', 'z.img')}
    evictions = net.count('evictions')
    for name in files:
        published = net.count('fills', 'published')
        assert net.get(name) == files[name]
        _published(net, published + 1)
    # Two fit in 20 MiB: x went to make room for z.
    assert net.count('evictions') >= evictions + 1
    assert net.agent.metric('vmetal_bridge_cache_bytes') <= BUDGET
    assert net.held().count('copy') == 2
    hits = net.count('requests', 'hit')
    assert net.get('y.img') == files['y.img']
    assert net.count('requests', 'hit') == hits + 1
    misses = net.count('requests', 'miss')
    assert net.get('x.img') == files['x.img']
    assert net.count('requests', 'miss') == misses + 1


def _started(net, name, count):
    """``count`` curls started together on the machine."""
    argv = ['ip', 'netns', 'exec', net.machine_ns, 'curl', '-sS', '-f',
            f'http://{AGENT}:8080/{name}']
    return [subprocess.Popen(argv, stdout=subprocess.PIPE)
            for _ in range(count)]


def _digests(procs):
    """What the curls of :func:`_started` got (``None``: failed)."""
    digests = []
    for proc in procs:
        body = proc.communicate(timeout=60)[0]
        digests.append(hashlib.sha256(body).hexdigest()
                       if proc.returncode == 0 else None)
    return digests


def _at_once(net, name, count):
    """``count`` curls started together on the machine: their digests."""
    return _digests(_started(net, name, count))


def test_many_at_once_get_the_copy_then_the_change(net):
    """Ten servers at once on a current copy (two sent by the agent's
    two sending threads, the others by its event loop), then the file
    changes upstream and ten more at once: each gets what Ironic holds
    when it asks, none the old copy after the change."""
    old = net.put_digest('many.img', 8 * MIB)
    before = net.count('fills', 'published')
    assert net.get('many.img') == old
    _published(net, before + 1)
    hits = net.count('requests', 'hit')
    assert _at_once(net, 'many.img', 10) == [old] * 10
    assert net.count('requests', 'hit') == hits + 10
    new = net.put_digest('many.img', 8 * MIB, seed=b'v2')
    now = time.time() - 5
    os.utime(net.root / 'many.img', (now, now))
    changed = net.count('requests', 'changed')
    assert _at_once(net, 'many.img', 10) == [new] * 10
    assert net.count('requests', 'changed') > changed


@contextlib.contextmanager
def _ironic_frozen(net):
    """Ironic's HTTP server stopped (SIGSTOP) until the block ends: the
    kernel still accepts the agent's connections and takes its requests,
    nothing answers them, so downloads started meanwhile surely all
    arrive while the agent's question is under way."""
    net.ironic.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        net.ironic.send_signal(signal.SIGCONT)


SHARED = 'vmetal_bridge_cache_revalidations_shared_total'


def _joined(net, count):
    """Wait until ``count`` downloads joined a question already under
    way. With Ironic frozen the first question is written and cannot end,
    so each download that joins it waits for the next one, which is not
    written before Ironic answers: waiting for the connections alone
    would not do, since a download's request may come later than its
    connection, after the next question was written."""
    net.agent.wait_metric(SHARED, count)


def test_downloads_at_once_share_the_question_to_ironic(net):
    """Ten at once on a current copy: the first download's question is
    written at once, the nine that arrive after it share the next one. Two
    conditional requests at Ironic's server, not ten."""
    old = net.put_digest('shared.img', 8 * MIB)
    before = net.count('fills', 'published')
    assert net.get('shared.img') == old
    _published(net, before + 1)
    shared = net.agent.metric(SHARED)
    with _ironic_frozen(net):
        curls = _started(net, 'shared.img', 10)
        _joined(net, shared + 9)
    assert _digests(curls) == [old] * 10
    # The fill, then the question the first download wrote and the one
    # the nine share (or, where the nine came before the first was
    # written, that one only).
    assert net.statuses('shared.img') in ([200, 304, 304], [200, 304])
    assert net.agent.metric(SHARED) == shared + 9


def test_a_change_while_downloads_wait_is_never_served_from_the_copy(net):
    """Ten wait for Ironic's answer, the file changes, ten more come: the
    answer Ironic gives after the change is a 200 and the copy is dropped;
    all twenty get the new file, each by a forward of its own."""
    old = net.put_digest('moving.img', 8 * MIB)
    before = net.count('fills', 'published')
    assert net.get('moving.img') == old
    _published(net, before + 1)
    shared = net.agent.metric(SHARED)
    with _ironic_frozen(net):
        first = _started(net, 'moving.img', 10)
        _joined(net, shared + 9)
        new = net.put_digest('moving.img', 8 * MIB, seed=b'v2')
        now = time.time() - 5
        os.utime(net.root / 'moving.img', (now, now))
        after = _started(net, 'moving.img', 10)
        _joined(net, shared + 19)
    assert _digests(first) + _digests(after) == [new] * 20
    # The fill, the one question answered 200 (the next one is not asked:
    # nothing left to revalidate), then twenty forwards.
    assert net.statuses('moving.img') == [200] * 22


def test_copies_survive_a_restart_and_are_still_revalidated(net):
    data = net.put_digest('kept.img', 8 * MIB)
    before = net.count('fills', 'published')
    assert net.get('kept.img') == data
    _published(net, before + 1)
    held = net.held().count('copy')
    # A fill left by an agent that died in the middle of one, and a copy
    # whose record is gone: neither can be vouched for.
    (net.copies / 'fill-00000000deadbeef').mkdir()
    (net.copies / 'fill-00000000deadbeef' / 'body').write_bytes(b'x' * 10)
    orphan = net.copies / 'copy-00000000cafef00d'
    orphan.mkdir()
    (orphan / 'body').write_bytes(b'y' * 10)
    net.restart()
    assert net.count('adoptions', 'adopted') == held
    assert net.count('adoptions', 'discarded') == 2
    assert 'fill' not in net.held() and not orphan.exists()
    assert net.agent.metric('vmetal_bridge_cache_bytes') == 8 * MIB * held
    # The first download after the restart: asked again, 304, served
    # from the adopted copy; nothing refilled.
    assert net.get('kept.img') == data
    assert net.count('requests', 'hit') == 1
    assert net.count('fills', 'published') == 0
    assert net.statuses('kept.img') == [200, 304]


def test_a_file_changed_while_the_agent_was_down_is_fetched_again(net):
    old = net.put_digest('stale.img', 8 * MIB)
    before = net.count('fills', 'published')
    assert net.get('stale.img') == old
    _published(net, before + 1)
    new = {}

    def change():
        # Same length, other bytes, a newer mtime: a rebuilt ramdisk.
        new['digest'] = net.put_digest('stale.img', 8 * MIB, seed=b'v2')
        now = time.time() - 5
        os.utime(net.root / 'stale.img', (now, now))
    net.restart(while_down=change)
    assert net.count('adoptions', 'adopted') >= 1
    assert net.get('stale.img') == new['digest'] != old
    assert net.count('requests', 'changed') == 1
    assert net.count('requests', 'hit') == 0
    assert net.statuses('stale.img') == [200, 200, 200]
    # The new version fills a copy of its own, served from then on.
    _published(net, 1)
    assert net.get('stale.img') == new['digest']
    assert net.count('requests', 'hit') == 1
