import logging

from vmetal_ironic.dhcp_agent import log_limit


def test_refusal_log_is_rate_limited(caplog):
    now = [0.0]
    limited = log_limit.LogLimiter(3, 10, what='refusals',
                                   clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(100):
            limited.warning('refused %s', 'x')
        assert limited.suppressed == 97
        now[0] = 11.0
        limited.warning('refused %s', 'y')
    # Three lines, the count of the 97 held back, then the new period's.
    assert len(caplog.records) == 5
    assert limited.suppressed == 97


def test_each_line_held_back_is_counted_by_the_callback():
    held = []
    limited = log_limit.LogLimiter(2, 1.0, on_suppress=lambda: held.append(1))
    assert [limited.allow(5.0) for _ in range(4)] == [True, True, False,
                                                      False]
    assert len(held) == 2
    # A new period allows lines again.
    assert limited.allow(6.0)
