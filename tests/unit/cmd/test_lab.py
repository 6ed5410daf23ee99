"""vmetal-lab's command line: what it refuses before touching anything."""

from vmetal_ironic.cmd import lab


def test_agent_image_without_the_full_flow_is_refused(capsys):
    assert lab.main(['--agent-image']) == 1
    assert capsys.readouterr().err == (
        'vmetal-lab: error: --agent-image needs --full\n')
