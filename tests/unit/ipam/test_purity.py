import subprocess
import sys

# netaddr itself imports socket for its address codecs, so sockets are not
# checked here; the adapters that would do network I/O are.
FORBIDDEN = ('sqlite3', 'kubernetes', 'ironic', 'scapy', 'tftpy',
             'oslo_config', 'requests')


def test_domain_modules_import_no_adapters():
    code = (
        'import sys\n'
        'import vmetal_ironic.ipam, vmetal_ironic.network_data\n'
        'import vmetal_ironic.properties, vmetal_ironic.reservation\n'
        f'print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == '[]'
