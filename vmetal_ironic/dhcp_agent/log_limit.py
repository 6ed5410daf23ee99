"""A bound on how many log lines one source may write.

The agent answers anyone on the L2: a flood of garbage, unknown MACs or
refused TFTP/HTTP requests must not become a flood of log writes that
slows the answers to known hosts or fills a disk. Lines over the bound are
counted (and, when asked, reported as one line when the next period
starts).
"""

import time

from oslo_log import log

LOG = log.getLogger(__name__)


class LogLimiter:
    """At most ``lines`` log lines per ``period`` seconds.

    :param lines: lines allowed per period.
    :param period: seconds.
    :param on_suppress: optional callable run for each line held back
        (a metric's ``inc``).
    :param what: what the lines are about; when given, the count held
        back in a period is logged once the next one starts.
    :param clock: monotonic clock (tests pass their own).
    """

    def __init__(self, lines, period=1.0, on_suppress=None, what=None,
                 clock=time.monotonic):
        self.lines = lines
        self.period = period
        self.on_suppress = on_suppress
        self.what = what
        self._clock = clock
        #: Lines held back since the limiter was made.
        self.suppressed = 0
        self._window = None
        self._count = 0
        self._held_back = 0

    def allow(self, now=None):
        """:returns: whether one more line may be written now."""
        now = self._clock() if now is None else now
        window = int(now // self.period)
        if window != self._window:
            if self._held_back and self.what:
                LOG.warning('%d more lines about %s were not logged',
                            self._held_back, self.what)
            self._window = window
            self._count = 0
            self._held_back = 0
        self._count += 1
        if self._count <= self.lines:
            return True
        self.suppressed += 1
        self._held_back += 1
        if self.on_suppress is not None:
            self.on_suppress()
        return False

    def warning(self, message, *args, exc_info=False):
        """Log a WARNING through the limiter."""
        if self.allow():
            LOG.warning(message, *args, exc_info=exc_info)
