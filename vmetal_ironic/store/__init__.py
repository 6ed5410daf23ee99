"""Stores: where allocations, network data and reservations live.

The store is chosen by ``[vmetal]store`` and loaded through the
``vmetal_ironic.stores`` entry points, so the Ironic plugins, the DHCP agent
and the CLI work unchanged on either implementation.
"""

from stevedore import driver

from vmetal_ironic import exception

NAMESPACE = 'vmetal_ironic.stores'


def get_store(conf):
    """Load the configured store.

    :param conf: an oslo.config ``ConfigOpts`` with the vmetal groups.
    :returns: a :class:`vmetal_ironic.store.base.Store`.
    :raises vmetal_ironic.exception.PermanentError: unknown store name.
    """
    name = conf.vmetal.store
    try:
        manager = driver.DriverManager(NAMESPACE, name, invoke_on_load=True,
                                       invoke_args=(conf,))
    except (RuntimeError, LookupError) as exc:
        # stevedore raises NoMatches (a RuntimeError) for unknown names.
        raise exception.PermanentError(
            f'[vmetal]store {name!r} is not an installed store '
            f'({exc.__class__.__name__})') from None
    return manager.driver
