import pytest
from oslo_config import cfg

from vmetal_ironic import conf as vmetal_conf


@pytest.fixture
def conf():
    """The agent's option groups, registered on a fresh ConfigOpts."""
    conf = cfg.ConfigOpts()
    vmetal_conf.dhcp_agent.register_opts(conf)
    vmetal_conf.tftp.register_opts(conf)
    vmetal_conf.bridge.register_opts(conf)
    conf([], default_config_files=[])
    return conf
