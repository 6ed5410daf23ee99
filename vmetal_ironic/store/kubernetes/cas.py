"""The one compare-and-swap loop of the Kubernetes store.

Every update of an object another process may write too (a BareMetalHost's
annotations and spec) is: read it, decide the change from what was read,
write the change carrying the ``resourceVersion`` read. The API server
applies it only if nobody wrote in between and answers 409 otherwise;
then the loop reads again, a bounded number of times, pausing a little
longer each time with jitter so that losers do not come back together.
"""

import random
import time

from vmetal_ironic import exception
from vmetal_ironic.store.kubernetes import kube_client

# What the API server answers when the object moved (409 Conflict) or went
# away (404) between the read and the write: read again and decide anew.
RETRY_STATUSES = (404, 409)


def conflict_pause(attempt):
    """Jittered, growing pause before attempt ``attempt`` (1-based)."""
    time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6))))  # noqa: S311


def compare_and_swap(read, build, write, what, attempts):
    """Read, build a change, write it conditionally; retry on a conflict.

    :param read: ``() -> current`` (``None`` when the object is absent).
    :param build: ``current -> change``; ``None`` means nothing to write.
    :param write: ``(current, change) -> result``; must make the write
        conditional on what ``current`` was (its resourceVersion).
    :param what: the object, for the error, e.g. ``BareMetalHost ns/a``.
    :param attempts: the bound, ``[vmetal_kubernetes]max_conflict_retries``.
    :returns: ``write``'s result, or ``None`` when nothing was written.
    :raises vmetal_ironic.exception.StoreConflict: every attempt lost.
    """
    for attempt in range(attempts):
        if attempt:
            conflict_pause(attempt)
        current = read()
        change = build(current)
        if change is None:
            return None
        try:
            return write(current, change)
        except kube_client.ApiError as exc:
            if exc.status in RETRY_STATUSES:
                continue
            raise
    raise exception.StoreConflict(
        f'{what}: update lost to concurrent writers {attempts} times; '
        'try again')
