import ssl
import stat

import pytest

from vmetal_ironic.lab import tls


def _handshake(issued, server_hostname, ca_file):
    """A TLS handshake in memory; raises what the client's check raises."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(issued.cert_file, issued.key_file)
    client_context = ssl.create_default_context(cafile=str(ca_file))
    to_client, to_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server,
                                     server_hostname=server_hostname)
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(10):
        done = 0
        for end in (client, server):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        if done == 2:
            return
    raise AssertionError('the handshake did not finish')


def test_issued_certificate_verifies_for_its_names_only(tmp_path):
    issued = tls.issue(tmp_path, ['203.0.113.2', 'agent.lab'],
                       label='callback')
    assert issued.cert_file.name == 'callback.pem'
    assert stat.S_IMODE(issued.key_file.stat().st_mode) == 0o600
    _handshake(issued, '203.0.113.2', issued.ca_file)
    _handshake(issued, 'agent.lab', issued.ca_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(issued, '203.0.113.9', issued.ca_file)
    other = tls.issue(tmp_path / 'other', ['203.0.113.2'])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(issued, '203.0.113.2', other.ca_file)


def test_secret_volume_flips_its_data_link_as_the_kubelet_does(tmp_path):
    first = tls.issue(tmp_path / 'a', ['203.0.113.2'])
    second = tls.issue(tmp_path / 'b', ['203.0.113.2'])
    volume = tmp_path / 'secret'
    cert, key = tls.secret_volume(volume, first.cert_file.read_bytes(),
                                  first.key_file.read_bytes())
    assert cert.read_bytes() == first.cert_file.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    old_target = cert.resolve()
    assert (cert.readlink(), (volume / '..data').is_symlink()) == (
        tls.pathlib.Path('..data/tls.crt'), True)
    assert tls.secret_volume(volume, second.cert_file.read_bytes(),
                             second.key_file.read_bytes()) == (cert, key)
    assert key.read_bytes() == second.key_file.read_bytes()
    assert cert.resolve() != old_target and not old_target.exists()
    # One version directory, the current one, is left.
    assert [path.name for path in volume.iterdir()
            if not path.is_symlink()] == [cert.resolve().parent.name]
