"""The copies' files: fills published whole or not at all, one fill a
key, the budget kept by least-recently-used eviction of unsent copies."""

import os
import shutil

import pytest

from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent.bridge import cache_policy
from vmetal_ironic.dhcp_agent.bridge import http_cache

TAG = cache_policy.Validator(b'if-none-match', b'"v1"')
HEADERS = ((b'content-type', b'application/octet-stream'),)


@pytest.fixture
def metrics():
    return metrics_mod.Metrics()


@pytest.fixture
def cache(tmp_path, metrics):
    cache = http_cache.HttpCache(tmp_path / 'copies', 1000, metrics)
    cache.open()
    return cache


def _value(metric, *labels):
    return (metric.labels(*labels) if labels else metric)._value.get()


def _fill(cache, key, data):
    fill = cache.begin(key, len(data), TAG, HEADERS)
    assert fill is not None
    fill.write(data)
    fill.finish()


def _files(cache):
    return sorted(path.name.split('-')[0] for path in
                  cache.directory.iterdir())


def _read(cache, key):
    entry, fd = cache.checkout(key)
    try:
        return os.pread(fd, entry.size + 1, 0)
    finally:
        cache.release(entry, fd)


def test_open_removes_what_an_earlier_run_left(tmp_path):
    directory = tmp_path / 'copies'
    directory.mkdir()
    for name in ('copy-1', 'fill-2', 'operator-notes'):
        (directory / name).write_text('x')
    http_cache.HttpCache(directory, 10).open()
    assert [p.name for p in directory.iterdir()] == ['operator-notes']


def test_a_whole_fill_is_published_and_served(cache, metrics):
    assert cache.checkout('/ipa') is None
    _fill(cache, '/ipa', b'a' * 300)
    assert _files(cache) == ['copy']
    entry, fd = cache.checkout('/ipa')
    assert (entry.size, entry.validator, entry.headers) == (300, TAG,
                                                            HEADERS)
    cache.release(entry, fd)
    assert _read(cache, '/ipa') == b'a' * 300
    assert _value(metrics.bridge_cache_fills, 'published') == 1
    assert _value(metrics.bridge_cache_requests, 'miss') == 1
    assert _value(metrics.bridge_cache_bytes) == 300


def test_a_short_fill_leaves_nothing(cache, metrics):
    fill = cache.begin('/ipa', 300, TAG, HEADERS)
    fill.write(b'a' * 299)
    fill.finish()
    fill.finish()   # repeated: nothing more happens
    assert _files(cache) == []
    assert cache.checkout('/ipa') is None
    assert cache.used == 0
    assert _value(metrics.bridge_cache_fills, 'discarded') == 1


def test_a_failed_write_abandons_the_fill_not_the_download(cache, metrics):
    fill = cache.begin('/ipa', 300, TAG, HEADERS)
    # A descriptor that refuses writes, as a full disk would.
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fill._fd)
    fill._fd = fd
    fill.write(b'a' * 100)      # does not raise
    fill.write(b'a' * 200)
    fill.finish()
    assert _files(cache) == [] and cache.used == 0
    assert _value(metrics.bridge_cache_fills, 'discarded') == 1


def test_one_fill_a_key_at_a_time(cache, metrics):
    first = cache.begin('/ipa', 100, TAG, HEADERS)
    assert cache.begin('/ipa', 100, TAG, HEADERS) is None
    assert _value(metrics.bridge_cache_fills, 'busy') == 1
    other = cache.begin('/kernel', 100, TAG, HEADERS)
    assert other is not None
    first.finish()   # nothing written: discarded, the key is free again
    assert cache.begin('/ipa', 100, TAG, HEADERS) is not None


def test_changed_copy_is_dropped_but_readable_while_sent(cache, metrics):
    _fill(cache, '/ipa', b'a' * 300)
    entry, fd = cache.checkout('/ipa')
    cache.revalidated(entry, current=False)
    cache.answered(current=False)
    assert cache.checkout('/ipa') is None
    assert _files(cache) == []
    # Unlinked, still sent to whoever holds it, and counted until then.
    assert os.pread(fd, 10, 0) == b'a' * 10
    assert cache.used == 300
    cache.release(entry, fd)
    assert cache.used == 0
    assert _value(metrics.bridge_cache_requests, 'changed') == 1
    assert _value(metrics.bridge_cache_revalidations, 'changed') == 1


def test_current_copy_counts_a_hit(cache, metrics):
    _fill(cache, '/ipa', b'a' * 300)
    entry, fd = cache.checkout('/ipa')
    cache.revalidated(entry, current=True)
    cache.answered(current=True)
    cache.release(entry, fd)
    assert _value(metrics.bridge_cache_requests, 'hit') == 1
    assert _value(metrics.bridge_cache_revalidations, 'not_modified') == 1
    assert _read(cache, '/ipa') == b'a' * 300


