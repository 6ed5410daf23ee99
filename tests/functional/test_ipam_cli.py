"""The installed vmetal-ipam console script, as an operator runs it:
several CLI processes at once on one embedded store."""

import json
import os
import shutil
import subprocess
import sys
from concurrent import futures

import pytest

# The script sits beside the interpreter of the environment under test.
CLI = shutil.which('vmetal-ipam', path=os.path.dirname(sys.executable)) or pytest.fail(
    'vmetal-ipam is not installed in this environment')


def _cli(database, *argv, check=True):
    result = subprocess.run([CLI, '--database', database, *argv],
                            capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr)
    return result


def test_parallel_cli_processes_share_one_pool(tmp_path):
    database = str(tmp_path / 'vmetal.sqlite')
    owners = [f'Machine/lab/node-{index}' for index in range(40)]
    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(
            lambda owner: json.loads(_cli(
                database, '--json', 'allocate', owner, '--cidr',
                '203.0.113.1/26').stdout), owners))
    addresses = [result['address'] for result in results]
    assert len(set(addresses)) == 40
    usage = json.loads(_cli(database, '--json', 'usage', '--cidr',
                            '203.0.113.1/26').stdout)
    assert usage == {'pool': '203.0.113.0/26', 'size': 61, 'used': 40,
                     'free': 21}
    listing = json.loads(_cli(database, '--json', 'list').stdout)
    assert {row['owner']: row['address'] for row in listing} == dict(
        zip(owners, addresses, strict=True))


def test_errors_are_one_line_without_traceback(tmp_path):
    database = str(tmp_path / 'vmetal.sqlite')
    result = _cli(database, 'allocate', 'Machine/lab/a', '--cidr', '203.0.113.1/24',
                  '--ip-range', '203.0.113.10-203.0.113.20,203.0.113.15-203.0.113.30',
                  check=False)
    assert result.returncode == 1
    assert result.stdout == ''
    assert result.stderr == (
        "vmetal-ipam: error: network-ip-range '203.0.113.10-203.0.113.20' and "
        "'203.0.113.15-203.0.113.30' overlap (from the command line)\n")
    assert 'Traceback' not in result.stderr


def test_module_entry_point_matches_console_script(tmp_path):
    database = str(tmp_path / 'vmetal.sqlite')
    result = subprocess.run(
        [sys.executable, '-m', 'vmetal_ironic.cmd.ipam', '--database', database,
         'allocate', 'Machine/lab/x', '--cidr', '198.51.100.1/24'],
        capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == ('Machine/lab/x: 198.51.100.2/24 gateway '
                             '198.51.100.1 (pool 198.51.100.0/24)\n')
