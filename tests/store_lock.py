"""Holding a local store's write lock from another connection, as a stuck
concurrent writer would: the store's own calls then meet a real SQLite
lock and give up after their ``busy_timeout``."""

import contextlib
import sqlite3


@contextlib.contextmanager
def held(path):
    """Hold the write lock of the SQLite database at ``path``.

    (The store runs in WAL mode, where ``BEGIN IMMEDIATE`` and ``BEGIN
    EXCLUSIVE`` take the same lock: writers wait, readers do not.)
    """
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute('BEGIN IMMEDIATE')
    try:
        yield
    finally:
        holder.execute('ROLLBACK')
        holder.close()
