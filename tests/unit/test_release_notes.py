"""The release notes (reno, ``releasenotes/``): they lint and they render.

reno reads notes from a git history, and a checkout may have none to give
(a shallow clone, an sdist) or hold notes not committed yet. So the notes
of the working tree are committed to a throw-away repository, and there
``reno lint`` must pass and the Sphinx build (warnings as errors, as
``tox -e releasenotes`` runs it on the real history) must show the text of
every note.
"""

import html
import os
import pathlib
import re
import shutil
import subprocess
import sys

import yaml

TOP = pathlib.Path(__file__).resolve().parents[2]
RELEASENOTES = TOP / 'releasenotes'
RENO = os.path.join(os.path.dirname(sys.executable), 'reno')
GIT_IDENTITY = ['-c', 'user.name=vmetal-ironic tests',
                '-c', 'user.email=tests@vmetal-ironic.invalid',
                '-c', 'commit.gpgsign=false']


def _run(argv, cwd):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


def _plain(text):
    return ' '.join(text.replace('``', '').split())


def _throwaway_repository(tmp_path):
    repo = tmp_path / 'repo'
    shutil.copytree(RELEASENOTES, repo / 'releasenotes',
                    ignore=shutil.ignore_patterns('build'))
    for argv in (['git', 'init', '-q'], ['git', 'add', '.'],
                 ['git', *GIT_IDENTITY, 'commit', '-q', '-m', 'notes']):
        result = _run(argv, repo)
        assert result.returncode == 0, result.stderr
    return repo


def test_notes_lint_and_render(tmp_path):
    notes = sorted((RELEASENOTES / 'notes').glob('*.yaml'))
    assert notes
    repo = _throwaway_repository(tmp_path)
    lint = _run([RENO, 'lint'], repo)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    build = _run([sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q',
                  '-b', 'html', 'releasenotes/source', str(tmp_path / 'html')],
                 repo)
    assert build.returncode == 0, build.stdout + build.stderr
    page = (tmp_path / 'html' / 'unreleased.html').read_text()
    rendered = _plain(html.unescape(re.sub(r'<[^>]+>', '', page)))
    for note in notes:
        sections = yaml.safe_load(note.read_text())
        assert sections, note.name
        for section, items in sections.items():
            for item in [items] if isinstance(items, str) else items:
                assert _plain(item) in rendered, (note.name, section)


def test_a_broken_note_fails_the_lint(tmp_path):
    """The check above can fail: reno refuses an unknown section."""
    repo = _throwaway_repository(tmp_path)
    (repo / 'releasenotes' / 'notes' / 'broken-0000000000000000.yaml'
     ).write_text('---\nfeatures: [ok]\nnot_a_section:\n  - x\n')
    _run(['git', 'add', '.'], repo)
    _run(['git', *GIT_IDENTITY, 'commit', '-q', '-m', 'broken'], repo)
    lint = _run([RENO, 'lint'], repo)
    assert lint.returncode != 0, lint.stdout + lint.stderr
