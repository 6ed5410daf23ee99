"""The callback listener's certificate renewed under a running agent.

The agent runs in a namespace with its callback listener on the cluster
side (203.0.113.2, a veth pair to a client namespace playing Ironic's
conductor), serving TLS from a directory laid out as the kubelet mounts a
Secret (``tls.crt`` and ``tls.key`` through the ``..data`` symlink, see
:func:`vmetal_ironic.lab.tls.secret_volume`). The client is Python's ssl
in that namespace, checking the certificate against the CAs it was given
(Ironic's ``[agent]verify_ca``). The certificates come from CAs of the
test's own (:mod:`vmetal_ironic.lab.tls`); the agent process is the real
``vmetal-dhcp-agent``, never restarted.
"""

import hashlib
import os
import ssl
import subprocess
import sys
import time

import pytest

from tests.functional import pxe_lab
from vmetal_ironic.lab import tls

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='needs root for network namespaces')

AGENT = '198.51.100.1'
AGENT_CLUSTER = '203.0.113.2'
IRONIC = '203.0.113.1'
CALLBACK_PORT = 8081

# One handshake in the client's namespace: prints the SHA-256 of the
# certificate the agent sent, checked against the CA bundle in argv[1].
_HANDSHAKE = f"""
import hashlib, socket, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[1])
with socket.create_connection(('{AGENT_CLUSTER}', {CALLBACK_PORT}),
                              timeout=10) as raw:
    with context.wrap_socket(raw, server_hostname='{AGENT_CLUSTER}') as s:
        print(hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest())
"""


def _fingerprint(issued):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(
        issued.cert_file.read_text())).hexdigest()


def _publish(volume, cert_from, key_from):
    tls.secret_volume(volume, cert_from.cert_file.read_bytes(),
                      key_from.key_file.read_bytes())


@pytest.fixture
def lab(tmp_path):
    lab = pxe_lab.Lab(tmp_path / 'net')
    try:
        yield lab
    finally:
        lab.close()


def test_renewed_certificate_is_served_without_a_restart(lab, tmp_path):
    agent_ns, agent_if = lab.node('a', f'{AGENT}/24')
    ironic_ns = lab.namespace('k')
    lab.wire(agent_ns, ironic_ns, f'{AGENT_CLUSTER}/24', f'{IRONIC}/24')
    first, second = (tls.issue(tmp_path / 'tls', [AGENT_CLUSTER], label=label)
                     for label in ('first', 'second'))
    # What Ironic's [agent]verify_ca holds while the CA changes: both.
    bundle = tmp_path / 'verify-ca.pem'
    bundle.write_text(first.ca_file.read_text() + second.ca_file.read_text())
    volume = tmp_path / 'secret'
    _publish(volume, first, first)
    # Nothing listens on Ironic's URLs: the handshakes do not need it.
    agent = lab.start_agent(agent_ns, agent_if, extra=f"""
        [vmetal_bridge]
        enabled = true
        ironic_http_url = http://{IRONIC}:6180
        ironic_api_url = http://{IRONIC}:6385
        callback_address = {AGENT_CLUSTER}
        callback_port = {CALLBACK_PORT}
        callback_cert_file = {volume / 'tls.crt'}
        callback_key_file = {volume / 'tls.key'}
        callback_cert_check_interval = 0.5
        """)

    def served():
        result = subprocess.run(
            ['ip', 'netns', 'exec', ironic_ns, sys.executable, '-c',
             _HANDSHAKE, str(bundle)],
            capture_output=True, text=True, timeout=30, check=True)
        return result.stdout.strip()

    def reloads(result):
        return agent.metric('vmetal_bridge_callback_cert_reloads_total'
                            f'{{result="{result}"}}')

    assert served() == _fingerprint(first)
    _publish(volume, second, second)
    agent.wait_metric('vmetal_bridge_callback_cert_reloads_total'
                      '{result="loaded"}', 1)
    assert served() == _fingerprint(second)
    # A broken replacement (the first certificate with the second key)
    # keeps the second pair served, and is counted once.
    _publish(volume, first, second)
    agent.wait_metric('vmetal_bridge_callback_cert_reloads_total'
                      '{result="failed"}', 1)
    assert served() == _fingerprint(second)
    # Three more checks of the same broken files: still once.
    time.sleep(1.5)
    assert served() == _fingerprint(second)
    assert (reloads('loaded'), reloads('failed')) == (1, 1)
    assert agent.proc.poll() is None
