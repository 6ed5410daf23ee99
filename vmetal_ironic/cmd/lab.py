"""``vmetal-lab``: boot a QEMU machine through Ironic and vmetal-ironic.

``--full`` runs the whole provisioning flow with Ironic in charge (see
:mod:`vmetal_ironic.lab.full_flow`), otherwise the quick flow; both on the
embedded store in network namespaces it creates and removes again (also
on Ctrl-C or failure), printing each step. The full flow can also run
on a Kubernetes store (``--store-config``) or with Ironic's dnsmasq
provider (``--dhcp dnsmasq``). Exits 0 only when every step
was observed.
"""

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
import traceback

from vmetal_ironic.lab import agent_pod
from vmetal_ironic.lab import flow
from vmetal_ironic.lab import full_dhcp
from vmetal_ironic.lab import full_flow
from vmetal_ironic.lab import full_setup

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
    parser.add_argument('--full', action='store_true',
                        help='the whole flow with Ironic in charge: Redfish '
                        'power, IPA inspection and deploy, boot from disk, '
                        'the installed OS on its allocated address')
    parser.add_argument('--faults', action='store_true',
                        help='with --full: also check that a wrong BMC '
                        'password, a missing image and a wrong checksum fail '
                        'readably, and restart the DHCP agent mid-deploy')
    parser.add_argument('--phase-timeout', type=float,
                        default=full_flow.PHASE_TIMEOUT,
                        help='with --full: seconds each phase may take')
    parser.add_argument('--json', action='store_true',
                        help='with --full: end with one JSON line (ok, '
                        'seconds, addresses, per-phase steps)')
    parser.add_argument('--dhcp', choices=sorted(full_dhcp.PROVIDERS),
                        default=full_dhcp.VmetalDhcp.name,
                        help='with --full: the DHCP provider (dnsmasq = '
                        "Ironic's own, for comparison)")
    parser.add_argument('--store-config', metavar='FILE',
                        help='with --full: an ini file with [vmetal] store = '
                        'kubernetes and [vmetal_kubernetes] (api_url on '
                        '127.0.0.1); default: a local store')
    parser.add_argument('--controller-config', metavar='FILE',
                        help='with --store-config: the configuration of the '
                        'vmetal-ipam-controller the lab starts beside Ironic '
                        '(its own token); default: the store\'s')
    parser.add_argument('--node-name', default='lab-node-0',
                        help='with --full: the Ironic node name '
                        '(<namespace>~<host> for a Metal3 host)')
    parser.add_argument('--two-networks', action='store_true',
                        help='with --full: Ironic, the Redfish emulator and '
                        'the image server on a cluster network of their '
                        'own, the DHCP agent bridging it to the lab L2 '
                        '(default: everything on the lab L2)')
    parser.add_argument('--ironic-api', choices=full_setup.API_SCHEMES,
                        help='with --full: how Ironic\'s API is served '
                        '(default: https with --two-networks, as Metal3 '
                        'serves it, with a CA of the run\'s own that the '
                        'agent and the lab check it with; http on one L2, '
                        'the only choice there)')
    parser.add_argument('--mac', help='with --full: the machine\'s MAC '
                        '(default: random)')
    parser.add_argument('--agent-image', action='store_true',
                        help='with --full: run the agent from its container '
                        'image (tools/build-agent-image) in a pod as the '
                        'shipped manifests run it (on the local store: its '
                        'state directory mounted)')
    args = parser.parse_args(argv)
    if args.agent_image and not args.full:
        sys.stderr.write(f'{PROG}: error: --agent-image needs --full\n')
        return 1
    try:
        (full_setup if args.full else flow).preflight()
    except flow.LabError as exc:
        sys.stderr.write(f'{PROG}: error: {exc}\n')
        return 1
    workdir = args.workdir or tempfile.mkdtemp(prefix='vmetal-lab-')
    report = flow.Report()
    if args.full:
        try:
            lab = full_flow.FullLab(
                workdir, report, faults=args.faults,
                phase_timeout=args.phase_timeout, dhcp=args.dhcp,
                store_config=args.store_config, node_name=args.node_name,
                mac=args.mac, two_networks=args.two_networks,
                controller_config=args.controller_config,
                ironic_api=args.ironic_api)
            if args.agent_image:
                lab.agent_pod = agent_pod.LabAgent(
                    lab.services.kube_sections, faults=args.faults)
        except flow.LabError as exc:
            sys.stderr.write(f'{PROG}: error: {exc}\n')
            return 1
    else:
        lab = flow.Lab(workdir, report, boot_timeout=args.boot_timeout)
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)
    # Started from a background job, a process inherits SIGINT ignored and
    # Python keeps it so; Ctrl-C must still reach the clean-up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lab.close()
    if args.json and args.full:
        summary = lab.summary(not failure, time.monotonic() - started)
        if lab.agent_pod is not None:
            summary.update(lab.agent_pod.summary())
        sys.stdout.write(json.dumps(summary) + '\n')
    if failure:
        sys.stderr.write(f'{PROG}: FAILED after {len(report.steps)} steps: '
                         f'{failure}\n  logs: {workdir}\n')
        return 1
    if not args.json:
        sys.stdout.write(f'\nAll {len(report.steps)} steps observed; '
                         'processes stopped, namespaces removed.\n')
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
