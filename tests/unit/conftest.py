"""Unit-test session set-up.

tests/unit/ironic/base.py runs on Ironic's own test base, whose package
(``ironic.tests.unit``) selects oslo.service's threading backend when
imported, as Ironic's unit tests run. It is imported here, before any test
module, so that an Ironic module another test imports first cannot select
the eventlet default.
"""

import ironic.tests.unit  # noqa: F401 - imported for its set-up
