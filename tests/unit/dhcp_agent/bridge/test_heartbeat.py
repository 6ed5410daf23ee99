import json

import pytest

from vmetal_ironic.dhcp_agent.bridge import heartbeat

ADVERTISE = 'http://10.96.0.50:8081/'


def _body(**fields):
    data = {'agent_token': 't', 'agent_version': '13.0.0'}
    data.update(fields)
    return json.dumps(data).encode()


def test_callback_url_names_the_source_not_the_body():
    body, ramdisk = heartbeat.rewrite(
        _body(callback_url='http://203.0.113.66:9999'), '198.51.100.20',
        ADVERTISE, 9999)
    data = json.loads(body)
    # The forged address in the body is gone; the TCP source is named.
    assert data['callback_url'] == 'http://10.96.0.50:8081/198.51.100.20'
    assert data['agent_token'] == 't'  # noqa: S105 - not a secret
    assert ramdisk == heartbeat.Ramdisk('http')


def test_tls_ramdisk_keeps_its_certificate_for_the_agent():
    body, ramdisk = heartbeat.rewrite(
        _body(callback_url='https://198.51.100.20:9999',
              agent_verify_ca='PEM'), '198.51.100.20', ADVERTISE, 9999)
    assert 'agent_verify_ca' not in json.loads(body)
    assert ramdisk == heartbeat.Ramdisk('https', 'PEM')


@pytest.mark.parametrize('body,message', [
    (b'not json', 'not JSON'),
    (b'[1]', 'not a JSON object'),
    (_body(), 'no callback_url'),
    (_body(callback_url='ftp://198.51.100.20:9999'), 'not http'),
    (_body(callback_url='http://198.51.100.20:22'), 'port 22'),
    (_body(callback_url='http://198.51.100.20:x'), 'port None'),
    (_body(callback_url='https://198.51.100.20:9999'), 'agent_verify_ca')])
def test_bad_heartbeats_are_refused_with_the_reason(body, message):
    with pytest.raises(heartbeat.HeartbeatError, match=message):
        heartbeat.rewrite(body, '198.51.100.20', ADVERTISE, 9999)
