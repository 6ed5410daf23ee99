"""The agent from its image, in a pod wired as Kubernetes wires it.

``vmetal-lab --full --agent-image`` runs vmetal-dhcp-agent from the image
of :mod:`vmetal_ironic.lab.agent_image` instead of the lab's own process,
the way the shipped manifests run it:

* a pod: an infra container with no network (``--network=none``) holds
  the network and IPC namespaces, the agent's container joins them;
* ``net1`` is attached as Multus attaches it: the CNI plugin the shipped
  NetworkAttachmentDefinition names is called with its ``config`` (only
  the address and the parent changed), ``CNI_COMMAND=ADD``,
  ``CNI_NETNS=/proc/<infra pid>/ns/net``, ``CNI_IFNAME=net1``, from the
  namespace holding the parent (the lab's bridge); the agent starts only
  once ``net1`` exists;
* the container is the Deployment's: its ``securityContext`` (user,
  read-only root, capabilities, ``allowPrivilegeEscalation``), its
  arguments, its volumes (the shipped ConfigMap's file, a memory
  ``/tmp``), the ServiceAccount token at
  ``/var/run/secrets/kubernetes.io/serviceaccount`` and
  ``KUBERNETES_SERVICE_HOST``/``PORT`` (in-cluster configuration);
* podman runs through ``runc-no-ambient``, which empties the ambient and
  inheritable sets as kubelet's runtimes do: the agent's capabilities
  come from the image's file capabilities only.

The cluster network (``eth0``) is stood in for by a relay from the pod's
loopback to the API server on the host's (the API URL and its
certificate's name stay 127.0.0.1). The lab's differences from the
shipped configuration are environment variables (``OS_<GROUP>__<OPT>``),
as the Deployment passes ``metrics_host``: the ConfigMap's file is
mounted as it is.

With the local store (the lab's default, where no cluster exists) the pod
shares the SQLite file with Ironic as devstack shares it between the
conductor and the agent: through one state directory, mounted read-write
at the option's default place (``/var/lib/vmetal-ironic``). The directory
and the database file belong to the pod's uid (:func:`state_directory`);
Ironic runs as root and writes it anyway, and SQLite, run by root, gives
the ``-wal`` and ``-shm`` files it creates the database file's owner and
mode, so the agent can always open them.
"""

import configparser
import contextlib
import dataclasses
import io
import json
import os
import pathlib
import shutil
import subprocess
import urllib.parse

from vmetal_ironic.lab import agent_image
from vmetal_ironic.lab import debian
from vmetal_ironic.lab import observe
from vmetal_ironic.lab import proxy

MANIFESTS = agent_image.TOP / 'etc' / 'kubernetes'
DEPLOYMENT = MANIFESTS / 'agent' / 'deployment.yaml'
CONFIGMAP = MANIFESTS / 'agent' / 'configmap.yaml'
#: The lab's L2 is a Linux bridge: the bridge flavour of the attachment.
ATTACHMENT = MANIFESTS / 'network' / 'bridge' / \
    'networkattachmentdefinition.yaml'
CNI_PATH = pathlib.Path('/usr/lib/cni')
RUNTIME = agent_image.CONTAINER_DIR / 'podman' / 'runc-no-ambient'
SERVICE_ACCOUNT = '/var/run/secrets/kubernetes.io/serviceaccount'
#: Where the pod sees the local store's directory: the directory of
#: ``[vmetal_local_store]database``'s default.
STATE_DIR = '/var/lib/vmetal-ironic'
DATABASE_NAME = 'vmetal.sqlite'
#: Seconds between the agent's looks at the local store's revision.
LOCAL_POLL_INTERVAL = 0.2
INTERFACE = 'net1'
#: Where the two-network overlay mounts the Secret
#: ``vmetal-dhcp-agent-callback-tls`` (etc/kubernetes/overlays/two-networks).
CALLBACK_TLS_DIR = '/etc/vmetal-callback-tls'
#: ``[vmetal_bridge]`` options naming the callback listener's files, and
#: the key each has in a ``kubernetes.io/tls`` Secret.
CALLBACK_TLS_FILES = (('callback_cert_file', 'tls.crt'),
                      ('callback_key_file', 'tls.key'))
