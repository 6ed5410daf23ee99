"""Network namespaces joined by a bridge: a throw-away provisioning L2.

Every namespace and link is named with a random prefix, so several labs
(and test runs) can live side by side, and every process started through
:meth:`Topology.spawn` is remembered by PID. :meth:`Topology.close` kills
those processes, then anything left inside the lab's namespaces, then
deletes the namespaces; it is safe to call twice and after a failure.
"""

import contextlib
import os
import pathlib
import secrets
import signal
import subprocess


def run(*argv, timeout=30, check=True):
    """Run a command and capture its output (text).

    :raises subprocess.CalledProcessError: when ``check`` and it failed.
    """
    return subprocess.run(argv, capture_output=True, text=True,
                          timeout=timeout, check=check)


class Topology:
    """A hub namespace holding bridge ``br0``, and hosts plugged into it.

    :param workdir: directory for process logs.
    :param prefix: name prefix; a random suffix is appended.
    """

    def __init__(self, workdir, prefix='vlab'):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix + secrets.token_hex(2)
        self.hub = self.prefix + 'h'
        self.namespaces = []
        self.processes = []
        self._links = 0
        self._add_namespace(self.hub)
        run('ip', '-n', self.hub, 'link', 'add', 'br0', 'type', 'bridge',
            'forward_delay', '0')
        run('ip', '-n', self.hub, 'link', 'set', 'br0', 'up')

    def _add_namespace(self, name):
        run('ip', 'netns', 'add', name)
        self.namespaces.append(name)
        run('ip', '-n', name, 'link', 'set', 'lo', 'up')

    def host(self, label, address=None, mac=None):
        """A namespace with one veth interface on the bridge.

        :param label: short suffix of the namespace name.
        :param address: ``ip/prefix`` to configure, if any.
        :param mac: MAC address of the interface, if it matters.
        :returns: ``(namespace, interface)``.
        """
        self._links += 1
        namespace = f'{self.prefix}{label}'
        self._add_namespace(namespace)
        inner = f'{self.prefix}i{self._links}'
        outer = f'{self.prefix}o{self._links}'
        run('ip', 'link', 'add', inner, 'type', 'veth', 'peer', 'name', outer)
        run('ip', 'link', 'set', outer, 'netns', self.hub)
        run('ip', 'link', 'set', inner, 'netns', namespace)
        run('ip', '-n', self.hub, 'link', 'set', outer, 'master', 'br0', 'up')
        if mac:
            run('ip', '-n', namespace, 'link', 'set', inner, 'address', mac)
        if address:
            run('ip', '-n', namespace, 'addr', 'add', address, 'dev', inner)
        run('ip', '-n', namespace, 'link', 'set', inner, 'up')
        return namespace, inner

    def namespace(self, label):
        """A namespace of the lab with only its loopback (no bridge).

        :returns: its name.
        """
        name = f'{self.prefix}{label}'
        self._add_namespace(name)
        return name

    def wire(self, first, second, first_address, second_address):
        """A veth pair between two of the lab's namespaces, off the bridge:
        a network of its own (the cluster side of a two-network lab).

        :param first_address: ``ip/prefix`` of ``first``'s end.
        :param second_address: ``ip/prefix`` of ``second``'s end.
        :returns: ``(first's interface, second's interface)``.
        """
        self._links += 1
        one = f'{self.prefix}w{self._links}a'
        two = f'{self.prefix}w{self._links}b'
        run('ip', 'link', 'add', one, 'type', 'veth', 'peer', 'name', two)
        for namespace, name, address in ((first, one, first_address),
                                         (second, two, second_address)):
            run('ip', 'link', 'set', name, 'netns', namespace)
            run('ip', '-n', namespace, 'addr', 'add', address, 'dev', name)
            run('ip', '-n', namespace, 'link', 'set', name, 'up')
        return one, two

    def tap(self):
        """A tap device on the bridge, for a VM started in :attr:`hub`.

        :returns: the tap device name.
        """
        self._links += 1
        name = f'{self.prefix}t{self._links}'
        run('ip', '-n', self.hub, 'tuntap', 'add', 'dev', name, 'mode', 'tap')
        run('ip', '-n', self.hub, 'link', 'set', name, 'master', 'br0', 'up')
        return name

    def spawn(self, namespace, argv, log_name, **kwargs):
        """Start ``argv`` inside ``namespace``, output to a log file.

        :param namespace: a namespace name, or ``None`` for the host's
            (the process is still the lab's: :meth:`close` stops it).
        :returns: the ``subprocess.Popen``.
        """
        prefix = ['ip', 'netns', 'exec', namespace] if namespace else []
        with open(self.workdir / log_name, 'ab') as log:
            proc = subprocess.Popen([*prefix, *argv],
                                    stdout=log, stderr=subprocess.STDOUT,
                                    **kwargs)
        self.processes.append(proc)
        return proc

    def exec(self, namespace, *argv, timeout=30, check=True):
        """Run a command inside ``namespace`` and wait for it."""
        return run('ip', 'netns', 'exec', namespace, *argv, timeout=timeout,
                   check=check)

    @staticmethod
    def stop(proc, timeout=10):
        """SIGTERM, then SIGKILL if ``proc`` does not exit in time."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self):
        """Kill every process of the lab and delete its namespaces."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        for namespace in self.namespaces:
            pids = run('ip', 'netns', 'pids', namespace,
                       check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for namespace in reversed(self.namespaces):
            run('ip', 'netns', 'del', namespace, check=False)
        self.namespaces = []
        self.processes = []
