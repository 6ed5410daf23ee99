"""The reservation type refuses, at construction, every value the DHCP
agent could not put on the wire."""

import json

import pytest

from vmetal_ironic import exception
from vmetal_ironic import reservation as res

MAC = '52:54:00:aa:bb:01'
GOOD = {'mac': MAC, 'address': '192.0.2.10', 'prefixlen': 24,
        'gateway': '192.0.2.1', 'dns_servers': ['192.0.2.53'],
        'hostname': 'node-1', 'lease_time': 3600,
        'boot': {'bootfile': 'snponly.efi'}}


def _with(**changes):
    data = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if key.startswith('boot_'):
            data['boot'][key[5:]] = value
        else:
            data[key] = value
    return data


BAD = [
    # (field in the message, value in the message, changes)
    ('prefixlen', '33', {'prefixlen': 33}),
    ('prefixlen', '-1', {'prefixlen': -1}),
    ('prefixlen', "'24'", {'prefixlen': '24'}),
    ('prefixlen', 'True', {'prefixlen': True}),
    ('hostname', 'is 300 bytes', {'hostname': 'h' * 300}),
    ('hostname', "''", {'hostname': ''}),
    ('hostname', '5', {'hostname': 5}),
    ('lease_time', str(2 ** 32), {'lease_time': 2 ** 32}),
    ('lease_time', '0', {'lease_time': 0}),
    ('lease_time', "'3600'", {'lease_time': '3600'}),
    ('gateway', "'not an ip'", {'gateway': 'not an ip'}),
    ('gateway', "'2001:db8::1'", {'gateway': '2001:db8::1'}),
    ('dns_servers', "'70 servers'",
     {'dns_servers': [f'192.0.2.{i}' for i in range(70)]}),
    ('dns_servers', "'dns.example'", {'dns_servers': ['dns.example']}),
    ('dns_servers', "'192.0.2.53'", {'dns_servers': '192.0.2.53'}),
    ('ntp_servers', "'64 servers'",
     {'ntp_servers': [f'192.0.2.{i}' for i in range(64)]}),
    ('ntp_servers', "'ntp'", {'ntp_servers': ['ntp']}),
    ('address', "'192.0.2.300'", {'address': '192.0.2.300'}),
    ('address', 'None', {'address': None}),
    ('boot.bootfile', 'is 300 bytes', {'boot_bootfile': 'b' * 300}),
    ('boot.ipxe_script_url', 'is 256 bytes',
     {'boot_ipxe_script_url': 'http://x/' + 'u' * 247}),
    ('boot.http_boot_url', 'is 400 bytes',
     {'boot_http_boot_url': 'u' * 400}),
    ('boot.tftp_server', 'is 256 bytes', {'boot_tftp_server': 't' * 256}),
    ('boot', "'kernel'", {'boot_kernel': 'vmlinuz'}),
    ('mac', "'nope'", {'mac': 'nope'}),
]


@pytest.mark.parametrize('field,value,changes', BAD,
                         ids=[f'{f}={v}'[:40] for f, v, _ in BAD])
def test_bad_field_is_refused_naming_field_and_value(field, value, changes):
    with pytest.raises(exception.InvalidProperty) as info:
        res.Reservation.from_dict(_with(**changes))
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert len(message) < 200
    assert field in message and value in message, message


def test_bad_field_is_refused_by_the_constructor_too():
    with pytest.raises(exception.InvalidProperty,
                       match=r"reservation of 52:54:00:aa:bb:01: prefixlen "
                             r"33 is not 0\.\.32"):
        res.Reservation(mac=MAC, address='192.0.2.10', prefixlen=33)
    with pytest.raises(exception.InvalidProperty, match=r'boot\.bootfile'):
        res.Reservation(mac=MAC, address='192.0.2.10', prefixlen=24,
                        boot=res.BootOptions(bootfile='b' * 256))


@pytest.mark.parametrize('changes', [
    {}, {'prefixlen': 0}, {'prefixlen': 32}, {'lease_time': 2 ** 32 - 1},
    {'hostname': 'h' * 255}, {'boot_bootfile': 'b' * 255},
    {'dns_servers': [f'192.0.2.{i}' for i in range(63)]},
    {'ntp_servers': ['192.0.2.123']},
    {'address': '2001:db8::10', 'prefixlen': 64, 'gateway': '2001:db8::1',
     'dns_servers': ['2001:db8::53']},
])
def test_edge_values_are_accepted_and_round_trip(changes):
    reservation = res.Reservation.from_dict(_with(**changes))
    assert res.Reservation.from_json(reservation.to_json()) == reservation


def test_rows_without_ntp_servers_stay_as_before():
    reservation = res.Reservation.from_dict(GOOD)
    assert 'ntp_servers' not in reservation.to_dict()
    assert reservation.ntp_servers == ()


@pytest.mark.parametrize('text', ['{', '[]', '"x"', '{"mac": "' + MAC + '"}'])
def test_not_a_reservation_is_one_line(text):
    with pytest.raises(exception.InvalidProperty) as info:
        res.Reservation.from_json(text)
    assert len(str(info.value).splitlines()) == 1
