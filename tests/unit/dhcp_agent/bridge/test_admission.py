from vmetal_ironic.dhcp_agent.bridge import admission


def test_one_client_cannot_take_every_slot():
    gate = admission.Admission(total=3, per_client=2)
    assert gate.enter('a') is None and gate.enter('a') is None
    assert gate.enter('a') == 'client_limit'
    assert gate.enter('b') is None
    assert gate.enter('c') == 'busy'
    gate.leave('a')
    assert gate.enter('c') is None
    assert len(gate) == 3


def test_leaving_forgets_idle_clients():
    gate = admission.Admission(total=10, per_client=1)
    for name in 'abc':
        assert gate.enter(name) is None
        gate.leave(name)
    assert len(gate) == 0 and not gate._held