#: Where the two-network overlay mounts the Secret ``ironic-cacert`` (the
#: CA of Ironic's API certificate), and the option naming its file.
IRONIC_CA_DIR = '/etc/ironic-ca'
IRONIC_CA_FILES = (('ca_file', 'ca.crt'),)
#: Where the two-network overlay mounts the bridge's copies (an emptyDir
#: the pod's uid writes; ``[vmetal_bridge]cache_dir``).
BRIDGE_CACHE_DIR = '/var/cache/vmetal-bridge'
#: What the image's interpreter carries as file capabilities.
FILE_CAPABILITIES = ('NET_BIND_SERVICE', 'NET_RAW')
#: Options that say how to reach the API server: in the pod, in-cluster
#: configuration replaces them.
CONNECTION_OPTIONS = ('api_url', 'token', 'token_file', 'ca_file',
                      'verify_ssl', 'kubeconfig', 'context')
START_TIMEOUT = 60.0


class PodError(Exception):
    """The pod could not be made or its agent did not start."""


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """What the Deployment says about the agent's container."""

    uid: int
    gid: int
    read_only: bool
    drop: tuple
    add: tuple
    allow_privilege_escalation: bool
    command: tuple
    args: tuple
    env: tuple
    mounts: tuple
    tmpfs: tuple


