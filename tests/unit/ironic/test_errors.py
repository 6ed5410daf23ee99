"""The one mapping of vmetal errors to Ironic's exception types.

The errors are raised by plain functions: each category is a class of
:mod:`vmetal_ironic.exception`, and what a store raises for real is
covered where the store is (tests/unit/store, tests/functional)."""

import types

import pytest
from ironic.common import exception as ironic_exc

from vmetal_ironic import conf as vmetal_conf
from vmetal_ironic import deadline
from vmetal_ironic import exception
from vmetal_ironic.ironic import errors

UUID = '1be26c0b-03f2-4d2e-ae87-c02d7f33c123'
TASK = types.SimpleNamespace(node=types.SimpleNamespace(uuid=UUID))


def raising(*excs, result='done'):
    pending = list(excs)
    calls = []

    def func(*args, **kwargs):
        calls.append((args, kwargs))
        if pending:
            raise pending.pop(0)
        return result
    func.calls = calls
    return func


def test_bad_input_is_an_invalid_parameter_naming_the_value():
    func = raising(exception.InvalidProperty(
        "network-cidr 'x' is bad (from node extra)"))
    with pytest.raises(ironic_exc.InvalidParameterValue) as info:
        errors.call(TASK, 'resolve the network of', func, 1, key='v')
    assert str(info.value) == (
        f"vmetal: cannot resolve the network of node {UUID}: network-cidr "
        "'x' is bad (from node extra)")
    # Bad input is not retried.
    assert func.calls == [((1,), {'key': 'v'})]


def test_deployment_trouble_is_the_failure_type_saying_what_to_fix():
    func = raising(exception.DeploymentError('namespace missing; create it'))
    with pytest.raises(ironic_exc.NetworkError) as info:
        errors.call(TASK, 'allocate an address for', func)
    assert str(info.value) == (f'vmetal: cannot allocate an address for node '
                               f'{UUID}: namespace missing; create it')
    assert len(func.calls) == 1
    func = raising(exception.DeploymentError('read-only'))
    with pytest.raises(ironic_exc.FailedToCleanDHCPOpts):
        errors.call(TASK, 'withdraw the reservations of', func,
                    failure=ironic_exc.FailedToCleanDHCPOpts)


def test_temporary_trouble_is_retried_once():
    func = raising(exception.StoreConflict('lost', retry_after=0.0))
    assert errors.call(TASK, 'allocate an address for', func) == 'done'
    assert len(func.calls) == 2
    func = raising(exception.StoreUnavailable('locked', retry_after=0.0),
                   exception.StoreUnavailable('still locked', retry_after=0.0))
    with pytest.raises(ironic_exc.NetworkError) as info:
        errors.call(TASK, 'allocate an address for', func)
    assert str(info.value).endswith(
        'still locked (temporary: retry the operation)')
    assert len(func.calls) == 2


def test_unexpected_errors_never_escape_untranslated():
    func = raising(KeyError('spec'))
    with pytest.raises(ironic_exc.FailedToUpdateDHCPOptOnPort) as info:
        errors.call(TASK, 'publish the reservation of x for', func,
                    failure=ironic_exc.FailedToUpdateDHCPOptOnPort)
    assert "unexpected KeyError: 'spec'" in str(info.value)


def test_ironic_exceptions_pass_through():
    original = ironic_exc.NetworkError('vmetal store cannot be loaded')
    with pytest.raises(ironic_exc.NetworkError) as info:
        errors.call(TASK, 'x', raising(original))
    assert info.value is original


def test_best_effort_gives_the_default():
    func = raising(exception.DeploymentError('forbidden'))
    assert errors.best_effort(UUID, 'release 192.0.2.5 of deleted', func,
                              default=False) is False
    assert errors.best_effort(TASK, 'read', raising(), default=[]) == 'done'


def test_13_no_retry_once_the_store_deadline_is_nearly_spent():
    vmetal_conf.CONF.set_override('store_deadline', 1.0,
                                  group='vmetal_ironic')
    try:
        seen = []

        def slow_then_down():
            seen.append(deadline.remaining())
            raise exception.StoreUnavailable('down', retry_after=0.0)

        with pytest.raises(ironic_exc.NetworkError, match='down'):
            errors.call(TASK, 'allocate an address for', slow_then_down)
        # One attempt, made with the operation's deadline in force.
        assert len(seen) == 1 and 0 < seen[0] <= 1.0
    finally:
        vmetal_conf.CONF.clear_override('store_deadline',
                                        group='vmetal_ironic')
    assert deadline.remaining() is None
