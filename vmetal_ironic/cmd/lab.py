"""``vmetal-lab``: boot a QEMU machine through Ironic and vmetal-ironic.

Runs the whole flow on the embedded store in network namespaces it creates
and removes again (also on Ctrl-C or failure), printing each step. Exits 0
only when every step was observed.
"""

import argparse
import shutil
import signal
import sys
import tempfile
import traceback

from vmetal_ironic.lab import flow

PROG = 'vmetal-lab'


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split(
        '\n')[0])
    parser.add_argument('--workdir', help='keep state and logs here '
                        '(default: a temporary directory, removed after)')
    parser.add_argument('--boot-timeout', type=float, default=240.0,
                        help='seconds from power on to the last boot step')
    args = parser.parse_args(argv)
    try:
        flow.preflight()
    except flow.LabError as exc:
        sys.stderr.write(f'{PROG}: error: {exc}\n')
        return 1
    workdir = args.workdir or tempfile.mkdtemp(prefix='vmetal-lab-')
    report = flow.Report()
    lab = flow.Lab(workdir, report, boot_timeout=args.boot_timeout)
    signal.signal(signal.SIGTERM, _interrupt)
    failure = None
    try:
        lab.run()
    except flow.LabError as exc:
        failure = str(exc)
    except KeyboardInterrupt:
        failure = 'interrupted'
    except Exception as exc:
        # A bug of the lab itself: one line here, the traceback in the logs.
        with open(f'{workdir}/lab-error.log', 'w') as log:
            traceback.print_exc(file=log)
        failure = f'unexpected {exc.__class__.__name__}: {exc}'
    finally:
        lab.close()
    if failure:
        sys.stderr.write(f'{PROG}: FAILED after {len(report.steps)} steps: '
                         f'{failure}\n  logs: {workdir}\n')
        return 1
    sys.stdout.write(f'\nAll {len(report.steps)} steps observed; '
                     'processes stopped, namespaces removed.\n')
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
