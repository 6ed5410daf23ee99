import os

import pytest
import tftpy

from vmetal_ironic.pxe import metrics as metrics_mod
from vmetal_ironic.pxe import tftp


@pytest.fixture
def root(tmp_path):
    base = tmp_path / 'root'
    (base / 'sub').mkdir(parents=True)
    (base / 'boot.efi').write_bytes(os.urandom(5000))
    (base / 'sub' / 'x.bin').write_bytes(b'x')
    (tmp_path / 'secret').write_text('secret')
    (tmp_path / 'outside').mkdir()
    (tmp_path / 'outside' / 'ok.efi').write_text('ok')
    (base / 'escape').symlink_to(tmp_path / 'secret')
    (base / 'allowed').symlink_to(tmp_path / 'outside' / 'ok.efi')
    (base / 'inner').symlink_to(base / 'sub' / 'x.bin')
    return base


def test_resolve(root):
    real = os.path.realpath(root)
    assert tftp.resolve(real, 'boot.efi') == os.path.join(real, 'boot.efi')
    assert tftp.resolve(real, 'sub/x.bin') == os.path.join(real, 'sub',
                                                           'x.bin')
    assert tftp.resolve(real, 'inner') == os.path.join(real, 'sub', 'x.bin')
    for name in ('../secret', 'sub/../../secret', '/etc/passwd', 'escape',
                 'allowed', 'sub', 'missing', '', 'a\0b', 'sub\\x.bin'):
        assert tftp.resolve(real, name) is None, name
    outside = os.path.realpath(root.parent / 'outside')
    assert tftp.resolve(real, 'allowed', (outside,)) == os.path.join(
        outside, 'ok.efi')
    assert tftp.resolve(real, 'escape', (outside,)) is None


def test_root_must_be_a_directory(tmp_path):
    with pytest.raises(ValueError, match='is not a readable directory'):
        tftp.TftpService(str(tmp_path / 'nope'), '127.0.0.1', 0)


def test_download_and_refusals_over_loopback(root, tmp_path):
    metrics = metrics_mod.Metrics()
    service = tftp.TftpService(str(root), '127.0.0.1', 0, metrics=metrics,
                               timeout=1, retries=2)
    service.start()
    try:
        port = service._server.listenport
        client = tftpy.TftpClient('127.0.0.1', port,
                                  options={'blksize': 1428, 'tsize': 0})
        target = tmp_path / 'out.efi'
        client.download('boot.efi', str(target))
        assert target.read_bytes() == (root / 'boot.efi').read_bytes()
        for name in ('escape', '../secret'):
            with pytest.raises(tftpy.TftpException):
                tftpy.TftpClient('127.0.0.1', port).download(
                    name, str(tmp_path / 'bad'))
        with pytest.raises(tftpy.TftpException):
            tftpy.TftpClient('127.0.0.1', port).upload(
                'new.bin', str(target))
        assert not (root / 'new.bin').exists()
    finally:
        service.stop()
    text = metrics.render()
    assert 'vmetal_tftp_transfers_total{result="served"} 1.0' in text
    assert 'vmetal_tftp_bytes_total 5000.0' in text
    assert 'vmetal_tftp_transfers_total{result="write_refused"} 1.0' in text
