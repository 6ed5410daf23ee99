"""A throw-away PXE lab: namespaces on one bridge, agents, clients, VMs.

Every name starts with ``vpx`` and a random suffix; every address is from
the documentation ranges. :meth:`Lab.close` kills what the lab started
(by PID), then anything still living in its namespaces, then deletes the
namespaces, so a failed test leaves nothing behind.
"""

import os
import pathlib
import shutil
import sys
import textwrap
import time

import pytest

from vmetal_ironic.lab import netns
from vmetal_ironic.lab import observe
# The one wait (tests pass ``what=`` and get a TimeoutError naming it).
from vmetal_ironic.lab.observe import wait_for
from vmetal_ironic.reservation import BootOptions  # noqa: F401 - re-export
from vmetal_ironic.reservation import Reservation
from vmetal_ironic.store.local import LocalStore

BIN = pathlib.Path(sys.executable).parent
AGENT = str(BIN / 'vmetal-dhcp-agent')


run = netns.run


def read_env(path):
    env = {}
    for line in pathlib.Path(path).read_text().splitlines():
        key, _, value = line.partition('=')
        env[key] = value.strip("'")
    return env


class Lab(netns.Topology):
    """The lab's namespaces on one bridge, plus a local store and agents."""

    def __init__(self, workdir):
        super().__init__(workdir, prefix='vpx')
        self.store_path = self.workdir / 'vmetal.sqlite'
        self.store = LocalStore(path=str(self.store_path))

    def node(self, label, address=None, mac=None):
        """A namespace with one interface on the bridge.

        :returns: ``(namespace, interface)``.
        """
        return self.host(label, address=address, mac=mac)

    def ns_run(self, ns, *argv, timeout=30, check=True):
        return self.exec(ns, *argv, timeout=timeout, check=check)

    def recreate_link(self, ns, interface, address):
        """Delete ``ns``'s interface (both veth ends go) and create it
        again with the same names and ``address``: what a network restart
        or a re-plugged attachment does. The new interface has a new
        index."""
        outer = self.prefix + 'o' + interface[len(self.prefix) + 1:]
        run('ip', '-n', ns, 'link', 'del', interface)
        run('ip', 'link', 'add', interface, 'type', 'veth', 'peer', 'name',
            outer)
        run('ip', 'link', 'set', outer, 'netns', self.hub)
        run('ip', 'link', 'set', interface, 'netns', ns)
        run('ip', '-n', self.hub, 'link', 'set', outer, 'master', 'br0', 'up')
        run('ip', '-n', ns, 'addr', 'add', address, 'dev', interface)
        run('ip', '-n', ns, 'link', 'set', interface, 'up')

    def reserve(self, mac, address, **kwargs):
        kwargs.setdefault('prefixlen', 24)
        reservation = Reservation(mac=mac, address=address, **kwargs)
        self.store.publish_reservation(reservation)
        return reservation

    # -- the agent --------------------------------------------------------

    def start_agent(self, ns, interface, name='agent', metrics_port=9567,
                    extra=''):
        """Start vmetal-dhcp-agent and wait until it serves.

        :returns: an :class:`AgentProcess`.
        """
        conf = self.workdir / f'{name}.conf'
        conf.write_text(textwrap.dedent(f"""\
            [DEFAULT]
            debug = true
            [vmetal_local_store]
            database = {self.store_path}
            [vmetal_dhcp_agent]
            interface = {interface}
            poll_interval = 0.2
            metrics_host = 0.0.0.0
            metrics_port = {metrics_port}
            """) + textwrap.dedent(extra))
        log_name = f'{name}.log'
        proc = self.spawn(ns, [AGENT, '--config-file', str(conf)], log_name)
        agent = AgentProcess(self, ns, proc, self.workdir / log_name,
                             metrics_port)
        # The metrics endpoint opens last in start(): once it answers, the
        # agent serves.
        wait_for(lambda: proc.poll() is not None or agent.ready(), 20,
                 interval=0.2, what='agent start')
        assert proc.poll() is None, agent.log()
        return agent

    def close(self):
        super().close()
        self.store.close()


