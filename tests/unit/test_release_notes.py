"""The release notes (reno, ``releasenotes/``): they lint and they render.

``reno lint`` checks every note file; the Sphinx build (warnings as
errors, as ``tox -e releasenotes`` runs it) must show the text of every
note committed to the branch, since reno reads notes from the git history.
"""

import html
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

TOP = pathlib.Path(__file__).resolve().parents[2]
NOTES = TOP / 'releasenotes' / 'notes'
RENO = os.path.join(os.path.dirname(sys.executable), 'reno')


def _plain(text):
    return ' '.join(text.replace('``', '').split())


def _git(*args):
    return subprocess.run(['git', *args], cwd=TOP, capture_output=True,
                          text=True, check=True, timeout=60).stdout


def _committed_notes():
    """``{name: text}`` of the notes in HEAD, which is what reno reads."""
    if shutil.which('git') is None or not (TOP / '.git').exists():
        pytest.skip('not a git checkout: reno reads notes from its history')
    names = _git('ls-tree', '--name-only', 'HEAD',
                 'releasenotes/notes/').split()
    return {name: _git('show', f'HEAD:{name}') for name in names
            if name.endswith('.yaml')}


def test_every_note_lints():
    assert sorted(NOTES.glob('*.yaml'))
    result = subprocess.run([RENO, 'lint'], cwd=TOP, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_release_notes_render_every_committed_note(tmp_path):
    notes = _committed_notes()
    assert notes
    result = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b',
         'html', str(TOP / 'releasenotes' / 'source'), str(tmp_path)],
        cwd=TOP, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    page = (tmp_path / 'unreleased.html').read_text()
    rendered = _plain(html.unescape(re.sub(r'<[^>]+>', '', page)))
    for name, text in notes.items():
        sections = yaml.safe_load(text)
        assert sections, name
        for section, items in sections.items():
            for item in [items] if isinstance(items, str) else items:
                assert _plain(item) in rendered, (name, section)
