import importlib.metadata
import pathlib

from oslo_config import cfg
from oslo_config import generator

from vmetal_ironic.conf import opts

TOP = pathlib.Path(__file__).resolve().parents[3]
SAMPLE = TOP / 'etc' / 'vmetal-ironic' / 'vmetal-ironic.conf.sample'
GENERATOR_CONF = TOP / 'tools' / 'config' / 'vmetal-ironic-config-generator.conf'


def test_entry_point_lists_every_group():
    points = importlib.metadata.entry_points(group='oslo.config.opts')
    point = next(p for p in points if p.name == 'vmetal_ironic')
    groups = dict(point.load()())
    assert {'vmetal', 'vmetal_local_store'} <= set(groups)


def test_every_option_has_help_and_a_type():
    for group, options in opts.list_opts():
        for option in options:
            assert option.help and len(option.help) > 20, (group, option.name)
            assert option.type is not None, (group, option.name)


def test_sample_config_is_current(tmp_path):
    out = tmp_path / 'sample.conf'
    conf = cfg.ConfigOpts()
    generator.register_cli_opts(conf)
    conf(['--config-file', str(GENERATOR_CONF), '--output-file', str(out)])
    generator.generate(conf)
    assert out.read_text() == SAMPLE.read_text(), (
        'etc/vmetal-ironic/vmetal-ironic.conf.sample is stale: run '
        '"tox -e genconfig" and commit the result')
