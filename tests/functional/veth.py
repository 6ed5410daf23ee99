"""A veth pair whose one end stays in this namespace, standing in for a
provisioning interface (a devstack host's, or a pod's ``net1``), and whose
other end is a machine's NIC in a namespace of its own."""

import contextlib
import os
import subprocess
import time


def ip(*args):
    """Run an ip(8) command; raises when it fails."""
    subprocess.run(['ip', *args], check=True, capture_output=True, timeout=30)


def lease(link, address, log_text=''):
    """The machine asks for an address by DHCP (busybox udhcpc, once) and
    configures the one it got, as udhcpc's script would.

    :param link: the names :func:`machine_link` gives.
    :param address: the address the lease must hold.
    :param log_text: added to the failure message (the server's log).
    """
    dhcp = subprocess.run(
        ['ip', 'netns', 'exec', link['ns'], 'busybox', 'udhcpc', '-i',
         link['client'], '-f', '-q', '-n', '-t', '5', '-T', '2', '-s',
         '/bin/true'], capture_output=True, text=True, timeout=60,
        check=False)
    output = dhcp.stdout + dhcp.stderr
    assert f'lease of {address} obtained' in output, output + log_text
    ip('-n', link['ns'], 'addr', 'add', f'{address}/24', 'dev',
       link['client'])


@contextlib.contextmanager
def machine_link(tag, client_mac, agent_address=None):
    """Create the pair; remove both ends on exit, also after a failure.

    :param tag: one letter distinguishing the caller's names.
    :param client_mac: MAC of the machine's end.
    :param agent_address: ``ip/prefix`` for this namespace's end, or
        ``None`` to leave it unconfigured (the code under test adds it).
    :returns: ``{'ns', 'agent', 'client'}`` names.
    """
    suffix = f'{os.getpid() % 10000}{int(time.time()) % 100}'
    names = {'ns': f'vdep-{tag}{suffix}', 'agent': f'vdep{tag}a{suffix}',
             'client': f'vdep{tag}c{suffix}'}
    try:
        ip('netns', 'add', names['ns'])
        ip('link', 'add', names['agent'], 'type', 'veth', 'peer', 'name',
            names['client'], 'netns', names['ns'])
        if agent_address:
            ip('addr', 'add', agent_address, 'dev', names['agent'])
            ip('link', 'set', names['agent'], 'up')
        ip('-n', names['ns'], 'link', 'set', names['client'], 'address',
            client_mac)
        ip('-n', names['ns'], 'link', 'set', names['client'], 'up')
        ip('-n', names['ns'], 'link', 'set', 'lo', 'up')
        yield names
    finally:
        subprocess.run(['ip', 'link', 'del', names['agent']],
                       capture_output=True, timeout=30, check=False)
        subprocess.run(['ip', 'netns', 'del', names['ns']],
                       capture_output=True, timeout=30, check=False)
