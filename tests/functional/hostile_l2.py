"""A provisioning L2 with someone hostile on it, made of namespaces.

A :class:`~vmetal_ironic.lab.netns.Topology` (a bridge in a hub
namespace): ``agent`` (198.51.100.1/24) runs the servers under test
(:mod:`tests.functional.boot_server_ns`); ``hostile`` (198.51.100.2, plus
the addresses it forges or owns) and ``client`` (198.51.100.3, a real
client) are the other hosts. Veth pairs of MTU 1500; everything is
removed on exit, by the names made here.
"""

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time

from vmetal_ironic.lab import netns

AGENT = '198.51.100.1'
HOSTILE = '198.51.100.2'
CLIENT = '198.51.100.3'
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class Lan:
    """The three hosts; :meth:`python` executes Python in one."""

    def __init__(self, topology, hosts):
        self.topology = topology
        self.hosts = hosts

    def ns(self, role):
        return self.hosts[role][0]

    def popen(self, role, argv, **kwargs):
        return subprocess.Popen(['ip', 'netns', 'exec', self.ns(role),
                                 *argv], **kwargs)

    def python(self, role, code, *args, timeout=120):
        """Run ``code`` with this interpreter in ``role``'s namespace.

        :returns: the JSON the code printed last.
        """
        done = subprocess.run(
            ['ip', 'netns', 'exec', self.ns(role), sys.executable, '-c',
             code, *[json.dumps(a) for a in args]], capture_output=True,
            text=True, timeout=timeout, cwd=REPO, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def lan(workdir, hostile_addresses=()):
    """Make the namespaces; yields a :class:`Lan`.

    :param hostile_addresses: more addresses of the ``hostile`` namespace
        (the sources it sends from, or forges).
    """
    topology = netns.Topology(workdir, prefix='vh')
    try:
        hosts = {role: topology.host(role[:2], f'{address}/24')
                 for role, address in (('agent', AGENT),
                                       ('hostile', HOSTILE),
                                       ('client', CLIENT))}
        if hostile_addresses:
            namespace, interface = hosts['hostile']
            batch = ''.join(f'addr add {a}/24 dev {interface}\n'
                            for a in hostile_addresses)
            subprocess.run(['ip', '-n', namespace, '-b', '-'], input=batch,
                           text=True, check=True, timeout=60,
                           capture_output=True)
        yield Lan(topology, hosts)
    finally:
        topology.close()


class Servers:
    """The boot servers running in the ``agent`` namespace."""

    def __init__(self, lan, root, tftp_settings, http_settings=None):
        settings = {'root': str(root), 'address': AGENT,
                    'tftp': tftp_settings}
        if http_settings is not None:
            settings['http'] = http_settings
        self.proc = lan.popen(
            'agent', [sys.executable, '-m',
                      'tests.functional.boot_server_ns',
                      json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=REPO)
        line = self.proc.stdout.readline()
        assert line.strip() == 'READY', line

    def ask(self, command):
        self.proc.stdin.write(command + '\n')
        self.proc.stdin.flush()
        if command == 'sessions':
            return int(self.proc.stdout.readline())
        if command == 'data_path':
            return self.proc.stdout.readline().strip()
        lines = []
        for line in self.proc.stdout:
            if line.strip() == 'END':
                break
            lines.append(line)
        return ''.join(lines)

    def metric(self, name, labels=''):
        """:returns: the value of one sample (0 when absent)."""
        prefix = f'{name}{{{labels}}} ' if labels else f'{name} '
        for line in self.ask('metrics').splitlines():
            if line.startswith(prefix):
                return float(line.split()[-1])
        return 0.0

    def cpu_seconds(self):
        # utime + stime, every thread of the server process.
        fields = pathlib.Path(f'/proc/{self.proc.pid}/stat').read_text(
        ).rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf(
            'SC_CLK_TCK')

    def wait_idle(self, limit):
        give_up = time.monotonic() + limit
        while self.ask('sessions') and time.monotonic() < give_up:
            time.sleep(0.2)
        return self.ask('sessions')

    def close(self):
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
