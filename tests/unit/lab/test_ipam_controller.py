"""The lab's controller process: started with the configuration it is
given, stopped by its PID, cleanly first."""

import signal
import sys

from vmetal_ironic.lab import ipam_controller


def test_the_command_runs_this_interpreters_controller(tmp_path):
    assert ipam_controller.command(tmp_path / 'c.conf') == [
        sys.executable, '-m', 'vmetal_ironic.cmd.ipam_controller',
        '--config-file', str(tmp_path / 'c.conf')]


def test_a_bad_configuration_exits_and_stop_is_harmless(tmp_path):
    config = tmp_path / 'c.conf'
    # Lease timings that do not hold together: one line, exit 1.
    config.write_text('[vmetal_kubernetes]\napi_url = https://127.0.0.1:9\n'
                      '[vmetal_ipam_controller]\nlease_duration = 5\n'
                      'renew_deadline = 6\n')
    process = ipam_controller.ControllerProcess(config, tmp_path)
    process.start()
    assert process.process.wait(60) == 1
    assert 'renew_deadline' in process.log.read_text()
    process.stop()
    assert not process.running()


def test_stop_ends_a_running_controller(tmp_path):
    config = tmp_path / 'c.conf'
    # Nothing answers there: it campaigns, looking again and again.
    config.write_text('[vmetal_kubernetes]\napi_url = https://127.0.0.1:9\n'
                      'connect_timeout = 0.2\n')
    process = ipam_controller.ControllerProcess(config, tmp_path)
    process.start()
    assert process.running()
    pid = process.process.pid
    handle = process.process
    process.stop()
    # Ended by the SIGTERM (cleanly once its handler is installed, which
    # an interpreter still importing has not done yet), not left running.
    assert handle.returncode in (0, -signal.SIGTERM)
    assert not process.running() and pid
