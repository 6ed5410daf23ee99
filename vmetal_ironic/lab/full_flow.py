"""The whole provisioning flow with Ironic in charge (``vmetal-lab --full``).

Phases, each observed, each timed: enrol through Redfish -> Ironic powers
the machine on -> the agent answers its PXE boot and IPA inspects it ->
deploy (allocation, network data, config drive, IPA writes the image) ->
Ironic sets the boot device to disk through Redfish and reboots it -> the
installed OS reports on its serial console the address it configured from
the config drive -> undeploy and cleaning. See
:mod:`vmetal_ironic.lab.full_setup` for the topology and the store,
:mod:`vmetal_ironic.lab.full_dhcp` for the DHCP providers (vmetal, or
Ironic's dnsmasq one for comparison).
"""

import dataclasses
import time

from vmetal_ironic import owner as owner_mod
from vmetal_ironic import properties as props
from vmetal_ironic.lab import bridge_counters
from vmetal_ironic.lab import flow
from vmetal_ironic.lab import full_dhcp
from vmetal_ironic.lab import full_setup
from vmetal_ironic.lab import ironic as lab_ironic
from vmetal_ironic.lab import netns
from vmetal_ironic.lab import observe
from vmetal_ironic.lab import os_image
from vmetal_ironic.lab import proxy

PHASE_TIMEOUT = 1200.0
#: Seconds between two looks at the node (one API GET): a phase's time is
#: known to this much (at 1 s, the 3 s power-on phase read 3.2 or 4.2 s by
#: where the polls fell).
POLL_INTERVAL = 0.2
#: Seconds between two checks that the libvirt domain still exists (a
#: virsh process each).
DOMAIN_CHECK_INTERVAL = 2.0
#: The agent's metrics port in its namespace (the process's and the pod's
#: configuration keep the option's default).
AGENT_METRICS_PORT = 9567


@dataclasses.dataclass
class Phase:
    name: str
    seconds: float
    #: What crossed the agent's bridge in the phase (two networks only;
    #: :func:`vmetal_ironic.lab.bridge_counters.fold`).
    bridge: dict = None

    def summary(self):
        fields = {'name': self.name, 'seconds': self.seconds}
        if self.bridge is not None:
            fields['bridge'] = self.bridge
        return fields