def test_least_recently_used_unsent_copy_is_evicted(cache, metrics):
    _fill(cache, '/a', b'a' * 400)
    _fill(cache, '/b', b'b' * 400)
    _read(cache, '/a')              # /b is now the least recently used
    _fill(cache, '/c', b'c' * 400)
    assert cache.checkout('/b') is None
    assert _read(cache, '/a') == b'a' * 400
    assert _value(metrics.bridge_cache_evictions) == 1
    assert cache.used == 800


def test_a_copy_being_sent_is_never_evicted(cache, metrics):
    _fill(cache, '/a', b'a' * 600)
    entry, fd = cache.checkout('/a')
    assert cache.begin('/b', 600, TAG, HEADERS) is None
    assert _value(metrics.bridge_cache_fills, 'no_room') == 1
    assert _value(metrics.bridge_cache_evictions) == 0
    cache.release(entry, fd)
    assert cache.begin('/b', 600, TAG, HEADERS) is not None
    assert _value(metrics.bridge_cache_evictions) == 1


def test_a_file_over_the_budget_is_never_filled(cache, metrics):
    _fill(cache, '/a', b'a' * 400)
    assert cache.begin('/huge', 1001, TAG, HEADERS) is None
    assert _read(cache, '/a') == b'a' * 400    # nothing evicted for it


def test_a_copy_removed_behind_its_back_is_a_miss(cache):
    _fill(cache, '/a', b'a' * 400)
    for path in cache.directory.iterdir():
        shutil.rmtree(path)
    assert cache.checkout('/a') is None
    assert cache.used == 0 and len(cache) == 0


def test_a_refill_replaces_the_copy(cache):
    _fill(cache, '/a', b'a' * 400)
    _fill(cache, '/a', b'b' * 300)
    assert _read(cache, '/a') == b'b' * 300
    assert _files(cache) == ['copy'] and cache.used == 300


def _restarted(cache, metrics_mod_=metrics_mod, budget=1000):
    """A new cache on the directory, as a restarted agent opens it."""
    metrics = metrics_mod_.Metrics()
    again = http_cache.HttpCache(cache.directory, budget, metrics)
    return again, again.open(), metrics


def test_a_restart_adopts_the_whole_copies_with_their_validators(cache):
    _fill(cache, '/ipa', b'a' * 300)
    _fill(cache, '/kernel', b'k' * 200)
    again, found, metrics = _restarted(cache)
    assert found == (2, 0)
    entry, fd = again.checkout('/ipa')
    assert (entry.size, entry.validator, entry.headers) == (300, TAG,
                                                            HEADERS)
    again.release(entry, fd)
    assert _read(again, '/kernel') == b'k' * 200
    assert again.used == 500
    assert _value(metrics.bridge_cache_adoptions, 'adopted') == 2
    assert _value(metrics.bridge_cache_bytes) == 500
    # Still a copy that must be revalidated: a changed answer drops it.
    entry, fd = again.checkout('/ipa')
    again.revalidated(entry, current=False)
    again.release(entry, fd)
    assert again.checkout('/ipa') is None and again.used == 200


def test_a_restart_removes_fills_and_copies_without_a_record(cache):
    _fill(cache, '/ipa', b'a' * 300)
    _fill(cache, '/old', b'o' * 100)
    cut = cache.begin('/cut', 300, TAG, HEADERS)    # the agent dies here
    cut.write(b'c' * 10)
    old = next(p for p in cache.directory.iterdir()
               if p.name.startswith('copy-')
               and (p / 'body').read_bytes() == b'o' * 100)
    (old / 'record.json').unlink()
    again, found, metrics = _restarted(cache)
    assert found == (1, 2)
    assert _files(again) == ['copy']
    assert _value(metrics.bridge_cache_adoptions, 'discarded') == 2
    assert again.checkout('/old') is None
    assert again.used == 300


def test_a_restart_with_a_smaller_budget_evicts_the_oldest(cache):
    _fill(cache, '/a', b'a' * 400)
    _fill(cache, '/b', b'b' * 400)
    again, found, metrics = _restarted(cache, budget=500)
    assert found == (1, 0)
    assert again.checkout('/a') is None
    assert _read(again, '/b') == b'b' * 400
    assert _value(metrics.bridge_cache_evictions) == 1


def test_a_record_that_cannot_be_written_publishes_nothing(cache, metrics):
    fill = cache.begin('/ipa', 300, TAG, HEADERS)
    fill.write(b'a' * 300)
    # Where the record goes, something it cannot be written over.
    (fill.path.parent / 'record.json').mkdir()
    fill.finish()
    assert _files(cache) == [] and cache.used == 0
    assert cache.checkout('/ipa') is None
    assert _value(metrics.bridge_cache_fills, 'discarded') == 1