class AgentProcess:
    def __init__(self, lab, ns, proc, log_path, metrics_port):
        self.lab = lab
        self.ns = ns
        self.proc = proc
        self.log_path = log_path
        self.metrics_port = metrics_port

    def log(self):
        try:
            return self.log_path.read_text(errors='replace')
        except FileNotFoundError:
            return ''

    def metrics(self):
        """``{'name{labels}': value}`` from the metrics endpoint."""
        code = ('import urllib.request,sys;'
                'sys.stdout.write(urllib.request.urlopen('
                f'"http://127.0.0.1:{self.metrics_port}/metrics",'
                'timeout=5).read().decode())')
        text = self.lab.ns_run(self.ns, sys.executable, '-c', code).stdout
        values = {}
        for line in text.splitlines():
            if line.startswith('#') or not line.strip():
                continue
            key, _, value = line.rpartition(' ')
            values[key] = float(value)
        return values

    def ready(self):
        """``True`` once the metrics endpoint answers."""
        try:
            self.metrics()
        except Exception:  # not listening yet
            return False
        return True

    def metric(self, key):
        return self.metrics().get(key, 0.0)

    def wait_metric(self, key, minimum, timeout=10):
        """Wait until ``key`` reaches ``minimum``: a count the agent makes
        once a transfer or a store write is answered, which may come a
        moment after the client saw the result."""
        wait_for(lambda: self.metric(key) >= minimum, timeout, interval=0.1,
                 what=f'{key} >= {minimum}')

    def serves_revision(self, revision):
        """The agent loaded the store's ``revision`` (a metric, not log
        text)."""
        return self.metric(
            f'vmetal_dhcp_store_info{{revision="{revision}"}}') == 1.0

    def wait_loaded(self, timeout=20):
        """Wait until the agent serves the store's current revision."""
        revision = self.lab.store.reservations_revision()
        wait_for(lambda: self.serves_revision(revision), timeout,
                 interval=0.1, what=f'revision {revision} loaded')


# -- clients ---------------------------------------------------------------

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
bound) env > "$VPX_OUT.tmp"; mv "$VPX_OUT.tmp" "$VPX_OUT" ;;
renew) env > "$VPX_OUT.tmp"; mv "$VPX_OUT.tmp" "$VPX_OUT.renew" ;;
esac
exit 0
"""

# A udhcpc that keeps running and configures its address, so that it can
# renew by unicast like a real host.
UDHCPC_KEEP_SCRIPT = """#!/bin/sh
case "$1" in
bound)
    ip addr replace "$ip/$mask" dev "$interface"
    env > "$VPX_OUT.tmp"; mv "$VPX_OUT.tmp" "$VPX_OUT" ;;
renew) env > "$VPX_OUT.tmp"; mv "$VPX_OUT.tmp" "$VPX_OUT.renew" ;;
esac
exit 0
"""


def udhcpc_daemon(lab, ns, interface, name):
    """Start udhcpc in the foreground without quitting after the lease.

    :returns: ``(process, env_path)``; ``env_path`` appears once bound and
        ``env_path.renew`` after each renewal.
    """
    script = lab.workdir / 'udhcpc-keep.sh'
    script.write_text(UDHCPC_KEEP_SCRIPT)
    script.chmod(0o755)
    out = lab.workdir / f'{name}.env'
    proc = lab.spawn(ns, ['env', f'VPX_OUT={out}', 'busybox', 'udhcpc',
                          '-i', interface, '-f', '-s', str(script), '-t',
                          '3', '-T', '1'], f'{name}.log')
    return proc, out

# dhclient runs its script with a clean environment: the output path is
# written into each script. Scripts write a temporary file and rename it so
# the test never reads a half-written file.
DHCLIENT_SCRIPT = """#!/bin/sh
case "$reason" in
BOUND|REBOOT|RENEW)
    ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
    env > "{out}.tmp"; mv "{out}.tmp" "{out}" ;;
