"""The real ``vmetal-ipam-controller`` command on the test cluster, as a
process of its own (a SIGKILL is a real death), with its metrics endpoint
scraped: for the functional tests and bench/bench_ipam_controller.py."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import urllib.request

from prometheus_client import parser as prometheus_parser

# The test's Lease timing: a takeover within seconds.
FAST_LEASE = {'lease_duration': 4, 'renew_deadline': 3, 'retry_period': 0.5}


def free_port():
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def scrape(port):
    """``{(name, label values by label name...): value}`` of the endpoint
    on loopback ``port``."""
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics',
                                timeout=10) as answer:
        text = answer.read().decode()
    return {(sample.name, *(value for _, value in sorted(
                sample.labels.items()))): sample.value
            for family in prometheus_parser.text_string_to_metric_families(
                text) for sample in family.samples}


class ControllerProcess:
    """One controller process of ``identity`` on ``namespace``.

    :param settings: ``[vmetal_kubernetes]`` values
        (``KubeCluster.settings``).
    :param workdir: where its configuration and log go.
    :param options: ``[vmetal_ipam_controller]`` values beside
        :data:`FAST_LEASE` (which they may override).
    :param env: environment variables added to this process's.
    """

    def __init__(self, settings, workdir, identity, env=None, **options):
        self.identity = identity
        self.port = free_port()
        lines = ['[DEFAULT]', 'use_stderr = true', '[vmetal]',
                 'store = kubernetes', '[vmetal_kubernetes]']
        for key, value in settings.items():
            if isinstance(value, list):
                value = ','.join(value)
            lines.append(f'{key} = {value}')
        controller = dict(FAST_LEASE, identity=identity,
                          metrics_port=self.port, **options)
        lines.append('[vmetal_ipam_controller]')
        lines += [f'{key} = {value}' for key, value in controller.items()]
        workdir = pathlib.Path(workdir)
        config = workdir / f'{identity}.conf'
        config.write_text('\n'.join(lines) + '\n')
        self.log = workdir / f'{identity}.log'
        with open(self.log, 'wb') as log:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'vmetal_ironic.cmd.ipam_controller',
                 '--config-file', str(config)], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, env=dict(os.environ, **(env or {})))

    @property
    def pid(self):
        return self.process.pid

    def metrics(self):
        """What its endpoint says, or ``{}`` while it does not answer."""
        try:
            return scrape(self.port)
        except OSError:
            return {}

    def peak_rss(self):
        """The process's peak resident memory in bytes (VmHWM)."""
        status = pathlib.Path(f'/proc/{self.pid}/status').read_text()
        for line in status.splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
        return 0

    def kill(self):
        """SIGKILL: the Lease is left to expire."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout=15):
        """SIGTERM (a leader gives its Lease up); :returns: the exit
        status. A process still running after ``timeout`` seconds is
        killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode
