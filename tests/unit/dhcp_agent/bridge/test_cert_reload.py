"""The callback certificate taken up again: real OpenSSL handshakes in
memory (``ssl.MemoryBIO``) against the context being reloaded, with files
published the way the kubelet updates a mounted Secret."""

import contextlib
import datetime
import hashlib
import ssl

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
import pytest

from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent.bridge import cert_reload
from vmetal_ironic.lab import tls


def _pair(tmp_path, label):
    issued = tls.issue(tmp_path / label, ['127.0.0.2'], label=label)
    return issued.cert_file.read_bytes(), issued.key_file.read_bytes()


def _served(context):
    """SHA-256 of the certificate a new handshake with ``context`` sends,
    or the SSLError the handshake ends with."""
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    client = client_context.wrap_bio(pipes[0], pipes[1])
    server = context.wrap_bio(pipes[2], pipes[3], server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        pipes[2].write(pipes[1].read())
        pipes[0].write(pipes[3].read())
    return hashlib.sha256(client.getpeercert(binary_form=True)).hexdigest()


def _fingerprint(cert_pem):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(
        cert_pem.decode())).hexdigest()


def _count(metrics, result):
    return metrics.bridge_callback_cert_reloads.labels(result)._value.get()


@pytest.fixture
def volume(tmp_path):
    """``(reload, pairs, directory)``: a context serving pair A from a
    Secret-like volume, its :class:`CertificateReload` after the first
    check, and pairs A, B and C."""
    pairs = {label: _pair(tmp_path, label) for label in 'ABC'}
    directory = tmp_path / 'secret'
    cert_file, key_file = tls.secret_volume(directory, *pairs['A'])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    reload = cert_reload.CertificateReload(context, str(cert_file),
                                           str(key_file),
                                           metrics_mod.Metrics())
    assert reload.check() is None   # the pair loaded at start: no news
    return reload, pairs, directory


def test_a_second_load_into_one_context_serves_later_handshakes(tmp_path):
    """What the reload rests on, checked rather than assumed: a second
    load_cert_chain into a context serves the handshakes after it."""
    a, b = _pair(tmp_path, 'a'), _pair(tmp_path, 'b')
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with cert_reload._in_memory(*a) as paths:
        context.load_cert_chain(*paths)
    assert _served(context) == _fingerprint(a[0])
    with cert_reload._in_memory(*b) as paths:
        context.load_cert_chain(*paths)
    assert _served(context) == _fingerprint(b[0])


def test_a_failed_load_into_a_live_context_breaks_it(tmp_path):
    """Why a new pair goes through a scratch context first: loading a
    certificate with a key that does not match it into the live context
    leaves that context unable to serve anyone."""
    a, b = _pair(tmp_path, 'a'), _pair(tmp_path, 'b')
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with cert_reload._in_memory(*a) as paths:
        context.load_cert_chain(*paths)
    with cert_reload._in_memory(b[0], a[1]) as paths, \
            pytest.raises(ssl.SSLError):
        context.load_cert_chain(*paths)
    with pytest.raises(ssl.SSLError):
        _served(context)


def test_a_new_pair_serves_the_next_handshake(volume):
    reload, pairs, directory = volume
    assert _served(reload.context) == _fingerprint(pairs['A'][0])
    tls.secret_volume(directory, *pairs['B'])
    assert reload.check() == 'loaded'
    assert _served(reload.context) == _fingerprint(pairs['B'][0])
    assert _count(reload.metrics, 'loaded') == 1
    # Nothing new: nothing loaded, nothing counted.
    assert reload.check() is None
    assert _count(reload.metrics, 'loaded') == 1


def test_same_bytes_in_a_new_volume_version_are_not_news(volume):
    reload, pairs, directory = volume
    tls.secret_volume(directory, *pairs['A'])
    assert reload.check() is None
    assert _count(reload.metrics, 'loaded') == 0


def test_a_key_that_does_not_match_keeps_the_old_pair(volume):
    reload, pairs, directory = volume
    tls.secret_volume(directory, pairs['B'][0], pairs['A'][1])
    assert reload.check() == 'failed'
    assert _served(reload.context) == _fingerprint(pairs['A'][0])
    assert reload.problem[0] == str(directory / 'tls.key')
    assert 'does not match' in reload.problem[1]
    # Reported once for this version of the files, however often checked.
    for _ in range(3):
        assert reload.check() is None
    assert _count(reload.metrics, 'failed') == 1
    # The next change is tried again, and loads.
    tls.secret_volume(directory, *pairs['C'])
    assert reload.check() == 'loaded'
    assert _served(reload.context) == _fingerprint(pairs['C'][0])
    assert reload.problem is None
    assert _count(reload.metrics, 'loaded') == 1


