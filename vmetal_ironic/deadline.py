"""One deadline for a whole operation, shared by every call it makes.

An Ironic conductor worker holds the node's lock while the store works;
retries of each call (and a retry of the whole operation) must not add up
to minutes while the API server does not answer. :func:`within` sets the
deadline for the calling thread (an inner one never extends an outer
one); the store's API client asks :func:`remaining` before each attempt
and shortens its request timeout to it.
"""

import contextlib
import threading
import time

_local = threading.local()


@contextlib.contextmanager
def within(seconds):
    """Run the block with at most ``seconds`` left (``None``: no bound)."""
    outer = getattr(_local, 'deadline', None)
    mine = None if seconds is None else time.monotonic() + seconds
    if outer is not None and (mine is None or outer < mine):
        mine = outer
    _local.deadline = mine
    try:
        yield
    finally:
        _local.deadline = outer


def remaining():
    """Seconds left for this thread's operation, or ``None`` when no
    deadline is set."""
    deadline = getattr(_local, 'deadline', None)
    return None if deadline is None else deadline - time.monotonic()
