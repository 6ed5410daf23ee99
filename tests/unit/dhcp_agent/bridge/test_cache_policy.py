"""What the bridge's copies may answer and keep: pure decisions."""

import pytest

from vmetal_ironic.dhcp_agent.bridge import cache_policy as policy

DATE = b'Sun, 06 Dec 2026 12:00:10 GMT'
EARLIER = b'Sun, 06 Dec 2026 12:00:00 GMT'


def test_only_plain_gets_and_heads_of_a_path_have_a_key():
    assert policy.request_key('GET', '/images/ipa', []) == '/images/ipa'
    assert policy.request_key('HEAD', '/k', [(b'range', b'bytes=0-1')]) \
        == '/k'
    assert policy.request_key('POST', '/k', []) is None
    assert policy.request_key('GET', '/k?x=1', []) is None
    for header in (b'If-None-Match', b'if-modified-since', b'If-Range',
                   b'if-match', b'if-unmodified-since'):
        assert policy.request_key('GET', '/k', [(header, b'"x"')]) is None


def test_strong_etag_is_asked_with_before_the_date():
    headers = [(b'etag', b'"5d-1f"'), (b'last-modified', EARLIER),
               (b'date', DATE)]
    assert policy.validator(headers) == policy.Validator(b'if-none-match',
                                                         b'"5d-1f"')


def test_last_modified_alone_when_a_second_older_than_the_answer():
    headers = [(b'last-modified', EARLIER), (b'date', DATE)]
    assert policy.validator(headers) == policy.Validator(
        b'if-modified-since', EARLIER)
    # Modified in the second it was served: could change again unseen.
    assert policy.validator([(b'last-modified', DATE),
                             (b'date', DATE)]) is None
    # Without a Date there is nothing to compare with.
    assert policy.validator([(b'last-modified', EARLIER)]) is None
    # The same rule when an ETag comes with it (busybox's ETag is the
    # mtime in seconds and the size).
    assert policy.validator([(b'etag', b'"a-b"'), (b'last-modified', DATE),
                             (b'date', DATE)]) is None
    assert policy.validator([(b'last-modified', b'yesterday'),
                             (b'date', DATE)]) is None


@pytest.mark.parametrize('headers', [
    [],
    [(b'etag', b'W/"weak"')],
    [(b'etag', b'"x"'), (b'cache-control', b'no-store')],
    [(b'etag', b'"x"'), (b'cache-control', b'private, max-age=9')],
    [(b'etag', b'"x"'), (b'vary', b'accept-encoding')],
])
def test_answers_never_kept(headers):
    assert policy.validator(headers) is None


def test_only_a_whole_large_get_fills():
    assert policy.fillable('GET', None, 200, 70000, 65536)
    assert not policy.fillable('GET', None, 200, 65536, 65536)
    assert not policy.fillable('GET', None, 200, None, 65536)
    assert not policy.fillable('GET', b'bytes=0-', 200, 70000, 65536)
    assert not policy.fillable('GET', None, 206, 70000, 65536)
    assert not policy.fillable('HEAD', None, 200, 70000, 65536)


def test_kept_headers_leave_framing_and_hops():
    kept = policy.kept_headers([
        (b'content-type', b'application/octet-stream'),
        (b'content-length', b'9'), (b'date', DATE), (b'etag', b'"x"'),
        (b'connection', b'close'), (b'transfer-encoding', b'chunked')])
    assert kept == ((b'content-type', b'application/octet-stream'),
                    (b'etag', b'"x"'))


@pytest.mark.parametrize('wanted, size, expected', [
    (None, 100, None),
    (b'bytes=0-9', 100, (0, 9)),
    (b'bytes=90-', 100, (90, 99)),
    (b'bytes=95-200', 100, (95, 99)),
    (b'bytes=-10', 100, (90, 99)),
    (b'bytes=-500', 100, (0, 99)),
    (b'BYTES = 5-5', 100, (5, 5)),
    (b'bytes=100-', 100, policy.UNSATISFIABLE),
    (b'bytes=-0', 100, policy.UNSATISFIABLE),
    (b'bytes=0-', 0, policy.UNSATISFIABLE),
    (b'bytes=9-1', 100, None),
    (b'bytes=0-1,5-6', 100, None),
    (b'items=0-1', 100, None),
    (b'bytes=x-1', 100, None),
    (b'bytes=-', 100, None),
    (b'bytes=1', 100, None),
])
def test_byte_range(wanted, size, expected):
    assert policy.byte_range(wanted, size) == expected


def test_copy_answers_whole_ranged_and_unsatisfiable():
    kept = ((b'etag', b'"x"'), (b'accept-ranges', b'none'))
    status, headers, offset, count = policy.copy_answer(kept, 100, None)
    assert (status, offset, count) == (200, 0, 100)
    assert headers == [(b'etag', b'"x"'), (b'accept-ranges', b'bytes'),
                       (b'content-length', b'100')]
    status, headers, offset, count = policy.copy_answer(kept, 100,
                                                        b'bytes=10-19')
    assert (status, offset, count) == (206, 10, 10)
    assert (b'content-range', b'bytes 10-19/100') in headers
    assert (b'content-length', b'10') in headers
    status, headers, offset, count = policy.copy_answer(kept, 100,
                                                        b'bytes=200-')
    assert (status, count) == (416, 0)
    assert (b'content-range', b'bytes */100') in headers
    assert (b'content-length', b'0') in headers
