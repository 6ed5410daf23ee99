"""``vmetal-ipam-controller``: options to objects; bad ones, one line."""

import socket

from vmetal_ironic.cmd import ipam_controller


def _write(tmp_path, text):
    path = tmp_path / 'c.conf'
    path.write_text(text)
    return str(path)


def test_build_gives_the_controller_and_its_elector_the_options(tmp_path):
    path = _write(tmp_path, '[vmetal_kubernetes]\n'
                  'api_url = https://127.0.0.1:9\nnamespace = ns\n'
                  'reconcile_interval = 60\n[vmetal_ipam_controller]\n'
                  'identity = replica-a\nworkers = 3\n'
                  'lease_duration = 20\nrenew_deadline = 12\n')
    conf = ipam_controller._load_conf(['--config-file', path])
    store, controller, elector = ipam_controller.build(conf)
    try:
        assert (controller.identity, controller.workers,
                controller.resync) == ('replica-a', 3, 60)
        assert (elector.namespace, elector.identity, elector.name,
                elector.lease_duration, elector.renew_deadline) == (
            'ns', 'replica-a', 'vmetal-ipam-controller', 20, 12)
    finally:
        store.close()


def test_timings_that_do_not_hold_together_exit_1_in_one_line(
        tmp_path, capsys):
    path = _write(tmp_path, '[vmetal_kubernetes]\n'
                  'api_url = https://127.0.0.1:9\n[vmetal_ipam_controller]\n'
                  'lease_duration = 5\nrenew_deadline = 6\n')
    assert ipam_controller.main(['--config-file', path]) == 1
    err = capsys.readouterr().err
    assert err.startswith('vmetal-ipam-controller: error: lease timing')
    assert err.count('\n') == 1


def test_metrics_are_off_by_default_and_a_taken_port_is_one_line(
        tmp_path, capsys):
    path = _write(tmp_path, '[vmetal_kubernetes]\n'
                  'api_url = https://127.0.0.1:9\n')
    conf = ipam_controller._load_conf(['--config-file', path])
    assert ipam_controller.serve_metrics(conf, None) is None
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = _write(tmp_path, '[vmetal_kubernetes]\n'
                      'api_url = https://127.0.0.1:9\n'
                      '[vmetal_ipam_controller]\n'
                      f'metrics_port = {port}\n')
        assert ipam_controller.main(['--config-file', path]) == 1
    err = capsys.readouterr().err
    assert err == (f'vmetal-ipam-controller: error: [vmetal_ipam_controller] '
                   f'cannot serve metrics on 127.0.0.1:{port}: Address '
                   'already in use\n')
