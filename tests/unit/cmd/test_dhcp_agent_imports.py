"""What vmetal-dhcp-agent imports decides what its image holds
(etc/container/agent-requirements.txt): Ironic, SQLAlchemy, numpy and
jsonschema serve the plugins inside Ironic and must stay out."""

import importlib.metadata
import pathlib
import re
import subprocess
import sys

TOP = pathlib.Path(__file__).resolve().parents[3]
AGENT_REQUIREMENTS = TOP / 'etc' / 'container' / 'agent-requirements.txt'
#: Top-level modules the agent's image does not hold.
NOT_IN_IMAGE = ('ironic', 'sqlalchemy', 'numpy', 'jsonschema', 'oslo_db',
                'keystoneauth1', 'openstack')

# Everything the agent loads at run time: its command, and the two stores
# stevedore may load by [vmetal]store.
PROBE = """
import sys
import vmetal_ironic.cmd.dhcp_agent
import vmetal_ironic.store.kubernetes
import vmetal_ironic.store.local
print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))
"""


def _requirements(path):
    lines = path.read_text().splitlines()
    specs = [line.split('#')[0].strip() for line in lines]
    return {re.split(r'[<>=!~ ]', spec)[0].lower(): spec
            for spec in specs if spec}


def test_the_agent_imports_nothing_of_ironic():
    result = subprocess.run([sys.executable, '-c', PROBE],
                            capture_output=True, text=True, check=True)
    imported = set(result.stdout.split())
    assert 'vmetal_ironic' in imported
    assert not imported & set(NOT_IN_IMAGE), sorted(
        imported & set(NOT_IN_IMAGE))


def test_agent_requirements_are_the_packages_own_bounds():
    agent = _requirements(AGENT_REQUIREMENTS)
    package = _requirements(TOP / 'requirements.txt')
    assert agent, 'no requirement read'
    for name, spec in agent.items():
        assert package.get(name) == spec, name
    assert 'ironic' not in agent and 'jsonschema' not in agent


def test_what_the_agent_imports_of_the_requirements_is_in_its_image():
    """A module of requirements.txt that the agent imports must be in its
    image's list, or the image builds without it and the agent fails to
    start (cryptography, for the callback certificate's expiry)."""
    result = subprocess.run([sys.executable, '-c', PROBE],
                            capture_output=True, text=True, check=True)
    imported = set(result.stdout.split())
    distributions = importlib.metadata.packages_distributions()
    package = _requirements(TOP / 'requirements.txt')
    agent = _requirements(AGENT_REQUIREMENTS)
    needed = {dist.lower() for module in imported
              for dist in distributions.get(module, ())
              if dist.lower() in package}
    assert 'cryptography' in needed
    assert needed <= set(agent), sorted(needed - set(agent))
