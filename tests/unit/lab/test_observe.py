"""The lab's log readers and its one wait."""

import time

import pytest

from vmetal_ironic.lab import observe

ACCESS_LOG = (
    'Serving HTTP on 192.0.2.1 port 8080 (http://192.0.2.1:8080/) ...\n'
    '192.0.2.50 - - [01/Dec/2026 10:00:00] "GET /boot.ipxe HTTP/1.1" 200 -\n'
    '192.0.2.50 - - [01/Dec/2026 10:00:01] "GET /nope HTTP/1.1" 404 -\n')


def test_http_requests():
    assert observe.http_requests(ACCESS_LOG) == [
        ('192.0.2.50', '/boot.ipxe', 200), ('192.0.2.50', '/nope', 404)]


def test_wait_for_returns_the_first_truthy_result():
    answers = iter([None, [], ['ack']])
    assert observe.wait_for(lambda: next(answers), 5, interval=0) == ['ack']


def test_wait_for_gives_up_quietly_or_naming_what():
    assert observe.wait_for(lambda: False, 0.05, interval=0.01) is None
    with pytest.raises(TimeoutError, match='waiting for the agent'):
        observe.wait_for(lambda: False, 0.05, interval=0.01,
                         what='the agent')


def test_wait_for_stops_early_when_failed():
    started = time.monotonic()
    assert observe.wait_for(lambda: False, 30, interval=0.01,
                            failed=lambda: True) is None
    assert time.monotonic() - started < 5
    with pytest.raises(TimeoutError):
        observe.wait_for(lambda: False, 30, interval=0.01,
                         failed=lambda: True, what='x')
