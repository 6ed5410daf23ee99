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
