"""What every interrupted lab run must show, quick flow or full."""

import re
import subprocess


def _ours(argv, prefix='vlab'):
    out = subprocess.run(argv, capture_output=True, text=True,
                         check=False).stdout
    return {word for word in out.split() if word.startswith(prefix)}


def full_lab_leftovers(prefix):
    """Namespaces, links and libvirt domains of the full lab run whose
    names start with ``prefix`` (see :func:`run_prefix`): other labs may
    run on the machine at the same time, with prefixes of their own."""
    return (_ours(['ip', 'netns', 'list'], prefix)
            | _ours(['ip', '-o', 'link', 'show'], prefix)
            | _ours(['virsh', '-q', '-c', 'qemu:///system', 'list', '--all',
                     '--name'], prefix))


def run_prefix(output):
    """The random name prefix a lab run printed (its server namespace is
    ``<prefix>s``)."""
    found = re.search(r' in (vlab[0-9a-f]{4})s[;,]', output)
    assert found, f'no lab prefix in:\n{output}'
    return found.group(1)


def assert_interrupted_cleanly(proc, err, workdir, leftovers, before):
    """The lab stopped by SIGINT said so in one line and left nothing.

    :param proc: the finished ``vmetal-lab`` process.
    :param err: its standard error.
    :param workdir: its ``--workdir``; no process may still name it.
    :param leftovers: callable listing what the lab makes (namespaces,
        links, domains...).
    :param before: what ``leftovers()`` listed before the run.
    """
    assert proc.returncode == 1
    assert re.search(r'FAILED after \d+ steps: interrupted', err), err
    assert 'Traceback' not in err
    assert leftovers() == before
    stray = subprocess.run(['pgrep', '-f', str(workdir)],
                           capture_output=True, text=True).stdout
    assert stray == ''