RELEASE|EXPIRE|STOP)
    ip addr flush dev "$interface" ;;
esac
exit 0
"""


def udhcpc(lab, ns, interface, name, vendor_class=None, tries=3,
           timeout=30, extra=()):
    """Run busybox udhcpc once; returns its environment on bound, or
    ``None`` when it got no lease."""
    script = lab.workdir / 'udhcpc.sh'
    if not script.exists():
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
    out = lab.workdir / f'{name}.env'
    argv = ['env', f'VPX_OUT={out}', 'busybox', 'udhcpc', '-i', interface,
            '-n', '-q', '-f', '-s', str(script), '-t', str(tries), '-T', '1',
            '-A', '1']
    if vendor_class:
        argv += ['-V', vendor_class]
    argv += list(extra)
    result = lab.ns_run(ns, *argv, timeout=timeout, check=False)
    if result.returncode != 0:
        return None
    return read_env(out)


def dhclient(lab, ns, interface, name, release=False, timeout=40):
    """Run ISC dhclient until it binds (then stop it by PID); with
    ``release``, send a RELEASE for the lease in its lease file.

    :returns: the script environment on bound, else ``None``.
    """
    out = lab.workdir / f'{name}.env'
    script = lab.workdir / f'{name}.sh'
    script.write_text(DHCLIENT_SCRIPT.format(out=out))
    script.chmod(0o755)
    conf = lab.workdir / 'dhclient.conf'
    conf.write_text('timeout 20;\nretry 1;\nrequest subnet-mask, routers, '
                    'domain-name-servers, host-name;\n')
    lease = lab.workdir / f'{name}.leases'
    pid = lab.workdir / f'{name}.pid'
    base = ['dhclient', '-sf', str(script), '-cf',
            str(conf), '-lf', str(lease), '-pf', str(pid)]
    if release:
        lab.ns_run(ns, *base, '-r', interface, timeout=timeout)
        return None
    out.unlink(missing_ok=True)
    proc = lab.spawn(ns, [*base, '-d', '-1', interface], f'{name}.log')
    try:
        wait_for(lambda: out.exists() or proc.poll() is not None, timeout,
                 what='dhclient to bind')
        return read_env(out) if out.exists() else None
    finally:
        lab.stop(proc)


def http_server(lab, ns, address, port, root):
    """A static HTTP server whose access log says who asked what."""
    root = pathlib.Path(root)
    root.mkdir(exist_ok=True)
    log_name = f'http-{port}.log'
    proc = lab.spawn(ns, [sys.executable, '-u', '-m', 'http.server',
                          '--bind', address, '--directory', str(root),
                          str(port)], log_name)
    path = lab.workdir / log_name
    wait_for(lambda: 'Serving HTTP' in path.read_text(), 10,
             what='http server')
    return proc, path


def http_requests(log_path):
    """``[(client_address, path)]`` from an http.server access log."""
    text = pathlib.Path(log_path).read_text(errors='replace')
    return [(client, path)
            for client, path, _status in observe.http_requests(text)]


def tftp_root(workdir):
    """A TFTP root with real iPXE binaries, a symlink escaping it and a
    secret next to it."""
    root = pathlib.Path(workdir) / 'tftp'
    root.mkdir(exist_ok=True)
    for name in ('undionly.kpxe', 'snponly.efi'):
        shutil.copy(f'/usr/lib/ipxe/{name}', root / name)
    shutil.copy(os.path.realpath('/usr/lib/ipxe/ipxe.efi'), root / 'ipxe.efi')
    secret = pathlib.Path(workdir) / 'secret.txt'
    secret.write_text('not for tftp\n')
    link = root / 'escape.txt'
    if not link.is_symlink():
        link.symlink_to(secret)
    return root


# -- VMs that boot to an iPXE script ----------------------------------------

OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'
OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd'
SCRIPT_PATH = '/boot.ipxe'
# Where script_lab_fixture's stand-in for Ironic's http_root listens.
SCRIPT_SERVER = '198.51.100.1'
SCRIPT_HTTP_PORT = 8080


def script_lab(workdir, server, http_port, tftp_extra=''):
    """A lab whose agent hands iPXE a script on a stand-in for Ironic's
    http_root (a static server whose access log shows who fetched it).

    :returns: the :class:`Lab` with ``server_ns``, ``http_log``, ``tftp``
        and ``agent`` set; close it.
    """
    lab = Lab(workdir)
    lab.server_address = server
    try:
        lab.server_ns, lab.server_if = lab.node('s', f'{server}/24')
        web = lab.workdir / 'web'
        web.mkdir()
        (web / 'boot.ipxe').write_text('#!ipxe\necho vmetal boot script\n'
                                       'sleep 600\n')
        lab.http, lab.http_log = http_server(lab, lab.server_ns, server,
                                             http_port, web)
        lab.tftp = tftp_root(lab.workdir)
        lab.agent = lab.start_agent(
            lab.server_ns, lab.server_if,
            extra=f"ipxe_script_url = http://{server}:{http_port}"
                  f"{SCRIPT_PATH}\n[vmetal_tftp]\nroot = {lab.tftp}\n"
                  + textwrap.dedent(tftp_extra))
    except BaseException:
        lab.close()
        raise
    return lab


def script_lab_fixture(prefix, tftp_extra=''):
    """A module-scoped pytest fixture: a :func:`script_lab` on
    :data:`SCRIPT_SERVER` and :data:`SCRIPT_HTTP_PORT`, closed after the
    module.

    :param prefix: the name of its work directory.
    :param tftp_extra: more ``[vmetal_tftp]`` options for the agent.
    """
    @pytest.fixture(scope='module')
    def lab(tmp_path_factory):
        lab = script_lab(tmp_path_factory.mktemp(prefix), SCRIPT_SERVER,
                         SCRIPT_HTTP_PORT, tftp_extra=tftp_extra)
        try:
            yield lab
        finally:
            lab.close()
    return lab


def ovmf(lab, name):
    """QEMU arguments for OVMF with a private copy of its variables."""
    variables = lab.workdir / f'{name}-OVMF_VARS.fd'
    shutil.copy(OVMF_VARS, variables)
    return ['-drive', f'if=pflash,format=raw,readonly=on,file={OVMF_CODE}',
            '-drive', f'if=pflash,format=raw,file={variables}']


def boot_to_script(lab, name, mac, address, firmware_args, nic, timeout,
                   boot=None):
    """Reserve ``address`` for ``mac``, boot a TCG VM on the lab bridge and
    wait until it fetches the script; the VM is stopped by PID.

    :returns: ``(seconds from QEMU start, [(client, path)] requests)``.
    """
    lab.reserve(mac, address, gateway=lab.server_address,
                dns_servers=(lab.server_address,),
                **({'boot': boot} if boot is not None else {}))
    lab.agent.wait_loaded()
    tap = lab.tap()
    serial = lab.workdir / f'{name}-serial.log'
    argv = ['qemu-system-x86_64', '-accel', 'tcg', '-m', '512',
            '-nodefaults', '-display', 'none', '-vga', 'none',
            '-machine', 'pc,graphics=off', '-no-reboot',
            '-chardev', f'file,id=s0,path={serial}', '-serial', 'chardev:s0',
            '-netdev', f'tap,id=n0,ifname={tap},script=no,downscript=no',
            '-device', f'{nic},netdev=n0,mac={mac}', *firmware_args]
    started = time.monotonic()
    vm = lab.spawn(lab.hub, argv, f'{name}-qemu.log')
    try:
        requests = wait_for(
            lambda: vm.poll() is not None or [
                request for request in http_requests(lab.http_log)
                if request[0] == address],
            timeout, interval=0.1, what=f'{name} VM to fetch the script')
        elapsed = time.monotonic() - started
        assert vm.poll() is None, (
            lab.workdir / f'{name}-qemu.log').read_text()
    finally:
        lab.stop(vm)
    print(f'{name}: QEMU start -> HTTP request {elapsed:.1f} s')
    return elapsed, requests
