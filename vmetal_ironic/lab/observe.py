"""Reading what happened from the lab's logs: agent exchanges, TFTP reads
and HTTP requests. Pure text parsing, so the lab can poll cheaply."""

import re
import time

_HTTP_LINE = re.compile(r'^(\S+) - - \[[^\]]*\] "GET (\S+) HTTP/[\d.]+" (\d{3})',
                        re.M)


def http_requests(text):
    """``[(client, path, status)]`` from a ``http.server`` access log."""
    return [(client, path, int(status))
            for client, path, status in _HTTP_LINE.findall(text)]


def agent_exchanges(text, mac):
    """Agent log lines about ``mac``: DHCP replies it sent."""
    return [line for line in text.splitlines()
            if f'from {mac}' in line and (' OFFER ' in line or ' ACK ' in line)]


def tftp_reads(text, name):
    """Agent log lines of TFTP reads of ``name``."""
    return [line for line in text.splitlines()
            if 'TFTP read of' in line and name in line]


def wait_for(predicate, timeout=30.0, interval=0.1, failed=None, what=None):
    """Poll ``predicate`` until it returns something truthy; the one wait
    of the lab, the functional tests and the benchmarks.

    :param timeout: seconds before giving up.
    :param interval: seconds between two polls.
    :param failed: optional callable; a truthy result stops the wait early
        (a process died, say).
    :param what: what is waited for; when given, giving up raises
        :class:`TimeoutError` naming it (what a test wants) instead of
        returning ``None`` (what the lab, which reports it, wants).
    :returns: the predicate's result, or ``None`` on timeout / failure.
    :raises TimeoutError: only with ``what``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        if failed is not None and failed():
            break
        time.sleep(interval)
    if what is not None:
        raise TimeoutError(f'gave up after {timeout}s waiting for {what}')
    return None
