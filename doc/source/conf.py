"""Sphinx configuration of the vmetal-ironic documentation.

Build with ``tox -e docs`` (HTML in doc/build/html). The configuration
reference is generated from the options themselves by oslo.config's
Sphinx extension, through the ``oslo.config.opts`` entry point, so the
package must be installed in the building environment.
"""

project = 'vmetal-ironic'
copyright = 'vmetal-ironic developers'  # noqa: A001 - Sphinx's name
author = 'vmetal-ironic developers'

extensions = [
    'oslo_config.sphinxext',
]

root_doc = 'index'
exclude_patterns = ['_build']
pygments_style = 'sphinx'
html_theme = 'alabaster'
html_static_path = []
suppress_warnings = []
