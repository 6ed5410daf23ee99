"""The unit tests mirror the packages: every module of the packages named
here has its unit-test module at the mirrored path
(``vmetal_ironic/a/b.py`` -> ``tests/unit/a/test_b.py``), so a module
moved or added without its tests fails here rather than going untested
(the aesthetics review found ten modules of ``store/kubernetes`` tested
only against a real API server).

A package joins :data:`MIRRORED` once every module of it has its tests;
the others do not yet. A package's ``__init__`` is its facade and is
exercised by the tests of the package's modules.

The store is only a store: loading it loads neither the controller nor
the domain flow the controller runs (issue 18, "Shape").
"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MIRRORED = ('store/kubernetes', 'ipam_controller')


def untested(package, root=ROOT):
    """Modules of ``package`` (a path under ``vmetal_ironic``) that have
    no unit-test module."""
    tests = root / 'tests' / 'unit' / package
    return sorted(path.name for path in
                  (root / 'vmetal_ironic' / package).glob('*.py')
                  if path.name != '__init__.py'
                  and not (tests / f'test_{path.name}').is_file())


@pytest.mark.parametrize('package', MIRRORED)
def test_every_module_has_its_unit_test_module(package):
    assert (ROOT / 'vmetal_ironic' / package).is_dir()
    assert untested(package) == []


def test_a_module_without_tests_is_found(tmp_path):
    (tmp_path / 'vmetal_ironic' / 'pkg').mkdir(parents=True)
    (tmp_path / 'tests' / 'unit' / 'pkg').mkdir(parents=True)
    for name in ('__init__.py', 'tested.py', 'untested.py'):
        (tmp_path / 'vmetal_ironic' / 'pkg' / name).write_text('')
    (tmp_path / 'tests' / 'unit' / 'pkg' / 'test_tested.py').write_text('')
    assert untested('pkg', root=tmp_path) == ['untested.py']


def test_loading_the_store_loads_no_controller():
    loaded = subprocess.run(
        [sys.executable, '-c',
         'import sys, vmetal_ironic.store.kubernetes; print(sorted(m for m '
         'in sys.modules if m.startswith(("vmetal_ironic.ipam_controller", '
         '"vmetal_ironic.host_network"))))'],
        capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == '[]'