def test_a_half_written_certificate_keeps_the_old_pair(volume):
    reload, pairs, directory = volume
    cert, key = pairs['B']
    tls.secret_volume(directory, cert[:len(cert) // 2], key)
    assert reload.check() == 'failed'
    assert reload.problem[0] == str(directory / 'tls.crt')
    assert _served(reload.context) == _fingerprint(pairs['A'][0])
    # Another bad version is reported on its own.
    tls.secret_volume(directory, b'', key)
    assert reload.check() == 'failed'
    assert reload.check() is None
    assert _count(reload.metrics, 'failed') == 2
    assert _served(reload.context) == _fingerprint(pairs['A'][0])


def test_a_missing_file_keeps_the_old_pair_and_is_reported_once(volume):
    reload, pairs, directory = volume
    (directory / 'tls.key').unlink()
    assert reload.check() == 'failed'
    assert reload.problem == (str(directory / 'tls.key'),
                              'No such file or directory')
    assert reload.check() is None
    assert _count(reload.metrics, 'failed') == 1
    assert _served(reload.context) == _fingerprint(pairs['A'][0])
    (directory / 'tls.key').symlink_to('..data/tls.key')
    tls.secret_volume(directory, *pairs['B'])
    assert reload.check() == 'loaded'


def test_a_key_inside_the_certificate_file(tmp_path):
    a, b = _pair(tmp_path, 'a'), _pair(tmp_path, 'b')
    both = tmp_path / 'both.pem'
    both.write_bytes(a[0] + a[1])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(both)
    reload = cert_reload.CertificateReload(context, str(both))
    assert reload.check() is None
    both.write_bytes(b[0] + b[1])
    assert reload.check() == 'loaded'
    assert _served(context) == _fingerprint(b[0])
    both.write_bytes(b[0] + a[1])
    assert reload.check() == 'failed'
    assert reload.problem[0] == str(both)
    assert _served(context) == _fingerprint(b[0])


def test_an_oversized_file_is_refused_unread(volume):
    reload, pairs, directory = volume
    cert, key = pairs['B']
    tls.secret_volume(directory, cert + b'#' * cert_reload.MAX_FILE_BYTES,
                      key)
    assert reload.check() == 'failed'
    assert 'larger than' in reload.problem[1]
    assert _served(reload.context) == _fingerprint(pairs['A'][0])


def test_an_encrypted_key_keeps_the_old_pair_without_asking(volume):
    """No option carries a password: an encrypted key is a pair that
    does not load. (That OpenSSL is not left to ask on a terminal needs a
    terminal to show; this test has none and shows the refusal only.)"""
    from cryptography.hazmat.primitives import serialization
    reload, pairs, directory = volume
    cert, key = pairs['B']
    encrypted = serialization.load_pem_private_key(key, None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b'secret'))
    tls.secret_volume(directory, cert, encrypted)
    assert reload.check() == 'failed'
    assert reload.problem[0] == str(directory / 'tls.key')
    assert _served(reload.context) == _fingerprint(pairs['A'][0])


def _expiry(reload):
    return reload.metrics.bridge_callback_cert_expiry._value.get()


def _pair_until(not_after):
    """A self-signed pair whose certificate expires at ``not_after``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'callback')])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(not_after - datetime.timedelta(days=90))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_the_expiry_gauge_follows_the_pair_served(volume):
    reload, pairs, directory = volume
    # Set by the first check, from the files' certificate.
    assert _expiry(reload) == cert_reload.not_after(pairs['A'][0])
    later = datetime.datetime(2031, 1, 2, 3, 4, 5,
                              tzinfo=datetime.timezone.utc)
    tls.secret_volume(directory, *_pair_until(later))
    assert reload.check() == 'loaded'
    assert _expiry(reload) == later.timestamp()
    # A pair that does not load leaves the served one's expiry.
    tls.secret_volume(directory, pairs['B'][0], pairs['A'][1])
    assert reload.check() == 'failed'
    assert _expiry(reload) == later.timestamp()


def test_not_after_reads_the_first_certificate_of_a_chain(tmp_path):
    first = datetime.datetime(2030, 6, 1, tzinfo=datetime.timezone.utc)
    second = datetime.datetime(2035, 6, 1, tzinfo=datetime.timezone.utc)
    chain = _pair_until(first)[0] + _pair_until(second)[0]
    assert cert_reload.not_after(chain) == first.timestamp()
    with pytest.raises(ValueError):
        cert_reload.not_after(b'not a certificate')


def test_a_flip_between_the_reads_of_the_two_files_is_not_a_mismatch(
        volume, monkeypatch):
    """The kubelet flips ``..data`` from A to B after ``tls.crt`` was read
    and before ``tls.key`` is (the flip is a real one, made at that point
    by wrapping the read: an interleaving a test cannot time otherwise):
    B is loaded whole, nothing is reported as failed."""
    reload, pairs, directory = volume
    read = cert_reload._read
    flips = []

    def read_flipping_before_the_key(path):
        if path == reload.key_file and not flips:
            flips.append(tls.secret_volume(directory, *pairs['B']))
        return read(path)
    monkeypatch.setattr(cert_reload, '_read', read_flipping_before_the_key)
    assert reload.check() == 'loaded'
    assert flips
    assert _served(reload.context) == _fingerprint(pairs['B'][0])
    assert _count(reload.metrics, 'failed') == 0
    assert reload.problem is None
