"""How vmetal's errors reach Ironic: one mapping, by whose fault it is.

Ironic reports what a driver raises on the node (``last_error``, the
validate API) and only keeps its conductor healthy if nothing unexpected
escapes. Every vmetal entry point of the Ironic plugins runs its store and
domain work through :func:`call` (or :func:`best_effort` where a failure
must not stop the state change), so an error is turned into Ironic's
exception types here and nowhere else:

* bad input (:class:`~vmetal_ironic.exception.PermanentError`: a property,
  a network-data document) becomes ``InvalidParameterValue`` (a 400 from
  the validate API); the message names the value and the property layer
  it came from (:func:`vmetal_ironic.properties.resolve` adds that);
* deployment trouble (:class:`~vmetal_ironic.exception.DeploymentError`:
  permissions, a missing namespace, an unwritable database) becomes the
  caller's ``failure`` type (``NetworkError`` by default) with the message
  saying what to fix;
* temporary trouble (:class:`~vmetal_ironic.exception.TemporaryError`: a
  locked, contended or unreachable store) is retried once after its
  ``retry_after`` (at most :data:`RETRY_PAUSE_MAX`; the work is idempotent),
  then becomes ``failure`` saying it is temporary;
* anything else - a bug, or a client library's own exception - is logged
  with its traceback and becomes ``failure``.

Ironic's own exceptions pass through unchanged.
"""

import time

from ironic.common import exception as ironic_exc
from oslo_config import cfg
from oslo_log import log

from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import deadline
from vmetal_ironic import exception

LOG = log.getLogger(__name__)

# One retry of temporary trouble, at most this long after the failure:
# the caller holds the node's lock meanwhile.
ATTEMPTS = 2
RETRY_PAUSE_MAX = 2.0


def _uuid(task):
    return task if isinstance(task, str) else task.node.uuid


def translate(task, action, exc, failure=ironic_exc.NetworkError):
    """The Ironic exception to raise for ``exc``.

    :param task: the TaskManager of the node, or the node's UUID where no
        task is held (a conductor periodic).
    :param action: what failed, completing "cannot ... node <uuid>", e.g.
        ``'allocate an address for'``.
    :param exc: the exception raised.
    :param failure: the Ironic exception class for what is not bad input.
    :returns: an ``IronicException`` instance.
    """
    prefix = f'vmetal: cannot {action} node {_uuid(task)}'
    if isinstance(exc, ironic_exc.IronicException):
        return exc
    if isinstance(exc, exception.PermanentError):
        return ironic_exc.InvalidParameterValue(err=f'{prefix}: {exc}')
    if isinstance(exc, exception.DeploymentError):
        return failure(f'{prefix}: {exc}')
    if isinstance(exc, exception.TemporaryError):
        return failure(f'{prefix}: {exc} (temporary: retry the operation)')
    LOG.error('vmetal: unexpected error; cannot %(action)s node %(node)s',
              {'action': action, 'node': _uuid(task)}, exc_info=exc)
    return failure(f'{prefix}: unexpected {type(exc).__name__}: {exc}')


def call(task, action, func, *args, failure=ironic_exc.NetworkError,
         **kwargs):
    """Run ``func(*args, **kwargs)``, raising only Ironic's exceptions.

    Temporary trouble is retried once (see the module docstring).

    :param task: see :func:`translate`.
    :param action: see :func:`translate`.
    :param func: the idempotent work.
    :param failure: see :func:`translate`.
    :returns: what ``func`` returns.
    :raises ironic.common.exception.InvalidParameterValue: bad input.
    :raises ironic.common.exception.IronicException: ``failure``, for
        everything else.
    """
    with deadline.within(_store_deadline()):
        return _call(task, action, func, args, kwargs, failure)


def _store_deadline():
    try:
        return vmetal_conf.CONF.vmetal_ironic.store_deadline
    except (AttributeError, cfg.NoSuchOptError):
        return None


def _call(task, action, func, args, kwargs, failure):
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return func(*args, **kwargs)
        except exception.TemporaryError as exc:
            left = deadline.remaining()
            if attempt < ATTEMPTS and (left is None or left > 1.0):
                LOG.debug('vmetal: node %(node)s: %(err)s; retrying once',
                          {'node': _uuid(task), 'err': exc})
                time.sleep(min(exc.retry_after, RETRY_PAUSE_MAX))
                continue
            raise translate(task, action, exc, failure) from None
        except Exception as exc:
            raise translate(task, action, exc, failure) from None
    raise AssertionError('unreachable: the last attempt returns or raises')


def best_effort(task, action, func, *args, default=None, **kwargs):
    """Run ``func`` like :func:`call`, but log a failure instead of raising.

    For work whose failure must not fail the node's state change (leaving
    the provisioning network, reading addresses for PXE config links): one
    warning saying what could not be done and why.

    :returns: what ``func`` returns, or ``default`` after a failure.
    """
    try:
        return call(task, action, func, *args, **kwargs)
    except ironic_exc.IronicException as exc:
        LOG.warning('%s', exc)
        return default
