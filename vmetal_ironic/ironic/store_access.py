"""The one store instance the plugins of an Ironic process share.

Ironic creates one DHCP provider per process and one network interface
object per hardware type; they all reach the same store through
:func:`get_store`, loaded on first use so that Ironic's configuration has
been parsed by then. Which store it is (local SQLite or Kubernetes) is
``[vmetal]store``; nothing here depends on the choice.
"""

import threading

from ironic.common import exception as ironic_exc

from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import exception
from vmetal_ironic import store as store_mod

_lock = threading.Lock()
_store = None


def get_store():
    """Return the process's store, loading it on first use.

    :raises ironic.common.exception.NetworkError: the store cannot be
        loaded (unknown name, unreadable file, unreachable cluster).
    """
    global _store
    if _store is not None:
        return _store
    # The lock only guards creating the object once per process; address
    # allocation itself is made atomic by the store, never by this lock.
    with _lock:
        if _store is None:
            try:
                store = store_mod.get_store(vmetal_conf.CONF)
            except exception.VmetalError as exc:
                raise ironic_exc.NetworkError(
                    f'vmetal store cannot be loaded: {exc}') from None
            _store = store
    return _store
