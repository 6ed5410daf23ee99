"""A certificate authority of the lab's own and the certificates it signs.

The two-network lab serves the agent's callback listener (and the tests
Ironic's API) over TLS, the way a cluster would with cert-manager: a CA
that exists for one run, a server certificate naming the addresses the
clients connect to, and the CA file handed to the clients that check them.
Keys are P-256, valid for a day: nothing outlives the run's directory.
"""

import dataclasses
import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_PEM = serialization.Encoding.PEM


@dataclasses.dataclass(frozen=True)
class Issued:
    """Files of one server certificate: ``ca_file`` (the CA that signed
    it), ``cert_file`` and ``key_file`` (PEM)."""

    ca_file: pathlib.Path
    cert_file: pathlib.Path
    key_file: pathlib.Path


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alternative_names(names):
    """SubjectAlternativeName entries: addresses as IP, the rest DNS."""
    entries = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def _certificate(subject, issuer, public_key, signer, ca, names=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject))
               .issuer_name(_name(issuer))
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                              critical=True))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_alternative_names(names)),
            critical=False)
    return builder.sign(signer, hashes.SHA256())


def issue(directory, names, label='server'):
    """Make a CA and a server certificate for ``names`` in ``directory``.

    :param names: the addresses and host names clients connect to.
    :param label: prefix of the files written.
    :returns: :class:`Issued`.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = f'vmetal lab CA ({label})'
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(names[0], ca_name, key.public_key(), ca_key,
                          False, names)
    issued = Issued(directory / f'{label}-ca.pem',
                    directory / f'{label}.pem',
                    directory / f'{label}-key.pem')
    issued.ca_file.write_bytes(ca.public_bytes(_PEM))
    issued.cert_file.write_bytes(server.public_bytes(_PEM))
    issued.key_file.touch(mode=0o600)
    issued.key_file.write_bytes(key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return issued


def secret_volume(directory, cert_pem, key_pem):
    """Write a certificate and key the way the kubelet updates a mounted
    Secret: a new timestamped directory, then the ``..data`` symlink
    flipped onto it by one rename, then the old directory removed;
    ``tls.crt`` and ``tls.key`` are symlinks through ``..data``. Call it
    again to publish the next version.

    :returns: the paths of ``tls.crt`` and ``tls.key``.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / '..data'
    old = data.resolve() if data.is_symlink() else None
    version = directory / f'..{datetime.datetime.now():%Y_%m_%d_%H_%M_%S.%f}'
    version.mkdir()
    (version / 'tls.crt').write_bytes(cert_pem)
    (version / 'tls.key').touch(mode=0o600)
    (version / 'tls.key').write_bytes(key_pem)
    flipping = directory / '..data_tmp'
    flipping.symlink_to(version.name)
    flipping.replace(data)
    for name in ('tls.crt', 'tls.key'):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f'..data/{name}')
    if old is not None:
        for path in old.iterdir():
            path.unlink()
        old.rmdir()
    return directory / 'tls.crt', directory / 'tls.key'