class FullLab(flow.Lab):
    """The full flow; :meth:`close` removes everything, also on failure.

    :param faults: also check that bad BMC credentials and a missing
        image fail readably.
    :param dhcp: ``vmetal`` or ``dnsmasq`` (:mod:`.full_dhcp`).
    :param store_config: a Kubernetes store's configuration file, or
        ``None`` for the local store (:mod:`.full_setup`).
    :param node_name: the Ironic node's name; ``<namespace>~<host>`` is a
        Metal3 host, whose properties come from the store.
    :param mac: the machine's MAC (random when ``None``).
    :param two_networks: Ironic on a cluster network of its own, bridged
        by the agent (:mod:`.full_setup`).
    :param controller_config: the vmetal-ipam-controller's configuration
        file (a Kubernetes store only; ``store_config`` by default).
    :param ironic_api: ``http`` or ``https``, how Ironic's API is served
        (default: https with ``two_networks``, see :mod:`.full_setup`).
    :raises vmetal_ironic.lab.flow.LabError: options that do not go
        together, or an unusable store configuration.
    """

    def __init__(self, workdir, report, faults=False,
                 phase_timeout=PHASE_TIMEOUT, dhcp='vmetal',
                 store_config=None, node_name='lab-node-0', mac=None,
                 two_networks=False, controller_config=None,
                 ironic_api=None):
        super().__init__(workdir, report)
        if faults and dhcp != full_dhcp.VmetalDhcp.name:
            raise flow.LabError('--faults checks the vmetal DHCP provider '
                                'only')
        if two_networks and dhcp != full_dhcp.VmetalDhcp.name:
            raise flow.LabError('--two-networks needs the vmetal DHCP '
                                'provider: its agent is the bridge')
        self.faults = faults
        self.phase_timeout = phase_timeout
        self.node_name = node_name
        self.node_uuid = None
        if mac:
            self.mac = mac
        self.dhcp = full_dhcp.PROVIDERS[dhcp](self)
        self.services = full_setup.Services(self, store_config,
                                            two_networks,
                                            controller_config, ironic_api)
        self.phases = []
        self.address = None
        self.os_fields = None
        self.build_seconds = 0.0
        #: The bridge's counters (two networks, once the agent serves).
        self.bridge = None

    # -- helpers ----------------------------------------------------------

    def _phase(self, name, since):
        seconds = round(time.monotonic() - since, 1)
        self.phases.append(Phase(name, seconds, self.bridge and
                                 self.bridge.phase()))

    def _watch_bridge(self):
        """Across two networks, read the agent's counters from here on,
        through a relay into its namespace (a process's or its pod's)."""
        if not self.services.two_networks:
            return
        port, _relay = proxy.start(self.topology, self.agent_ns, '127.0.0.1',
                                   AGENT_METRICS_PORT,
                                   log_name='proxy-metrics.log')
        self.bridge = bridge_counters.Counters(
            f'http://127.0.0.1:{port}/metrics')

    def _api(self, method, path, body=None):
        """Ironic's answer to a request that must succeed.

        :raises vmetal_ironic.lab.flow.LabError: Ironic refused it.
        """
        try:
            return self.ironic.request(method, path, body)
        except lab_ironic.IronicError as exc:
            raise flow.LabError(str(exc)) from None

    def _node(self):
        return self._api('GET', f'/nodes/{self.node_uuid}')

    def _wait(self, what, predicate, timeout=None):
        """Poll ``predicate(node)`` until truthy; fail on a failed state."""
        deadline = time.monotonic() + (timeout or self.phase_timeout)
        domain_checked = 0.0
        while time.monotonic() < deadline:
            node = self._node()
            result = predicate(node)
            if result:
                return result
            state = node['provision_state'] or ''
            if state.endswith('failed') or (state == 'enroll'
                                            and node['last_error']):
                raise flow.LabError(f'{what}: node {state}: '
                                    f'{node["last_error"]}')
            # Not at every look: the lab should take no CPU from the QEMU
            # machine it times.
            if time.monotonic() - domain_checked >= DOMAIN_CHECK_INTERVAL:
                domain_checked = time.monotonic()
                if self.services.domain.state() in ('', 'crashed'):
                    raise flow.LabError(f'{what}: the domain is gone')
            time.sleep(POLL_INTERVAL)
        raise flow.LabError(f'{what}: not seen within '
                            f'{timeout or self.phase_timeout:.0f}s')

    def _state_is(self, *states):
        return lambda node: node if node['provision_state'] in states \
            else None

    def _provision(self, uuid, target, state, body=None):
        self._api('PUT', f'/nodes/{uuid}/states/provision',
                  {'target': target, **(body or {})})
        return self._wait(f'{target} -> {state}', self._state_is(state))

    def owner(self):
        """The owner the node's address is asked for (a Metal3 name stands
        for its BareMetalHost, the store finds the Machine claiming it)."""
        return str(owner_mod.of_ironic_node(self.node_name, self.node_uuid))

    # -- phases -----------------------------------------------------------

    def _enroll_body(self, name, password=None):
        # baremetal-operator registers no network properties: on the
        # Kubernetes store they come from the host's layers.
        properties = {} if self.services.kube_sections else {
            props.NETWORK_CIDR: f'{flow.SERVER}/{flow.PREFIX}',
            props.NETWORK_IP_RANGE: flow.IP_RANGE,
            props.DNS_SERVERS: flow.SERVER}
        return {
            'name': name, 'driver': 'redfish',
            'boot_interface': 'ipxe', 'deploy_interface': 'direct',
            'inspect_interface': 'agent', 'network_interface': 'noop',
            'driver_info': {
                **self.services.bmc.driver_info(password),
                'deploy_kernel': self.ironic.image_url('ipa-kernel'),
                'deploy_ramdisk': self.ironic.image_url('ipa-ramdisk')},
            'properties': {**properties, 'capabilities': 'boot_mode:uefi'},
        }

    def _bad_credentials(self):
        node = self._api('POST', '/nodes', self._enroll_body(
            'lab-bad-bmc', password='not-the-password'))  # noqa: S106
        uuid = node['uuid']
        self._api('PUT', f'/nodes/{uuid}/states/provision',
                  {'target': 'manage'})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            node = self._api('GET', f'/nodes/{uuid}')
            if node['provision_state'] == 'enroll' and node['last_error']:
                break
            if node['provision_state'] == 'manageable':
                raise flow.LabError('a wrong BMC password was accepted')
            time.sleep(0.5)
        else:
            raise flow.LabError('enrolment with a wrong BMC password did '
                                'not fail within 120s')
        self._api('DELETE', f'/nodes/{uuid}')
        self.report.done('bad BMC credentials',
                         f'enrolment refused, last_error: '
                         f'{node["last_error"]}')

    def _enroll(self):
        started = time.monotonic()
        node = self._api('POST', '/nodes', self._enroll_body(self.node_name))
        self.node_uuid = node['uuid']
        self._api('POST', '/ports', {'node_uuid': self.node_uuid,
                                     'address': self.mac, 'pxe_enabled': True})
        node = self._provision(self.node_uuid, 'manage', 'manageable')
        self._phase('enroll', started)
        self.report.done('enrolled through Redfish',
                         f'{self.node_uuid} ({self.node_name}) driver '
                         'redfish, manageable, '
                         f'power {node["power_state"]} read from the BMC')

    def _inspect(self):
        started = time.monotonic()
        self._api('PUT', f'/nodes/{self.node_uuid}/states/provision',
                  {'target': 'inspect'})
        domain = self.services.domain
        self._wait('power on by Ironic', lambda node: domain.state()
                   == 'running' and node['power_state'] == 'power on')
        self._phase('power_on', started)
        resets = self.services.bmc.requests('ComputerSystem.Reset')
        self.report.done('powered on by Ironic',
                         f'Redfish Reset seen by the BMC ({len(resets)} '
                         f'request(s)), domain {domain.state()}')
        powered = time.monotonic()
        self._wait(f'DHCP answer from {self.dhcp.name}',
                   lambda node: self.dhcp.acked())
        self.report.note(f'{self.dhcp.name} ACKed {self.mac} '
                         f'{time.monotonic() - powered:.0f}s after power on')
        self._wait('inspection', self._state_is('manageable'))
        inventory = self._api('GET', f'/nodes/{self.node_uuid}/inventory')
        self._phase('inspection', powered)
        self.report.done('inspected', describe(inventory['inventory']))

    def _failing_deploy(self, title, url, sha256):
        """Deploy ``url`` with ``sha256`` and expect a readable failure.

        :returns: the error Ironic gave: the API's refusal or the node's
            ``last_error`` after ``deploy failed``.
        :raises vmetal_ironic.lab.flow.LabError: the deploy succeeded, or
            the address was lost.
        """
        allocation = self.store.get_allocation(self.owner())
        self._api('PATCH', f'/nodes/{self.node_uuid}', [
            {'op': 'add', 'path': '/instance_info/image_source',
             'value': url},
            {'op': 'add', 'path': '/instance_info/image_os_hash_algo',
             'value': 'sha256'},
            {'op': 'add', 'path': '/instance_info/image_os_hash_value',
             'value': sha256}])
        status, body = self.ironic.api(
            'PUT', f'/nodes/{self.node_uuid}/states/provision',
            {'target': 'active'})
        if status >= 400:
            outcome = 'deploy refused (HTTP {}: {})'.format(
                status, (body or {}).get('error_message', body))
        else:
            node = self._wait(title, lambda node: node
                              if node['provision_state'] == 'deploy failed'
                              else None if node['provision_state'] != 'active'
                              else {'provision_state': 'active'})
            if node['provision_state'] == 'active':
                raise flow.LabError(f'{title}: the deploy succeeded')
            outcome = f'deploy failed, last_error: {node["last_error"]}'
            self._provision(self.node_uuid, 'deleted', 'available')
        after = self.store.get_allocation(self.owner())
        if allocation is not None and (after is None or after.address
                                       != allocation.address):
            raise flow.LabError(f'{title}: the failed deploy lost the '
                                'address')
        held = after.address if after else 'none yet'
        self.report.done(title, f'{outcome}; address {held} still '
                         'allocated')

    def _bad_images(self):
        self._failing_deploy('missing image',
                             self.services.image_url('missing.qcow2'),
                             self.services.image_sha256())
        # The conductor downloads and checks the image before it powers
        # the machine on ([agent]image_download_source = local).
        self._failing_deploy('wrong checksum', self.services.image_url(),
                             '0' * 64)

    def _restart_agent(self):
        """Stop and start vmetal-dhcp-agent while IPA is deploying."""
        before = self._agent_text().count('serving on')
        if self.bridge is not None:
            self.bridge.before_stop()
        netns.Topology.stop(self.agent)
        self.agent = self.topology.spawn(
            self.agent_ns or self.server_ns, [str(flow.AGENT), '--config-file',
                             str(self.workdir / 'vmetal-dhcp-agent.conf')],
            'agent.log')
        if not observe.wait_for(
                lambda: self._agent_text().count('serving on') > before, 30,
                failed=lambda: self.agent.poll() is not None):
            raise flow.LabError('vmetal-dhcp-agent did not come back after '
                                'its restart')
        self.report.done('agent restarted', 'vmetal-dhcp-agent stopped and '
                         'started again while IPA deploys; the deploy goes on')

    def _deploy(self):
        self._api('PATCH', f'/nodes/{self.node_uuid}', [
            {'op': 'replace', 'path': '/automated_clean', 'value': False}])
        self._provision(self.node_uuid, 'provide', 'available')
        if self.faults:
            self._bad_images()
        started = time.monotonic()
        self._api('PATCH', f'/nodes/{self.node_uuid}', [
            {'op': 'add', 'path': '/instance_info/image_source',
             'value': self.services.image_url()},
            {'op': 'add', 'path': '/instance_info/image_os_hash_algo',
             'value': 'sha256'},
            {'op': 'add', 'path': '/instance_info/image_os_hash_value',
             'value': self.services.image_sha256()}])
        config_drive = {'meta_data': {'hostname': 'lab-os',
                                      'uuid': self.node_uuid}}
        given = self.dhcp.config_drive_network_data()
        if given is not None:
            config_drive['network_data'] = given
        self._api('PUT', f'/nodes/{self.node_uuid}/states/provision', {
            'target': 'active', 'configdrive': config_drive})
        self._wait('IPA writing the image', lambda node: (
            node.get('deploy_step') or {}).get('step') == 'write_image')
        self.address, where = self.dhcp.os_address()
        node = self._node()
        networks = ((given or node.get('network_data') or {})
                    .get('networks', []))
        self.report.done('deploying', f'{self.address}/{flow.PREFIX} '
                         f'{where}; network_data with {len(networks)} '
                         'network(s); IPA runs write_image (config drive '
                         'from Ironic)')
        if self.faults:
            self._restart_agent()
        self._wait('image written', lambda node: (
            node.get('deploy_step') or {}).get('step') not in (
                None, 'deploy', 'write_image')
            or node['provision_state'] == 'active')
        self._phase('deploy', started)
        self.report.done('image written', 'write_image done, IPA is '
                         'preparing the boot from disk')
        self.written = time.monotonic()

    def _boot_from_disk(self):
        domain = self.services.domain
        self._wait('active', self._state_is('active'))
        self._wait('boot from disk', lambda node: domain.state() == 'running'
                   and domain.boot_devices()[:1] == ['hd'])
        self._phase('boot_from_disk', self.written)
        published = 'published' if self.dhcp.published() else 'withdrawn'
        self.report.done('booting from disk',
                         f'node active; Redfish boot device '
                         f'{domain.boot_devices()}, domain {domain.state()}; '
                         f'reservation {published}')
        self.disk_boot = time.monotonic()

    def _os_network(self):
        domain = self.services.domain
        fields = self._wait('the installed OS reporting its address',
                            lambda node: os_image.parse_report(
                                domain.serial_text()))
        self._phase('os_network', self.disk_boot)
        self.os_fields = fields
        address = fields.get('address', '').split('/')[0]
        if address != self.address or fields.get('source') != 'static':
            raise flow.LabError(f'the installed OS runs with {fields}, '
                                f'allocated {self.address} (static)')
        self.report.done('installed OS', 'configured ' + ', '.join(
            f'{key} {value}' for key, value in fields.items()))

    def _undeploy(self):
        started = time.monotonic()
        self._api('PATCH', f'/nodes/{self.node_uuid}', [
            {'op': 'replace', 'path': '/automated_clean', 'value': True}])
        self._api('PUT', f'/nodes/{self.node_uuid}/states/provision',
                  {'target': 'deleted'})
        seen = set()

        def available(node):
            seen.add(node['provision_state'])
            return node if node['provision_state'] == 'available' else None
        self._wait('undeploy and cleaning', available)
        self._phase('undeploy_cleaning', started)
        if not seen & {'cleaning', 'clean wait'}:
            raise flow.LabError(f'no cleaning seen, only {sorted(seen)}')
        kept = f'{self.address} was the lab\'s (dnsmasq allocates none)'
        if self.dhcp.name == full_dhcp.VmetalDhcp.name:
            allocation = self.store.get_allocation(self.owner())
            if allocation is None or allocation.address != self.address:
                raise flow.LabError('the undeploy lost the machine\'s '
                                    'address')
            kept = f'{self.address} stays allocated to {allocation.owner}'
        # Ironic withdraws DHCP options at the end of a deploy only: after
        # cleaning a stock hardware type calls no clean_dhcp_opts (the
        # vmetal network interface would, in remove_cleaning_network), so
        # the reservation cleaning published stays, as dnsmasq's host
        # entry does. Reported, not hidden.
        left = 'still published (Ironic withdraws none after cleaning)' \
            if self.dhcp.published() else 'withdrawn'
        self.report.done('undeployed and cleaned', f'states {sorted(seen)}; '
                         f'{kept}; reservation '
                         f'{left}')

    def run(self):
        self.build_seconds = self.services.build_images()
        self.services.start_network()
        self.services.start_bmc()
        self.services.start_ironic()
        self._start_http()
        self.dhcp.start()
        self._watch_bridge()
        # After the agent: both import for seconds on a loaded machine,
        # and the agent's start is waited for with a bound.
        self.services.start_controller()
        if self.faults:
            self._bad_credentials()
        self._enroll()
        self._inspect()
        self._deploy()
        self._boot_from_disk()
        self._os_network()
        self._undeploy()

    def summary(self, ok, seconds):
        fields = self.os_fields or {}
        return {'ok': ok, 'seconds': round(seconds, 1),
                'dhcp': self.dhcp.name, 'node': self.node_name,
                'topology': self.services.topology,
                'ironic_api': self.services.ironic_api,
                'allocated_address': self.address,
                'os_address': fields.get('address', '').split('/')[0] or None,
                'os_address_source': fields.get('source'),
                'build_seconds': round(self.build_seconds, 1),
                'bridge': self.bridge and self.bridge.summary(),
                'steps': [phase.summary() for phase in self.phases]}

    def close(self):
        if self.bridge is not None:
            # The end of the run, before the agent is stopped.
            self.bridge.scrape()
        self.dhcp.close()
        super().close()
        self.services.close()


def describe(inventory):
    """One line: CPUs, memory, disks, NICs of an IPA inventory."""
    cpu = inventory.get('cpu', {})
    memory = inventory.get('memory', {})
    disks = ', '.join(f'{d.get("name")} {int(d.get("size", 0)) / 2**30:.0f} '
                      'GiB' for d in inventory.get('disks', []))
    nics = ', '.join(f'{n.get("name")} {n.get("mac_address")}'
                     for n in inventory.get('interfaces', []))
    return (f'{cpu.get("count")} CPU ({cpu.get("model_name")}), memory '
            f'{memory.get("physical_mb")} MiB, disks [{disks}], NICs '
            f'[{nics}]')
