"""The lab's vmetal-ipam-controller: started whenever the lab runs the
Kubernetes store, as a cluster runs its Deployment.

It runs in the root namespace (the API server is on this machine's
loopback), logs to ``<workdir>/ipam-controller.log`` and is stopped by
the PID it was started with; a clean stop gives its Lease up.
"""

import subprocess
import sys

STOP_TIMEOUT = 15


def command(config):
    """The controller's command line for configuration file ``config``."""
    return [sys.executable, '-m', 'vmetal_ironic.cmd.ipam_controller',
            '--config-file', str(config)]


class ControllerProcess:
    """One ``vmetal-ipam-controller`` process.

    :param config: its configuration file (``[vmetal]``,
        ``[vmetal_kubernetes]``, optionally ``[vmetal_ipam_controller]``).
    :param workdir: where its log goes (a ``pathlib.Path``).
    """

    def __init__(self, config, workdir):
        self.config = config
        self.log = workdir / 'ipam-controller.log'
        self.process = None

    def start(self):
        with open(self.log, 'ab') as log:
            self.process = subprocess.Popen(
                command(self.config), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        return self.process.pid

    def running(self):
        return self.process is not None and self.process.poll() is None

    def stop(self):
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self.process = None