def _yaml(path):
    # PyYAML comes with the Kubernetes client; only the lab needs it.
    import yaml
    with open(path, encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def container_spec(deployment=DEPLOYMENT):
    """The agent container of the Deployment at ``deployment``.

    A ``fieldRef`` to ``status.podIP`` becomes the pod's loopback: the
    lab's pod has no cluster network. ConfigMap volumes are listed in
    ``mounts`` as ``(name, path)``, memory ``emptyDir`` volumes in
    ``tmpfs`` as ``(path, size)``.
    """
    pod = _yaml(deployment)['spec']['template']['spec']
    container = pod['containers'][0]
    security = {**pod.get('securityContext', {}),
                **container.get('securityContext', {})}
    capabilities = security.get('capabilities', {})
    env = []
    for item in container.get('env', []):
        field = item.get('valueFrom', {}).get('fieldRef', {})
        if field.get('fieldPath') == 'status.podIP':
            env.append((item['name'], '127.0.0.1'))
        elif 'value' in item:
            env.append((item['name'], str(item['value'])))
    volumes = {volume['name']: volume for volume in pod.get('volumes', [])}
    mounts, tmpfs = [], []
    for mount in container.get('volumeMounts', []):
        volume = volumes[mount['name']]
        if 'configMap' in volume:
            mounts.append((volume['configMap']['name'], mount['mountPath']))
        elif 'emptyDir' in volume:
            size = volume['emptyDir'].get('sizeLimit', '16Mi')
            tmpfs.append((mount['mountPath'], size.replace('Mi', 'm')))
    return ContainerSpec(
        uid=int(security.get('runAsUser', 0)),
        gid=int(security.get('runAsGroup', 0)),
        read_only=bool(security.get('readOnlyRootFilesystem', False)),
        drop=tuple(capabilities.get('drop', ())),
        add=tuple(capabilities.get('add', ())),
        allow_privilege_escalation=bool(security.get(
            'allowPrivilegeEscalation', True)),
        command=tuple(container.get('command', ())),
        args=tuple(container.get('args', ())),
        env=tuple(env), mounts=tuple(mounts), tmpfs=tuple(tmpfs))


def security_args(spec):
    """podman options enforcing the container's ``securityContext``."""
    argv = ['--user', f'{spec.uid}:{spec.gid}']
    if spec.read_only:
        argv += ['--read-only', '--read-only-tmpfs=false']
    argv += [f'--cap-drop={name.lower()}' for name in spec.drop]
    argv += [f'--cap-add={name.lower()}' for name in spec.add]
    if not spec.allow_privilege_escalation:
        argv += ['--security-opt', 'no-new-privileges']
    if spec.command:
        argv += ['--entrypoint', json.dumps(list(spec.command))]
    return argv


def diagnose(spec):
    """Why a container of ``spec`` cannot run the agent, or ``''``.

    The two ways the documented ``securityContext`` can be broken: both
    leave the agent without the capabilities its interpreter carries.
    ``allowPrivilegeEscalation: false`` alone is not one of them: the
    runtime starts the container's first program with the added
    capabilities permitted, and ``no_new_privs`` only keeps an exec from
    gaining more than that; it is when a program without file
    capabilities (a shell) runs first and drops them that the agent
    cannot get them back.
    """
    bounded = set(spec.add) if 'ALL' in spec.drop else set(
        FILE_CAPABILITIES)
    missing = [name for name in FILE_CAPABILITIES if name not in bounded]
    if missing:
        return (f'capabilities.add lacks {", ".join(missing)}: the image\'s '
                'python3 carries cap_net_bind_service,cap_net_raw+ep and '
                'the kernel refuses to exec it ("operation not permitted") '
                'when the bounding set lacks one of them')
    if not spec.allow_privilege_escalation and spec.command:
        return (f'allowPrivilegeEscalation is false and the container runs '
                f'{spec.command[0]} before the agent: it drops the '
                'capabilities the runtime gave, and no_new_privs keeps the '
                "exec of the agent's interpreter from taking them back from "
                'its file capabilities (make the agent the command, or '
                'allow privilege escalation)')
    return ''


def attachment_config(address, parent, path=ATTACHMENT):
    """The NetworkAttachmentDefinition's CNI config, address and parent
    changed (``bridge`` for the bridge plugin, ``master`` for macvlan)."""
    config = json.loads(_yaml(path)['spec']['config'])
    config['ipam']['addresses'] = [{'address': address}]
    key = 'bridge' if config['type'] == 'bridge' else 'master'
    config[key] = parent
    return config


def configmap_files(path=CONFIGMAP):
    """``{file name: text}`` of the shipped ConfigMap."""
    return dict(_yaml(path)['data'])


def is_local(store_sections):
    """Whether ``store_sections`` are the local (SQLite) store's."""
    return store_sections.get('vmetal', {}).get('store', 'local') == 'local'


def lab_env(store_sections, debug=True):
    """Environment overrides: the lab's store options (all but how to
    reach the API server) and the lab agent's faster settings. The local
    store is the file in :data:`STATE_DIR`, whatever its host path."""
    env = {}
    if is_local(store_sections):
        env['OS_VMETAL__STORE'] = 'local'
        env['OS_VMETAL_LOCAL_STORE__DATABASE'] = f'{STATE_DIR}/' \
            f'{DATABASE_NAME}'
        # The shipped 30 s bounds the Kubernetes store's watch; the local
        # store is polled: as often as the lab's own agent polls it.
        env['OS_VMETAL_DHCP_AGENT__POLL_INTERVAL'] = str(LOCAL_POLL_INTERVAL)
    for group in ('vmetal', 'vmetal_kubernetes'):
        for option, value in store_sections.get(group, {}).items():
            if option in CONNECTION_OPTIONS or option == 'store':
                continue
            if isinstance(value, (list, tuple)):
                value = ','.join(value)
            env[f'OS_{group.upper()}__{option.upper()}'] = str(value)
    env.update({'OS_VMETAL_DHCP_AGENT__SEND_RA': 'true',
                'OS_VMETAL_DHCP_AGENT__NO_PXEDHCP': 'true'})
    if debug:
        # The lab observes the exchanges in the agent's debug lines.
        env['OS_DEFAULT__DEBUG'] = 'true'
    return env


def conf_env(text):
    """``OS_<GROUP>__<OPTION>`` overrides of the options in the
    configuration file ``text``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return {f'OS_{group.upper()}__{option.upper()}': value
            for group in parser.sections()
            for option, value in parser[group].items()}


def pod_directory(directory, spec):
    """Make ``directory`` a volume of the pod's own: owned by ``spec``'s
    uid and gid, closed to others (``0750``).

    :returns: ``directory`` as a path.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chown(directory, spec.uid, spec.gid)
    directory.chmod(0o750)
    return directory


def callback_tls_secret(extra_conf, directory, spec):
    """Mount the callback listener's certificate and key as the overlay
    mounts its TLS Secret: see :func:`secret_volume`
    (:data:`CALLBACK_TLS_DIR`)."""
    return secret_volume(extra_conf, directory, spec, CALLBACK_TLS_DIR,
                         CALLBACK_TLS_FILES)


def ironic_ca_secret(extra_conf, directory, spec):
    """Mount the CA of Ironic's API (``[vmetal_bridge]ca_file``) as the
    overlay mounts the Secret ``ironic-cacert``: see :func:`secret_volume`
    (:data:`IRONIC_CA_DIR`)."""
    return secret_volume(extra_conf, directory, spec, IRONIC_CA_DIR,
                         IRONIC_CA_FILES)


def secret_volume(extra_conf, directory, spec, mount, files):
    """Mount files that ``extra_conf``'s ``[vmetal_bridge]`` options name
    as the overlay mounts a Secret at ``mount``: files the lab wrote under
    its own directory, which the pod cannot see, are copied into
    ``directory`` (readable by ``spec``'s uid only, as a Secret volume with
    an ``fsGroup``), and the options are pointed at ``mount``.

    :param files: ``(option, key in the Secret)`` pairs.
    :returns: ``(extra_conf with the options rewritten, podman options)``;
        ``extra_conf`` unchanged and no options when it names no file.
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(extra_conf)
    if not parser.has_section('vmetal_bridge'):
        return extra_conf, []
    bridge = parser['vmetal_bridge']
    named = [(option, key) for option, key in files if bridge.get(option)]
    if not named:
        return extra_conf, []
    directory = pod_directory(directory, spec)
    for option, key in named:
        copy = directory / key
        shutil.copyfile(bridge[option], copy)
        os.chown(copy, spec.uid, spec.gid)
        copy.chmod(0o400)
        bridge[option] = f'{mount}/{key}'
    text = io.StringIO()
    parser.write(text)
    return text.getvalue(), [f'--volume={directory}:{mount}:ro']


def bridge_cache_volume(extra_conf, directory, spec):
    """Mount ``[vmetal_bridge]cache_dir`` as the overlay mounts its
    emptyDir: ``directory`` (the pod's uid's own, read-write: the
    container's root is read-only) at :data:`BRIDGE_CACHE_DIR`, the option
    pointed there.

    :returns: ``(extra_conf with cache_dir rewritten, podman options)``;
        ``extra_conf`` unchanged and no options when it sets no cache_dir.
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(extra_conf)
    if not parser.has_option('vmetal_bridge', 'cache_dir'):
        return extra_conf, []
    directory = pod_directory(directory, spec)
    parser['vmetal_bridge']['cache_dir'] = BRIDGE_CACHE_DIR
    text = io.StringIO()
    parser.write(text)
    return text.getvalue(), [f'--volume={directory}:{BRIDGE_CACHE_DIR}:rw']


def state_directory(directory, spec):
    """Make ``directory`` the local store's, owned by ``spec``'s uid and
    gid, holding an empty database file of theirs (SQLite takes an empty
    file for a new database).

    :returns: the database file's path.
    """
    database = pod_directory(directory, spec) / DATABASE_NAME
    database.touch(exist_ok=True)
    os.chown(database, spec.uid, spec.gid)
    database.chmod(0o640)
    return database


def service_account(kube_section, directory):
    """What kubelet mounts: ``token``, ``ca.crt``, ``namespace``.

    :returns: ``(directory, host, port)`` of the API server.
    :raises PodError: the store configuration has no token or CA.
    """
    url = urllib.parse.urlsplit(kube_section.get('api_url', ''))
    token = kube_section.get('token')
    if kube_section.get('token_file'):
        token = pathlib.Path(kube_section['token_file']).read_text().strip()
    if url.scheme != 'https' or not token or not kube_section.get('ca_file'):
        raise PodError('in-cluster configuration needs an https api_url, a '
                       'token (or token_file) and a ca_file in '
                       '[vmetal_kubernetes]')
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    (directory / 'token').write_text(token)
    shutil.copy(kube_section['ca_file'], directory / 'ca.crt')
    (directory / 'namespace').write_text(
        kube_section.get('namespace', 'vmetal-system'))
    for name in ('token', 'ca.crt', 'namespace'):
        (directory / name).chmod(0o644)
    return directory, url.hostname, url.port


class AgentPod:
    """The agent's pod on a lab topology; :meth:`close` removes it all.

    :param topology: a :class:`vmetal_ironic.lab.netns.Topology`; the
        parent of ``net1`` is its hub's bridge ``br0``.
    :param workdir: where the pod's files (config, token) are written.
    :param store_sections: ``{'vmetal': …, 'vmetal_kubernetes': …}`` of
        a Kubernetes store, or ``{'vmetal': …, 'vmetal_local_store': …}``
        of a local one whose database is in a :func:`state_directory`.
    :param address: ``net1``'s ``ip/prefix``.
    :param spec: a :class:`ContainerSpec`; the shipped Deployment's when
        ``None``.
    :param netns: the name of the handle on the pod's network namespace
        (``ip netns``); ``<prefix>p`` when ``None``.
    """

    def __init__(self, topology, workdir, store_sections, address,
                 spec=None, log=print, netns=None):
        self.topology = topology
        self.workdir = pathlib.Path(workdir)
        self.store_sections = store_sections
        self.address = address
        self.spec = spec or container_spec()
        self.log = log
        self.name = f'{topology.prefix}-agent'
        self.infra = f'{topology.prefix}-infra'
        self.netns = netns or f'{topology.prefix}p'
        self.infra_pid = None
        self.attached = None
        self.netns_attached = False
        self.process = None
        self.agent_log = topology.workdir / 'agent.log'

    # -- podman -----------------------------------------------------------

    def _podman(self, *argv, step, check=True, timeout=120):
        argv = agent_image.podman_argv('--runtime', str(RUNTIME), *argv)
        if not check:
            return subprocess.run(argv, env=agent_image.podman_env(),
                                  capture_output=True, text=True,
                                  timeout=timeout, check=False)
        try:
            return debian.run(argv, step, timeout=timeout,
                              env=agent_image.podman_env())
        except debian.BuildError as exc:
            raise PodError(str(exc)) from None

    def _start_infra(self, image):
        self._podman('run', '--pull=never', '--detach', '--name', self.infra,
                     '--network=none', '--ipc=shareable', '--read-only',
                     '--cap-drop=all', '--entrypoint', 'sleep', image,
                     'infinity', step='infra container')
        self.infra_pid = int(self._podman(
            'inspect', '--format', '{{.State.Pid}}', self.infra,
            step='podman inspect').strip())
        subprocess.run(['ip', 'netns', 'attach', self.netns,
                        str(self.infra_pid)], check=True,
                       capture_output=True)
        self.netns_attached = True
        self.topology.exec(self.netns, 'ip', 'link', 'set', 'lo', 'up')

    # -- CNI --------------------------------------------------------------

    def _cni(self, command, config):
        env = {'CNI_COMMAND': command, 'CNI_CONTAINERID': self.infra,
               'CNI_NETNS': (f'/proc/{self.infra_pid}/ns/net'
                             if self.infra_pid else ''),
               'CNI_IFNAME': INTERFACE, 'CNI_PATH': str(CNI_PATH),
               'PATH': '/usr/sbin:/usr/bin:/sbin:/bin'}
        plugin = CNI_PATH / config['type']
        result = subprocess.run(
            ['ip', 'netns', 'exec', self.topology.hub, str(plugin)],
            input=json.dumps(config), env=env, capture_output=True,
            text=True, timeout=30, check=False)
        if result.returncode != 0:
            try:
                error = json.loads(result.stdout)
                detail = f'{error.get("msg")} {error.get("details", "")}'
            except ValueError:
                detail = (result.stdout + result.stderr).strip()
            raise PodError(f'CNI {command} ({plugin}) failed: '
                           f'{detail.strip()}')
        return json.loads(result.stdout) if result.stdout.strip() else {}

    def _attach(self):
        config = attachment_config(self.address, 'br0')
        result = self._cni('ADD', config)
        self.attached = config
        shown = self.topology.exec(self.netns, 'ip', '-o', '-4', 'addr',
                                   'show', 'dev', INTERFACE).stdout
        if self.address not in shown:
            raise PodError(f'{INTERFACE} has no {self.address} after CNI '
                           f'ADD: {shown.strip()}')
        return result

    # -- the agent --------------------------------------------------------

    def _store_files(self):
        """How the pod reaches its store: ``(podman options, port of the
        API server to relay or None)``."""
        if is_local(self.store_sections):
            database = self.store_sections.get('vmetal_local_store', {}).get(
                'database')
            if not database:
                raise PodError('the local store needs [vmetal_local_store]'
                               'database')
            state = pathlib.Path(database).parent
            return [f'--volume={state}:{STATE_DIR}:rw'], None
        account, host, port = service_account(
            self.store_sections.get('vmetal_kubernetes', {}),
            self.workdir / 'serviceaccount')
        return [f'--volume={account}:{SERVICE_ACCOUNT}:ro',
                f'--env=KUBERNETES_SERVICE_HOST={host}',
                f'--env=KUBERNETES_SERVICE_PORT={port}'], port

    def _files(self, extra_conf=''):
        """The ConfigMap's files and the store's; ``-v`` and ``--env``
        options for them and for ``extra_conf``, and the API server's port
        to relay (``None`` for the local store)."""
        config_dir = self.workdir / 'configmap'
        config_dir.mkdir(parents=True, exist_ok=True)
        config_dir.chmod(0o755)
        for name, text in configmap_files().items():
            (config_dir / name).write_text(text)
            (config_dir / name).chmod(0o644)
        argv = [f'--volume={config_dir}:{path}:ro'
                for _name, path in self.spec.mounts]
        argv += [f'--tmpfs={path}:rw,size={size},mode=1777'
                 for path, size in self.spec.tmpfs]
        store, port = self._store_files()
        argv += store
        extra_conf, tls_volume = callback_tls_secret(
            extra_conf, self.workdir / 'callback-tls', self.spec)
        argv += tls_volume
        extra_conf, ca_volume = ironic_ca_secret(
            extra_conf, self.workdir / 'ironic-ca', self.spec)
        argv += ca_volume
        extra_conf, cache_volume = bridge_cache_volume(
            extra_conf, self.workdir / 'bridge-cache', self.spec)
        argv += cache_volume
        env = {**dict(self.spec.env), **lab_env(self.store_sections),
               **conf_env(extra_conf)}
        argv += [f'--env={key}={value}' for key, value in sorted(env.items())]
        return argv, port

    def _agent_text(self):
        return self.agent_log.read_text(errors='replace') \
            if self.agent_log.exists() else ''

    def make(self, image):
        """Make the pod: its infra container and ``net1``; the agent is
        started by :meth:`start`. Done once.

        :returns: the name of the pod's network namespace handle.
        :raises PodError: a step failed.
        """
        if self.infra_pid is None:
            self._start_infra(image)
            self._attach()
        return self.netns

    def start(self, image, extra_conf='', relay=True):
        """Make the pod (unless :meth:`make` did) and start the agent in it.

        :param extra_conf: configuration file text the lab adds to the
            ConfigMap's, given as environment overrides.
        :param relay: relay the Kubernetes store's API server into the
            pod (``False``: the lab already did).
        :returns: the ``Popen`` of ``podman run`` (attached: its output is
            the agent's log).
        :raises PodError: a step failed, or the agent did not start; the
            message ends with its output and, when the ``securityContext``
            explains it, why.
        """
        self.make(image)
        volumes, port = self._files(extra_conf)
        try:
            if port is not None and relay:
                proxy.start_outward(self.topology, self.netns, port)
        except OSError as exc:
            raise PodError(f'API relay into the pod: {exc}') from None
        argv = agent_image.podman_argv(
            '--runtime', str(RUNTIME), 'run', '--pull=never', '--rm',
            '--name', self.name,
            f'--network=container:{self.infra}',
            f'--ipc=container:{self.infra}', *security_args(self.spec),
            *volumes, image, *self.spec.args)
        self.process = self.topology.spawn(
            None, argv, self.agent_log.name, env=agent_image.podman_env(),
            stdin=subprocess.DEVNULL)
        if not observe.wait_for(
                lambda: 'serving on' in self._agent_text(), START_TIMEOUT,
                failed=lambda: self.process.poll() is not None):
            why = diagnose(self.spec)
            raise PodError(
                'vmetal-dhcp-agent in its image did not start'
                + (f': {why}' if why else '') + '\n'
                + self._agent_text()[-1500:])
        return self.process

    def agent_pid(self):
        """The agent's PID on the host (the container's first process)."""
        return int(self._podman('inspect', '--format', '{{.State.Pid}}',
                                self.name, step='podman inspect').strip())

    def close(self):
        """Remove the agent, ``net1`` (CNI DEL), the namespace handle and
        the infra container; safe after a failure and twice."""
        if self.process is not None:
            self._podman('rm', '--force', '--time', '2', self.name,
                         step='rm', check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
            self.process = None
        if self.attached is not None:
            with contextlib.suppress(PodError, subprocess.SubprocessError):
                self._cni('DEL', self.attached)
            self.attached = None
        if self.netns_attached:
            subprocess.run(['ip', 'netns', 'del', self.netns],
                           capture_output=True, check=False)
            self.netns_attached = False
        self._podman('rm', '--force', '--time', '0', self.infra, step='rm',
                     check=False)
        self.infra_pid = None


class LabAgent:
    """``--agent-image``: what the lab calls instead of starting its own
    agent process (:meth:`vmetal_ironic.lab.flow.Lab._start_agent`).

    :param store_sections: the Kubernetes store's sections
        (:func:`vmetal_ironic.lab.full_setup.load_store_config`), or
        ``None`` for the local store (see :meth:`local_database`).
    :raises vmetal_ironic.lab.flow.LabError: podman is missing, or a
        setting the pod cannot run with.
    """

    #: net1's address: the shipped attachment's host part in the lab's
    #: subnet, beside the server's.
    ADDRESS = '192.0.2.3'

    def __init__(self, store_sections, faults=False):
        # Imported here: flow imports nothing of this module, and this
        # one needs flow's error only for the lab.
        from vmetal_ironic.lab import flow
        self.flow = flow
        if shutil.which('podman') is None:
            raise flow.LabError('--agent-image: podman is missing; run '
                                'tools/install-deps lab')
        if faults:
            raise flow.LabError('--faults restarts the lab\'s own agent '
                                'process; not with --agent-image')
        self.pod = None
        self.spec = container_spec()
        self.image = None
        #: net1's address; the lab's server address when the pod bridges
        #: two networks (:meth:`make_pod`).
        self.address = self.ADDRESS

    def local_database(self, workdir):
        """The local store's file in a state directory of the pod's uid
        under ``workdir``, made now, before Ironic opens it."""
        return state_directory(pathlib.Path(workdir) / 'agent-state',
                               self.spec)

    def configure(self, sections):
        """Ironic's ``sections``: the TFTP server it names in the
        reservations is the pod's address, as in
        etc/kubernetes/metal3/ironic-vmetal.conf."""
        sections['pxe']['tftp_server'] = self.address

    def _image(self, lab):
        if self.image is None:
            try:
                name, seconds, cached = agent_image.build(lab.report.note)
                self.image = (name, seconds, cached,
                              agent_image.image_size(name))
            except debian.BuildError as exc:
                raise self.flow.LabError(f'agent image: {exc}') from None
        return self.image

    def _pod(self, lab, netns=None):
        if self.pod is None:
            self.pod = AgentPod(
                lab.topology, lab.workdir / 'agent-pod', lab.store_sections,
                f'{self.address}/{self.flow.PREFIX}', spec=self.spec,
                log=lab.report.note, netns=netns)
        return self.pod

    def make_pod(self, lab, label='a'):
        """With two networks: make the pod before the lab wires its
        cluster-side leg, ``net1`` holding the lab's server address (the
        machine reaches Ironic through the agent there).

        :returns: the pod's network namespace (``<prefix><label>``).
        :raises vmetal_ironic.lab.flow.LabError: a step failed.
        """
        self.address = self.flow.SERVER
        pod = self._pod(lab, netns=f'{lab.topology.prefix}{label}')
        try:
            return pod.make(self._image(lab)[0])
        except PodError as exc:
            raise self.flow.LabError(str(exc)) from None

    def start(self, lab):
        """Build (or find) the image, start the pod, set ``lab.agent``
        and ``lab.agent_log``. The lab's extra agent configuration (the
        bridge's, with two networks) is passed as environment overrides.

        :raises vmetal_ironic.lab.flow.LabError: a step failed.
        """
        image, seconds, cached, size = self._image(lab)
        pod = self._pod(lab)
        # Known once Ironic is configured: with two networks the pod was
        # made before.
        pod.store_sections = lab.store_sections
        try:
            # With two networks the lab relays the API into the agent's
            # namespace, the pod's.
            lab.agent = pod.start(image, extra_conf=lab.agent_extra,
                                  relay=lab.agent_ns != pod.netns)
        except PodError as exc:
            raise self.flow.LabError(str(exc)) from None
        lab.agent_log = pod.agent_log
        how = 'cached' if cached else f'built in {seconds:.0f}s'
        store = (f'local store in {STATE_DIR} (mounted, uid '
                 f'{self.spec.uid})' if is_local(lab.store_sections)
                 else 'in-cluster ServiceAccount')
        lab.report.done(
            'vmetal-dhcp-agent (image)',
            f'{image} ({size / 2**20:.0f} MiB, {how}) in a pod: {INTERFACE} '
            f'{pod.address} attached by CNI {pod.attached["type"]}, uid '
            f'{pod.spec.uid}, capabilities {",".join(pod.spec.add)}, '
            f'{store}' + (', bridging to the cluster network'
                          if lab.agent_ns == pod.netns else ''))

    def summary(self):
        return {'agent': 'image'}

    def close(self):
        if self.pod is not None:
            self.pod.close()