def stop_if_running(proc, grace):
    """End a lab the test gave up on: SIGTERM first, which still cleans
    up (SIGKILL would leave its namespaces, domains and processes), and
    SIGKILL only after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def two_network_facts(prefix, machine_address='192.0.2.1'):
    """What makes a two-network lab run two networks, read from its
    namespaces while it runs (``<prefix>s`` Ironic's, ``<prefix>a`` the
    agent's).

    :returns: ``{'ironic_addresses', 'ironic_routes', 'route_to_l2',
        'agent_ip_forward'}``: Ironic's IPv4 addresses and routes, the exit
        code of ``ip route get`` toward the lab L2 from Ironic's namespace
        (non-zero: no route, a default one included), and the agent's
        ``net.ipv4.ip_forward``.
    """
    def ns(name, *argv):
        return subprocess.run(['ip', 'netns', 'exec', f'{prefix}{name}',
                               *argv], capture_output=True, text=True,
                              timeout=30, check=False)
    return {
        'ironic_addresses': ns('s', 'ip', '-4', '-o', 'addr', 'show').stdout,
        'ironic_routes': ns('s', 'ip', '-4', 'route', 'show').stdout,
        'route_to_l2': ns('s', 'ip', 'route', 'get',
                          machine_address).returncode,
        'agent_ip_forward': ns('a', 'sysctl', '-n',
                               'net.ipv4.ip_forward').stdout.strip(),
    }


def assert_two_networks(prefix):
    """Ironic's namespace has no address in and no route toward the lab
    L2 (192.0.2.0/24), and the agent's namespace forwards nothing."""
    facts = two_network_facts(prefix)
    assert '192.0.2.' not in facts['ironic_addresses'], facts
    assert '203.0.113.1/' in facts['ironic_addresses'], facts
    assert 'default' not in facts['ironic_routes'], facts
    assert '192.0.2.' not in facts['ironic_routes'], facts
    assert facts['route_to_l2'] != 0, facts
    assert facts['agent_ip_forward'] == '0', facts
    return facts


def _ns_curl(namespace, *argv):
    """curl in ``namespace``: ``(exit code, HTTP status or 0)``."""
    result = subprocess.run(
        ['ip', 'netns', 'exec', namespace, 'curl', '-sS', '-o', '/dev/null',
         '--max-time', '10', '-w', '%{http_code}', *argv],
        capture_output=True, text=True, timeout=30, check=False)
    return result.returncode, int(result.stdout.strip() or 0)


def agent_upstream_connections(prefix, listener='api'):
    """``{scheme: count}`` of the connections the agent of a two-network
    lab run (namespace ``<prefix>a``, its own process or its pod) opened
    to ``listener``'s upstream, from its metrics endpoint
    (``vmetal_bridge_upstream_connections_total``)."""
    text = subprocess.run(
        ['ip', 'netns', 'exec', f'{prefix}a', 'curl', '-sS', '--max-time',
         '10', 'http://127.0.0.1:9567/metrics'],
        capture_output=True, text=True, timeout=30, check=False).stdout
    found = re.findall(
        r'^vmetal_bridge_upstream_connections_total\{listener="'
        + listener + r'",scheme="(https?)"\} ([0-9.e+]+)$', text, re.M)
    return {scheme: float(value) for scheme, value in found}


def ironic_api_facts(prefix, ca_file=None):
    """How Ironic's API answers on the cluster network of a two-network
    lab run, asked from Ironic's own namespace while it runs.

    :param ca_file: the CA the run made for Ironic's API (https only).
    :returns: ``{'http', 'https', 'agent'}``: the ``(curl exit code, HTTP
        status)`` of a plain-HTTP and of a CA-checked TLS request to
        ``203.0.113.1:6385/`` (status 0: no HTTP answer; Ironic 39's
        cheroot answers plain HTTP on its TLS port with a plain 400), and
        the agent's upstream connections to the API by scheme
        (:func:`agent_upstream_connections`).
    """
    url = '203.0.113.1:6385/'
    checked = ('--cacert', str(ca_file)) if ca_file else ()
    return {'http': _ns_curl(f'{prefix}s', f'http://{url}'),
            'https': _ns_curl(f'{prefix}s', *checked, f'https://{url}'),
            'agent': agent_upstream_connections(prefix)}


def assert_ironic_api(facts, scheme):
    """Ironic's API answered ``scheme`` only (the other scheme gets no
    API document: no answer, or cheroot's 400 to plain HTTP on a TLS
    port), and the agent forwarded the ramdisk's calls to it that way and
    never the other."""
    other = 'http' if scheme == 'https' else 'https'
    assert facts[scheme] == (0, 200), facts
    assert facts[other][1] in (0, 400), facts
    assert facts['agent'].get(scheme, 0) >= 1, facts
    assert facts['agent'].get(other, 0) == 0, facts


def assert_warm_boots(summary, restarted=False):
    """From a two-network run's ``--json`` summary (its ``"bridge"``
    counters): the ramdisk boot of inspection filled the agent's copies,
    a later boot (deploy or cleaning) was served from them, and the
    isolation of the networks held for the ramdisk's calls (they went
    through the agent's API listener).

    :param restarted: the agent was restarted during the deploy
        (``--faults``): it adopted the copies, and cleaning's boot, after
        the restart, was served from them without filling again.
    """
    bridge = summary['bridge']
    assert bridge is not None and bridge['in_path'] is True, summary
    steps = {step['name']: step['bridge'] for step in summary['steps']}
    assert steps['inspection']['cache']['filled'] >= 1, steps
    assert bridge['forwarded']['api'] >= 1, bridge
    assert bridge['forwarded']['callback'] >= 1, bridge
    if not restarted:
        later = (steps['deploy']['cache']['hit']
                 + steps['undeploy_cleaning']['cache']['hit'])
        assert later >= 1, steps
        return
    assert bridge['agent_restarts'] == 1, bridge
    assert steps['deploy']['cache']['hit'] >= 1, steps
    assert bridge['cache']['adopted'] >= 1, bridge
    cleaning = steps['undeploy_cleaning']['cache']
    assert cleaning['hit'] >= 1 and cleaning['filled'] == 0, steps
