"""A copy and its record on disk: published by one rename, adopted at
start only when whole, everything else removed."""

import json
import os

import pytest

from vmetal_ironic.dhcp_agent.bridge import cache_policy
from vmetal_ironic.dhcp_agent.bridge import cache_record

RECORD = cache_record.Record(
    '/node/deploy_ramdisk', 5,
    cache_policy.Validator(b'if-modified-since',
                           b'Sun, 06 Dec 2026 10:00:00 GMT'),
    ((b'content-type', b'application/octet-stream'),
     (b'x-odd', b'caf\xe9')))


def _copy(directory, record=RECORD, data=b'hello'):
    body, fd = cache_record.create_fill(directory)
    os.write(fd, data)
    os.close(fd)
    return cache_record.publish(body, record)


def _names(directory):
    return sorted(path.name.split('-')[0] for path in directory.iterdir())


def test_a_record_reads_back_as_written_latin1_included():
    record = cache_record.decode(cache_record.encode(RECORD))
    assert record == RECORD


@pytest.mark.parametrize('change', [
    {'version': 2}, {'key': 'no-slash'}, {'key': 7}, {'size': -1},
    {'size': True}, {'size': '5'}, {'published': None},
    {'validator': ['if-match', '"x"']}, {'validator': ['if-none-match', '']},
    {'validator': 'if-none-match'}, {'headers': [['only-a-name']]},
    {'headers': 'x'},
])
def test_a_record_no_copy_could_have_is_refused(change):
    document = json.loads(cache_record.encode(RECORD))
    document.update(change)
    with pytest.raises(ValueError):
        cache_record.decode(json.dumps(document).encode())


def test_publish_renames_the_fill_with_its_record(tmp_path):
    body, fd = cache_record.create_fill(tmp_path)
    os.write(fd, b'hello')
    os.close(fd)
    assert _names(tmp_path) == ['fill']
    final = cache_record.publish(body, RECORD)
    assert _names(tmp_path) == ['copy']
    assert final.read_bytes() == b'hello'
    record = cache_record.decode((final.parent / 'record.json').read_bytes())
    assert record.key == RECORD.key and record.published > 0
    cache_record.remove(final)
    assert _names(tmp_path) == []


def test_adopt_takes_whole_copies_oldest_first(tmp_path):
    first = _copy(tmp_path)
    second = _copy(tmp_path, cache_record.Record(
        '/kernel', 3, RECORD.validator, ()), b'abc')
    adopted, discarded = cache_record.adopt(tmp_path)
    assert discarded == 0
    assert [(a.record.key, a.body) for a in adopted] == [
        (RECORD.key, first), ('/kernel', second)]
    assert adopted[0].record.validator == RECORD.validator


def test_adopt_removes_what_it_cannot_vouch_for(tmp_path):
    kept = _copy(tmp_path)
    # A fill the agent did not finish.
    body, fd = cache_record.create_fill(tmp_path)
    os.close(fd)
    # A copy whose body is shorter than its record says.
    short = _copy(tmp_path, cache_record.Record('/short', 9,
                                                RECORD.validator, ()))
    # A copy without its record, one with a garbled record, one with no
    # body, a copy of the earlier flat format.
    bare = _copy(tmp_path, cache_record.Record('/bare', 5,
                                               RECORD.validator, ()))
    (bare.parent / 'record.json').unlink()
    garbled = _copy(tmp_path, cache_record.Record('/garbled', 5,
                                                  RECORD.validator, ()))
    (garbled.parent / 'record.json').write_bytes(b'{"version": 1, "ke')
    bodiless = _copy(tmp_path, cache_record.Record('/bodiless', 5,
                                                   RECORD.validator, ()))
    bodiless.unlink()
    (tmp_path / 'copy-0123456789abcdef').write_bytes(b'flat')
    (tmp_path / 'operator-notes').write_text('left alone')
    adopted, discarded = cache_record.adopt(tmp_path)
    assert [a.body for a in adopted] == [kept]
    assert discarded == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [kept.parent.name, 'operator-notes'])
    assert not short.exists() and not body.exists()


def test_adopt_keeps_the_newer_of_two_copies_of_a_key(tmp_path):
    _copy(tmp_path, data=b'older')
    newer = _copy(tmp_path, data=b'newer')
    adopted, discarded = cache_record.adopt(tmp_path)
    assert [a.body for a in adopted] == [newer] and discarded == 1
    assert _names(tmp_path) == ['copy']


def test_a_huge_record_is_not_read(tmp_path):
    body = _copy(tmp_path)
    (body.parent / 'record.json').write_bytes(
        b' ' * (cache_record.MAX_RECORD_BYTES + 1))
    assert cache_record.adopt(tmp_path) == ([], 1)

