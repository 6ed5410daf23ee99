"""Unit-test session set-up.

tests/unit/ironic/base.py runs on Ironic's own test base, whose package
(``ironic.tests.unit``) selects oslo.service's threading backend when
imported, as Ironic's unit tests run. It is imported here, before any test
module, so that an Ironic module another test imports first cannot select
the eventlet default.
"""

import logging

import ironic.tests.unit  # noqa: F401 - imported for its set-up
import pytest


@pytest.fixture(autouse=True)
def _our_loggers_enabled(monkeypatch):
    """Keep this package's loggers enabled in every test.

    Ironic's database set-up runs alembic, whose ``fileConfig`` disables
    every logger that exists at that moment; a later test that observes
    what our code logs would then see nothing, depending on test order.
    """
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith('vmetal_ironic') and isinstance(
                logger, logging.Logger):
            monkeypatch.setattr(logger, 'disabled', False)
