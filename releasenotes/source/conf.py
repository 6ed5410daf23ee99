"""Sphinx configuration of the release notes (``tox -e releasenotes``).

reno's Sphinx extension reads the notes under ``releasenotes/notes/``
from the git history of the branch (and the working tree's uncommitted
notes) and renders them per release.
"""

project = 'vmetal-ironic Release Notes'
copyright = 'vmetal-ironic developers'  # noqa: A001 - Sphinx's name
extensions = ['reno.sphinxext']
root_doc = 'index'
exclude_patterns = []
html_theme = 'alabaster'
html_static_path = []
smartquotes = False
