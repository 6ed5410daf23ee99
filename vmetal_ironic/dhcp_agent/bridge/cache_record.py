"""The bridge's copies on disk, so that they outlive the agent's process.

Each copy is one directory in ``cache_dir`` holding the body (``body``)
and the record of what it answers (``record.json``: the request key, the
length, the validator Ironic's answer carried and the headers kept from
it). A fill is written as ``fill-<random>/``; when the body is whole the
record is written beside it and the directory is renamed
``copy-<random>/``. One rename publishes both, so whatever stops the
agent (a crash, the kubelet restarting the container) leaves either a
copy with its record or a fill, never one without the other.

At start :func:`adopt` takes up the complete copies and removes the rest:
fills, copies whose record is missing, unreadable, of another format or
does not match the body's length, and files of earlier versions. An
adopted copy is served only after Ironic answered its validator with
``304``, like any other copy, so a file changed upstream while the agent
was down is fetched again, never served from the old copy.

Nothing is fsynced: a process or container restart keeps the page cache,
and after a machine's crash a body whose blocks never reached the disk
shows a shorter length than its record (ext4 and XFS do not expose
unwritten blocks) and is removed.
"""

import dataclasses
import json
import os
import pathlib
import secrets
import shutil
import stat
import time

from vmetal_ironic.dhcp_agent.bridge import cache_policy

FILL = 'fill-'
COPY = 'copy-'
BODY = 'body'
RECORD = 'record.json'
#: The record's format; another one is not adopted.
VERSION = 1
#: A record is a few hundred bytes: read no further than this.
MAX_RECORD_BYTES = 64 * 1024
#: The validators a copy may be asked again with.
_VALIDATORS = (b'if-none-match', b'if-modified-since')


@dataclasses.dataclass(frozen=True)
class Record:
    """What a copy answers: ``key`` (the request path), ``size``,
    ``validator`` (:class:`~.cache_policy.Validator`), ``headers`` (kept
    from Ironic's answer, ``(name, value)`` bytes), and when it was
    published (``published``, nanoseconds of the clock; set by
    :func:`publish`), which orders the copies adopted at start."""

    key: str
    size: int
    validator: cache_policy.Validator
    headers: tuple
    published: int = 0


@dataclasses.dataclass(frozen=True)
class Adopted:
    """A copy found whole at start: its :class:`Record` and ``body``
    path."""

    record: Record
    body: pathlib.Path


def _text(value):
    return value.decode('latin-1')


def encode(record):
    """``record`` as the bytes of ``record.json``."""
    return json.dumps({
        'version': VERSION, 'key': record.key, 'size': record.size,
        'published': record.published,
        'validator': [_text(record.validator.header),
                      _text(record.validator.value)],
        'headers': [[_text(name), _text(value)]
                    for name, value in record.headers],
    }).encode()


def _pair(item):
    if not (isinstance(item, list) and len(item) == 2
            and all(isinstance(part, str) for part in item)):
        raise ValueError(f'not a header pair: {item!r}')
    return item[0].encode('latin-1'), item[1].encode('latin-1')


def decode(data):
    """The :class:`Record` in ``data`` (``record.json``'s bytes).

    :raises ValueError: not a record of this format, or one no copy could
        have been filled with.
    """
    document = json.loads(data)
    if not isinstance(document, dict) or document.get('version') != VERSION:
        raise ValueError('not a record of this version')
    key = document.get('key')
    if not isinstance(key, str) or not key.startswith('/'):
        raise ValueError(f'bad key {key!r}')
    size, published = document.get('size'), document.get('published')
    for name, number in (('size', size), ('published', published)):
        if not isinstance(number, int) or isinstance(number, bool) \
                or number < 0:
            raise ValueError(f'bad {name} {number!r}')
    header, value = _pair(document.get('validator'))
    if header not in _VALIDATORS or not value:
        raise ValueError(f'bad validator {header!r}')
    headers = document.get('headers')
    if not isinstance(headers, list):
        raise ValueError('bad headers')
    return Record(key, size, cache_policy.Validator(header, value),
                  tuple(_pair(item) for item in headers), published)


def create_fill(directory):
    """A new fill's directory in ``directory`` and its body, opened.

    :returns: ``(body path, descriptor open for writing)``.
    :raises OSError: it cannot be created.
    """
    fill = pathlib.Path(directory) / (FILL + secrets.token_hex(8))
    fill.mkdir(mode=0o700)
    body = fill / BODY
    try:
        fd = os.open(body, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                     os.O_CLOEXEC, 0o600)
    except OSError:
        fill.rmdir()
        raise
    return body, fd


def publish(body, record):
    """Write ``record`` beside the whole ``body`` of a fill and rename the
    fill's directory into a copy.

    :returns: the copy's body path.
    :raises OSError: the record or the rename failed (the fill is left
        for :func:`remove`).
    """
    fill = body.parent
    record = dataclasses.replace(record, published=time.time_ns())
    (fill / RECORD).write_bytes(encode(record))
    final = fill.with_name(COPY + fill.name[len(FILL):])
    os.rename(fill, final)
    return final / BODY


def remove(body):
    """Remove a fill or a copy (its body, its record, its directory).
    A descriptor still open on the body keeps reading it."""
    shutil.rmtree(body.parent, ignore_errors=True)


def _remove_entry(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _read_record(path):
    with open(path, 'rb') as source:
        data = source.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError('record too large')
    return decode(data)


def _whole(copy):
    """The :class:`Adopted` copy in directory ``copy``, or ``None``."""
    if copy.is_symlink() or not copy.is_dir():
        return None
    body = copy / BODY
    try:
        record = _read_record(copy / RECORD)
        found = os.stat(body, follow_symlinks=False)
    except (OSError, ValueError, UnicodeError):
        return None
    if not stat.S_ISREG(found.st_mode) or found.st_size != record.size:
        return None
    return Adopted(record, body)


def adopt(directory):
    """Take up the whole copies in ``directory`` and remove every other
    fill or copy there (other names are left alone).

    :returns: ``(adopted, discarded)``: the :class:`Adopted` copies,
        oldest first, one a key (the newest), and how many fills and
        copies were removed.
    :raises OSError: ``directory`` cannot be listed.
    """
    found, discarded = {}, 0
    for path in sorted(pathlib.Path(directory).iterdir()):
        if not path.name.startswith((FILL, COPY)):
            continue
        copy = _whole(path) if path.name.startswith(COPY) else None
        if copy is None:
            _remove_entry(path)
            discarded += 1
            continue
        older = found.get(copy.record.key)
        if older is not None:
            # Two copies of one key (a crash between publishing a new
            # copy and removing the old one): the newer one stays.
            if older.record.published > copy.record.published:
                older, copy = copy, older
            _remove_entry(older.body.parent)
            discarded += 1
        found[copy.record.key] = copy
    adopted = sorted(found.values(), key=lambda item: item.record.published)
    return adopted, discarded
