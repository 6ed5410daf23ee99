"""Deploy and undeploy through a real Ironic with the vmetal DHCP provider,
compared with Ironic's own dnsmasq provider in the same run.

Both runs use the same Ironic 39 process setup (API + conductor, SQLite,
fake power, iPXE boot, ramdisk deploy) from the functional tests. The only
difference is the DHCP provider and the network interface:

* vmetal: ``[dhcp]dhcp_provider = vmetal`` and the ``vmetal`` network
  interface, which means IPAM allocation, network_data, a reservation
  published to the local store, and a withdraw on undeploy;
* peer: ``[dhcp]dhcp_provider = dnsmasq`` and ``noop``, which writes the
  dnsmasq host and option files.

Figures: median and max time from the deploy request (the instance_info
PATCH, then the provision request) until the node is ``active`` with no
conductor lock held, and from the undeploy request until it is
``available`` again.
"""

import pathlib
import re
import statistics
import sys
import tempfile
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / 'tests' / 'functional'))

import ironic_fixture  # noqa: E402

NODES = 8
WAIT = 120
PROPERTIES = {'metal3.vcluster.com/network-cidr': '192.0.2.1/24'}


POLL = 0.02


def _timed(action, *args, **kwargs):
    """Seconds ``action`` takes; the waits poll the REST API every 20 ms
    (a coarser poll would hide the providers' cost)."""
    started = time.monotonic()
    action(*args, **kwargs)
    return time.monotonic() - started


def _cycle(proc, network_interface):
    deploys, undeploys = [], []
    for index in range(NODES):
        mac = '52:54:00:' + ':'.join(f'{b:02x}' for b in uuid.uuid4().bytes[:3])
        node = proc.enroll(
            mac, driver='fake-hardware', name=f'bench-{index}',
            boot_interface='ipxe', deploy_interface='ramdisk',
            power_interface='fake', management_interface='fake',
            network_interface=network_interface, properties=PROPERTIES)
        deploys.append(_timed(proc.deploy, node['uuid'], timeout=WAIT,
                              interval=POLL))
        undeploys.append(_timed(proc.provision, node['uuid'], 'deleted',
                                timeout=WAIT, interval=POLL))
    return deploys, undeploys


def _run(label, overrides, network_interface):
    with tempfile.TemporaryDirectory(prefix='vir-bench-') as workdir:
        work = pathlib.Path(workdir)
        for name in ('dnsmasq-hosts', 'dnsmasq-opts'):
            (work / name).mkdir()
        (work / 'dnsmasq.leases').write_text('')
        overrides.setdefault('dnsmasq', {}).update({
            'dhcp_hostsdir': str(work / 'dnsmasq-hosts'),
            'dhcp_optsdir': str(work / 'dnsmasq-opts'),
            'dhcp_leasefile': str(work / 'dnsmasq.leases')})
        proc = ironic_fixture.IronicProcess(work / 'ironic', overrides)
        (work / 'ironic').mkdir()
        try:
            started = time.monotonic()
            proc.start()
            startup = time.monotonic() - started
            deploys, undeploys = _cycle(proc, network_interface)
            provider_ms = [float(ms) for ms in re.findall(
                r'vmetal DHCP: node .* reserved for .* \(([0-9.]+) ms\)',
                proc.log_text())]
        finally:
            proc.stop()
    print(f'{label:<28} start {startup:5.1f}s  '
          f'deploy median {statistics.median(deploys):5.2f}s '
          f'max {max(deploys):5.2f}s  '
          f'undeploy median {statistics.median(undeploys):5.2f}s '
          f'max {max(undeploys):5.2f}s  ({NODES} nodes)')
    if provider_ms:
        print(f'{"":<28} vmetal update_dhcp_opts in the conductor: median '
              f'{statistics.median(provider_ms):.1f} ms, max '
              f'{max(provider_ms):.1f} ms ({len(provider_ms)} calls)')


def main():
    print('Ironic 39, fake power, iPXE boot, ramdisk deploy; request to '
          'target state, polled every 20 ms')
    _run('vmetal provider + network', {}, 'vmetal')
    _run('peer: dnsmasq provider', {
        'dhcp': {'dhcp_provider': 'dnsmasq'},
        'DEFAULT': {'enabled_network_interfaces': 'noop'}}, 'noop')


if __name__ == '__main__':
    main()
