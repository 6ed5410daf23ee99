"""The Kubernetes store: the API server is the single source of truth.

Objects (all labelled ``app.kubernetes.io/managed-by: vmetal-ironic``):

* one ConfigMap per pool, ``vmetal-ipam-<network>`` in
  ``[vmetal_kubernetes]namespace``, whose ``data`` maps ``"<ip>"`` to the
  owner ``"<Kind>/<namespace>/<name>"`` (vMetal's own model). An address is
  taken by a merge patch that carries the ``resourceVersion`` read: the API
  server applies it only if nobody wrote in between (compare-and-swap),
  otherwise answers 409 and the store reads again, a bounded number of
  times. No in-process lock is involved, so any number of processes on any
  number of machines may allocate at once. The 1 MiB ConfigMap ceiling is
  explained in :mod:`vmetal_ironic.store.kube_names`;
* per owner, a Secret ``vmetal-nd-<kind>-<name>`` with key ``networkData``
  (the Metal3 convention); for a BareMetalHost it lives in the host's
  namespace with an ownerReference to it, so the garbage collector deletes
  it with the host;
* on the BareMetalHost, the annotations ``metal3.vcluster.com/ip-address``
  (CIDR form), ``/gateway`` and ``/dns-servers`` that a DHCP server reads,
  and ``spec.networkData`` / ``spec.preprovisioningNetworkDataName``
  pointing at the Secret when the host has none of its own;
* one ConfigMap ``vmetal-dhcp-reservations`` whose ``data`` maps a MAC
  (dashes instead of colons, as keys allow no colon) to a reservation's
  JSON. Its ``resourceVersion`` is :meth:`reservations_revision`, and
  :meth:`KubernetesStore.watch_reservations` follows it with a watch.

Releasing when an owner disappears is :meth:`KubernetesStore.reconcile`,
run by :meth:`KubernetesStore.start_reconciler` at start and every
``[vmetal_kubernetes]reconcile_interval`` seconds by whichever process
hosts the store (and by ``vmetal-ipam reconcile``). Only owners of kind
``BareMetalHost`` are checked; other kinds are left alone.
"""

import base64
import json
import random
import threading
import time

import netaddr
from kubernetes import watch as k8s_watch
from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import network_data as network_data_mod
from vmetal_ironic import properties as props
from vmetal_ironic import reservation as reservation_mod
from vmetal_ironic.conf import kubernetes as kube_conf
from vmetal_ironic.ipam import allocator as ipam_allocator
from vmetal_ironic.ipam import errors as ipam_errors
from vmetal_ironic.store import base
from vmetal_ironic.store import kube_client
from vmetal_ironic.store import kube_names as names
from vmetal_ironic.store import kube_properties

LOG = log.getLogger(__name__)

BMH_API = ('metal3.io', 'v1alpha1', 'baremetalhosts')
BMH_KIND = 'BareMetalHost'
MERGE_PATCH = 'application/merge-patch+json'
SECRET_KEY = 'networkData'  # noqa: S105 - the Metal3 key name
# Annotation recording the values the store wrote onto a host, so that on
# the next pass they are not mistaken for the user's own properties.
WRITTEN_ANNOTATION = names.LABEL_PREFIX + 'written'
OUTPUT_ANNOTATIONS = (props.IP_ADDRESS, props.GATEWAY, props.DNS_SERVERS)


def _parse_api(text, option):
    parts = str(text).strip('/').split('/')
    if len(parts) != 3 or not all(parts):
        raise exception.PermanentError(
            f'[vmetal_kubernetes]{option} {text!r} is not group/version/plural')
    return tuple(parts)


def _address_int(text):
    try:
        return int(netaddr.IPAddress(text, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None


def _conflict_pause(attempt):
    """Jittered, growing pause between two compare-and-swap attempts, so
    that losers do not all come back at the same instant."""
    time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6))))  # noqa: S311


class KubernetesStore(base.Store):
    """:class:`~vmetal_ironic.store.base.Store` on the Kubernetes API.

    :param conf: an oslo.config object; ``[vmetal_kubernetes]`` is
        registered on it when missing.
    :param api: a prepared :class:`~vmetal_ironic.store.kube_client.Api`
        (tests and benchmarks); built from the options when ``None``.
    :raises vmetal_ironic.exception.PermanentError: no usable API
        configuration.
    """

    def __init__(self, conf, api=None):
        kube_conf.register_opts(conf)
        self.conf = conf
        self.group = conf.vmetal_kubernetes
        self.namespace = self.group.namespace
        self.api = api or kube_client.Api(self.group)
        self._providers_api = _parse_api(self.group.node_provider_api,
                                         'node_provider_api')
        self._environments_api = _parse_api(
            self.group.network_environment_api, 'network_environment_api')
        self._stop = threading.Event()
        self._reconciler = None

    # -- helpers ------------------------------------------------------------

    def _labels(self, component, **extra):
        labels = dict(names.MANAGED_BY)
        labels[names.LABEL_COMPONENT] = component
        labels.update(extra)
        return labels

    def _get_configmap(self, name):
        try:
            return self.api.call(f'get ConfigMap {self.namespace}/{name}',
                                 self.api.core.read_namespaced_config_map,
                                 name, self.namespace)
        except kube_client.ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _pool_configmaps(self):
        selector = f'{names.LABEL_COMPONENT}={names.COMPONENT_IPAM}'
        result = self.api.call(
            f'list ConfigMaps {self.namespace} -l {selector}',
            self.api.core.list_namespaced_config_map, self.namespace,
            label_selector=selector)
        return result.items

    def _patch_configmap(self, name, resource_version, data):
        body = {'metadata': {'resourceVersion': resource_version},
                'data': data}
        return self.api.call(
            f'update ConfigMap {self.namespace}/{name}',
            self.api.core.patch_namespaced_config_map, name, self.namespace,
            body, _content_type=MERGE_PATCH)

    def _create_configmap(self, name, labels, annotations, data):
        body = {'apiVersion': 'v1', 'kind': 'ConfigMap',
                'metadata': {'name': name, 'namespace': self.namespace,
                             'labels': labels, 'annotations': annotations},
                'data': data}
        return self.api.call(
            f'create ConfigMap {self.namespace}/{name}',
            self.api.core.create_namespaced_config_map, self.namespace, body)

    def _get_host(self, namespace, name):
        """:returns: the BareMetalHost dict, or ``None``."""
        group, version, plural = BMH_API
        try:
            return self.api.call(
                f'get BareMetalHost {namespace}/{name}',
                self.api.custom.get_namespaced_custom_object,
                group, version, namespace, plural, name)
        except kube_client.ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _require_host(self, owner):
        kind, namespace, name = names.parse_owner(owner)
        if kind != BMH_KIND or namespace is None:
            return None
        host = self._get_host(namespace, name)
        if host is None:
            raise exception.NotFound(
                f'BareMetalHost {namespace}/{name} does not exist')
        return host

    def _list_cluster_objects(self, api, what):
        group, version, plural = api
        try:
            result = self.api.call(
                f'list {plural}.{group}',
                self.api.custom.list_cluster_custom_object,
                group, version, plural)
        except kube_client.ApiError as exc:
            if exc.status == 404:
                # The CRD is not installed: that layer is simply absent.
                LOG.debug('%s: %s is not served; no such layer', what, plural)
                return []
            raise
        return result.get('items') or []

    # -- allocations --------------------------------------------------------

    @staticmethod
    def _find_owner(configmaps, owner):
        for configmap in configmaps:
            for address, held_by in (configmap.data or {}).items():
                if held_by == owner:
                    return configmap, address
        return None, None

    def _held(self, configmap, address, pool, owner, mac):
        if (configmap.metadata.name == names.pool_configmap_name(pool.key)
                and _address_int(address) is not None
                and pool.contains(address)):
            return base.Allocation(owner=owner, pool=pool.key,
                                   address=address, mac=mac)
        network = (configmap.metadata.annotations or {}).get(
            names.ANNOTATION_NETWORK, configmap.metadata.name)
        raise ipam_errors.OwnerElsewhere(
            f'owner {owner!r} already holds {address} in pool {network}, '
            f'which pool {pool.name} may not hand out; release it first')

    def allocate(self, pool, owner, mac=None):
        names.parse_owner(owner)
        name = names.pool_configmap_name(pool.key)
        what = f'ConfigMap {self.namespace}/{name}'
        configmaps = self._pool_configmaps()
        held_in, address = self._find_owner(configmaps, owner)
        if held_in is not None:
            return self._held(held_in, address, pool, owner, mac)
        target = next((cm for cm in configmaps if cm.metadata.name == name),
                      None)
        for attempt in range(self.group.max_conflict_retries):
            if attempt:
                _conflict_pause(attempt)
                target = self._get_configmap(name)
                if target is not None:
                    held_in, address = self._find_owner([target], owner)
                    if held_in is not None:
                        # Our own earlier write may have landed although
                        # its answer was lost: that is success, not a
                        # second address.
                        return self._held(held_in, address, pool, owner, mac)
            data = (target.data or {}) if target is not None else {}
            used = [value for value in map(_address_int, data)
                    if value is not None]
            value = ipam_allocator.Allocator(pool, used).allocate()
            address = str(netaddr.IPAddress(value))
            names.check_ceiling(data, address, owner, what)
            try:
                if target is None:
                    self._create_configmap(
                        name,
                        self._labels(names.COMPONENT_IPAM,
                                     **{names.LABEL_POOL:
                                        names.pool_label(pool.key)}),
                        {names.ANNOTATION_NETWORK: pool.key},
                        {address: owner})
                else:
                    self._patch_configmap(name,
                                          target.metadata.resource_version,
                                          {address: owner})
            except kube_client.ApiError as exc:
                # 409: someone wrote first (or the ConfigMap was created
                # meanwhile); 404: it was deleted. Either way, read again.
                if exc.status in (404, 409):
                    continue
                raise
            LOG.info('Allocated %(address)s from pool %(pool)s to %(owner)s',
                     {'address': address, 'pool': pool.name, 'owner': owner})
            return base.Allocation(owner=owner, pool=pool.key,
                                   address=address, mac=mac)
        raise exception.StoreConflict(
            f'{what}: allocation for {owner!r} lost to concurrent writers '
            f'{self.group.max_conflict_retries} times; try again')

    def _release_address(self, owner):
        configmaps = self._pool_configmaps()
        configmap, address = self._find_owner(configmaps, owner)
        for attempt in range(self.group.max_conflict_retries):
            if configmap is None:
                return None
            if attempt:
                _conflict_pause(attempt)
                configmap = self._get_configmap(configmap.metadata.name)
                if configmap is None:
                    return None
                configmap, address = self._find_owner([configmap], owner)
                if configmap is None:
                    return None
            try:
                self._patch_configmap(configmap.metadata.name,
                                      configmap.metadata.resource_version,
                                      {address: None})
            except kube_client.ApiError as exc:
                if exc.status in (404, 409):
                    continue
                raise
            pool_key = (configmap.metadata.annotations or {}).get(
                names.ANNOTATION_NETWORK, configmap.metadata.name)
            return base.Allocation(owner=owner, pool=pool_key, address=address)
        raise exception.StoreConflict(
            f'ConfigMap {self.namespace}/{configmap.metadata.name}: release '
            f'of {owner!r} lost to concurrent writers '
            f'{self.group.max_conflict_retries} times; try again')

    def release(self, owner):
        kind, namespace, name = names.parse_owner(owner)
        allocation = self._release_address(owner)
        secret_ns = namespace or self.namespace
        secret_name = names.network_data_secret_name(owner)
        try:
            self.api.call(f'delete Secret {secret_ns}/{secret_name}',
                          self.api.core.delete_namespaced_secret,
                          secret_name, secret_ns)
        except kube_client.ApiError as exc:
            if exc.status != 404:
                raise
        if kind == BMH_KIND and namespace is not None:
            self._clear_host_outputs(namespace, name, secret_name)
        if allocation is not None:
            LOG.info('Released %(address)s of pool %(pool)s from %(owner)s',
                     {'address': allocation.address,
                      'pool': allocation.pool, 'owner': owner})
        return allocation

    def get_allocation(self, owner):
        configmap, address = self._find_owner(self._pool_configmaps(), owner)
        if configmap is None:
            return None
        pool_key = (configmap.metadata.annotations or {}).get(
            names.ANNOTATION_NETWORK, configmap.metadata.name)
        return base.Allocation(owner=owner, pool=pool_key, address=address)

    def list_allocations(self, pool_key=None):
        result = []
        for configmap in self._pool_configmaps():
            key = (configmap.metadata.annotations or {}).get(
                names.ANNOTATION_NETWORK, configmap.metadata.name)
            if pool_key is not None and key != pool_key:
                continue
            for address, owner in (configmap.data or {}).items():
                if _address_int(address) is not None:
                    result.append(base.Allocation(owner=owner, pool=key,
                                                  address=address))
        result.sort(key=lambda a: (a.pool, _address_int(a.address)))
        return result

    # -- network data and host outputs ---------------------------------------

    def _write_secret(self, owner, namespace, document, host):
        secret_name = names.network_data_secret_name(owner)
        kind, _, _ = names.parse_owner(owner)
        metadata = {
            'name': secret_name, 'namespace': namespace,
            'labels': self._labels(names.COMPONENT_NETWORK_DATA,
                                   **{names.LABEL_OWNER_KIND: kind.lower()}),
            'annotations': {names.ANNOTATION_OWNER: owner},
        }
        if host is not None:
            metadata['ownerReferences'] = [{
                'apiVersion': '/'.join(BMH_API[:2]), 'kind': BMH_KIND,
                'name': host['metadata']['name'],
                'uid': host['metadata']['uid'],
            }]
        encoded = base64.b64encode(
            json.dumps(document, sort_keys=True).encode()).decode()
        body = {'apiVersion': 'v1', 'kind': 'Secret', 'type': 'Opaque',
                'metadata': metadata, 'data': {SECRET_KEY: encoded}}
        what = f'Secret {namespace}/{secret_name}'
        try:
            current = self.api.call(f'get {what}',
                                    self.api.core.read_namespaced_secret,
                                    secret_name, namespace)
        except kube_client.ApiError as exc:
            if exc.status != 404:
                raise
            current = None
        if current is not None and self._secret_matches(current, body):
            return secret_name
        try:
            if current is None:
                self.api.call(f'create {what}',
                              self.api.core.create_namespaced_secret,
                              namespace, body)
                return secret_name
        except kube_client.ApiError as exc:
            if exc.status != 409:
                raise
        # Unconditional replace: the Secret is ours alone and always holds
        # the latest document.
        self.api.call(f'replace {what}',
                      self.api.core.replace_namespaced_secret,
                      secret_name, namespace, body)
        return secret_name

    @staticmethod
    def _secret_matches(current, body):
        """Whether the stored Secret already says what ``body`` says."""
        references = [(ref.kind, ref.name, ref.uid) for ref in
                      current.metadata.owner_references or []]
        wanted = [(ref['kind'], ref['name'], ref['uid']) for ref in
                  body['metadata'].get('ownerReferences', [])]
        return (current.data or {}) == body['data'] and references == wanted

    @staticmethod
    def _outputs(document):
        """Annotations describing a document's primary IPv4 network."""
        primary = network_data_mod.primary_ipv4(document)
        outputs = dict.fromkeys(OUTPUT_ANNOTATIONS)
        if primary is None:
            return outputs
        address, netmask, gateway, _ = primary
        prefix = netaddr.IPAddress(netmask).netmask_bits() if netmask else 32
        outputs[props.IP_ADDRESS] = f'{address}/{prefix}'
        outputs[props.GATEWAY] = gateway
        dns = [s.get('address') for s in document.get('services') or []
               if s.get('type') == 'dns' and s.get('address')]
        outputs[props.DNS_SERVERS] = ','.join(dns) or None
        return outputs

    def _patch_host(self, namespace, name, build_patch, host=None):
        """Compare-and-swap patch of a host.

        :param build_patch: ``host -> patch dict or None`` (``None``: no
            change needed).
        :param host: the host as just read, saving the first GET.
        """
        group, version, plural = BMH_API
        for attempt in range(self.group.max_conflict_retries):
            if attempt:
                _conflict_pause(attempt)
            if attempt or host is None:
                host = self._get_host(namespace, name)
            if host is None:
                return
            patch = build_patch(host)
            if not patch:
                return
            patch.setdefault('metadata', {})['resourceVersion'] = (
                host['metadata']['resourceVersion'])
            try:
                self.api.call(
                    f'update BareMetalHost {namespace}/{name}',
                    self.api.custom.patch_namespaced_custom_object,
                    group, version, namespace, plural, name, patch,
                    _content_type=MERGE_PATCH)
                return
            except kube_client.ApiError as exc:
                if exc.status == 409:
                    continue
                if exc.status == 404:
                    return
                raise
        raise exception.StoreConflict(
            f'BareMetalHost {namespace}/{name}: update lost to concurrent '
            f'writers {self.group.max_conflict_retries} times; try again')

    def save_network_data(self, owner, document):
        _, namespace, name = names.parse_owner(owner)
        host = self._require_host(owner)
        secret_name = self._write_secret(owner, namespace or self.namespace,
                                         document, host)
        if host is None:
            return
        outputs = self._outputs(document)

        def build_patch(current):
            annotations = current['metadata'].get('annotations') or {}
            spec = current.get('spec') or {}
            changes = {key: value for key, value in outputs.items()
                       if annotations.get(key) != value}
            before = kube_properties.written_values(annotations,
                                                    WRITTEN_ANNOTATION)
            # A value is ours if we change it now, or wrote it earlier and
            # nobody changed it since; a value the user had set already is
            # the user's and stays an input property.
            written = {key: value for key, value in outputs.items()
                       if value is not None
                       and (annotations.get(key) != value
                            or before.get(key) == value)}
            if before != written:
                changes[WRITTEN_ANNOTATION] = json.dumps(written,
                                                         sort_keys=True)
            spec_changes = {}
            # Never replace what a user (or Metal3) set on the host.
            if not (spec.get('networkData') or {}).get('name'):
                spec_changes['networkData'] = {'name': secret_name,
                                               'namespace': namespace}
            if not spec.get('preprovisioningNetworkDataName'):
                spec_changes['preprovisioningNetworkDataName'] = secret_name
            patch = {}
            if changes:
                patch['metadata'] = {'annotations': changes}
            if spec_changes:
                patch['spec'] = spec_changes
            return patch

        self._patch_host(namespace, name, build_patch, host)

    def _clear_host_outputs(self, namespace, name, secret_name):
        def build_patch(current):
            annotations = current['metadata'].get('annotations') or {}
            spec = current.get('spec') or {}
            changes = {key: None for key in (*OUTPUT_ANNOTATIONS,
                                             WRITTEN_ANNOTATION)
                       if key in annotations}
            spec_changes = {}
            if (spec.get('networkData') or {}).get('name') == secret_name:
                spec_changes['networkData'] = None
            if spec.get('preprovisioningNetworkDataName') == secret_name:
                spec_changes['preprovisioningNetworkDataName'] = None
            patch = {}
            if changes:
                patch['metadata'] = {'annotations': changes}
            if spec_changes:
                patch['spec'] = spec_changes
            return patch

        self._patch_host(namespace, name, build_patch)

    def get_network_data(self, owner):
        _, namespace, _ = names.parse_owner(owner)
        secret_ns = namespace or self.namespace
        secret_name = names.network_data_secret_name(owner)
        try:
            secret = self.api.call(f'get Secret {secret_ns}/{secret_name}',
                                   self.api.core.read_namespaced_secret,
                                   secret_name, secret_ns)
        except kube_client.ApiError as exc:
            if exc.status == 404:
                return None
            raise
        encoded = (secret.data or {}).get(SECRET_KEY)
        if encoded is None:
            return None
        try:
            return json.loads(base64.b64decode(encoded))
        except ValueError:
            raise exception.InvalidNetworkData(
                f'Secret {secret_ns}/{secret_name} key {SECRET_KEY} is not '
                'JSON') from None

    # -- properties ---------------------------------------------------------

    def host_properties(self, owner):
        """Layers of a BareMetalHost owner: its annotations, its node
        type's properties, the (default) Network Environment's properties.
        Other kinds of owner have none here.

        :raises vmetal_ironic.exception.NotFound: the host does not exist.
        :raises vmetal_ironic.exception.InvalidProperty: ambiguous or
            unknown node type or environment.
        """
        host = self._require_host(owner)
        if host is None:
            return []
        providers = self._list_cluster_objects(self._providers_api,
                                               'node types')
        environments = self._list_cluster_objects(self._environments_api,
                                                  'network environments')
        return kube_properties.layers(host, providers, environments,
                                      self.group.node_type_label,
                                      written_annotation=WRITTEN_ANNOTATION)

    # -- reservations -------------------------------------------------------

    def _reservations_configmap(self):
        return self._get_configmap(names.RESERVATIONS_NAME)

    def publish_reservation(self, reservation):
        key = names.mac_key(reservation.mac)
        value = reservation.to_json()
        what = f'ConfigMap {self.namespace}/{names.RESERVATIONS_NAME}'
        for attempt in range(self.group.max_conflict_retries):
            if attempt:
                _conflict_pause(attempt)
            current = self._reservations_configmap()
            try:
                if current is None:
                    self._create_configmap(
                        names.RESERVATIONS_NAME,
                        self._labels(names.COMPONENT_RESERVATIONS), {},
                        {key: value})
                    return
                data = dict(current.data or {})
                if data.get(key) == value:
                    return
                data.pop(key, None)
                names.check_ceiling(data, key, value, what)
                self._patch_configmap(names.RESERVATIONS_NAME,
                                      current.metadata.resource_version,
                                      {key: value})
                return
            except kube_client.ApiError as exc:
                if exc.status == 409:
                    continue
                raise
        raise exception.StoreConflict(
            f'{what}: reservation of {reservation.mac} lost to concurrent '
            f'writers {self.group.max_conflict_retries} times; try again')

    def withdraw_reservation(self, mac):
        key = names.mac_key(network_data_mod.normalize_mac(mac))
        for attempt in range(self.group.max_conflict_retries):
            if attempt:
                _conflict_pause(attempt)
            current = self._reservations_configmap()
            if current is None or key not in (current.data or {}):
                return False
            try:
                self._patch_configmap(names.RESERVATIONS_NAME,
                                      current.metadata.resource_version,
                                      {key: None})
                return True
            except kube_client.ApiError as exc:
                if exc.status in (404, 409):
                    continue
                raise
        raise exception.StoreConflict(
            f'ConfigMap {self.namespace}/{names.RESERVATIONS_NAME}: '
            f'withdrawal of {mac} lost to concurrent writers '
            f'{self.group.max_conflict_retries} times; try again')

    @staticmethod
    def _parse_reservations(configmap):
        result = []
        for key, text in sorted(((configmap.data or {}) if configmap
                                 else {}).items()):
            try:
                result.append(reservation_mod.Reservation.from_json(text))
            except exception.InvalidProperty as exc:
                # One bad entry must not stop the agent serving the others.
                LOG.warning('Skipping reservation %(key)s: %(err)s',
                            {'key': key, 'err': exc})
        return result

    def list_reservations(self):
        return self._parse_reservations(self._reservations_configmap())

    def reservations_revision(self):
        """The reservations ConfigMap's resourceVersion (``'0'`` when it
        does not exist yet): one small GET."""
        current = self._reservations_configmap()
        return '0' if current is None else current.metadata.resource_version

    def watch_reservations(self, stop=None, timeout=60):
        """Follow the reservations: yields ``(revision, [Reservation])``.

        The first item is the current state; then one item per change, as
        the API server reports it through a watch. Connection trouble is
        retried with backoff (the generator never raises for it; the last
        state stays valid meanwhile). Returns when ``stop`` (a
        ``threading.Event``) is set; it is checked at least every
        ``timeout`` seconds.

        :raises vmetal_ironic.exception.PermanentError: e.g. the RBAC does
            not allow reading or watching the ConfigMap.
        """
        stop = stop or self._stop
        delay = self.group.retry_backoff
        field = f'metadata.name={names.RESERVATIONS_NAME}'
        while not stop.is_set():
            try:
                current = self._reservations_configmap()
                revision = (current.metadata.resource_version
                            if current is not None else None)
                yield revision or '0', self._parse_reservations(current)
                watcher = k8s_watch.Watch()
                kwargs = {'field_selector': field,
                          'timeout_seconds': max(1, int(timeout)),
                          '_request_timeout': (self.group.connect_timeout,
                                               timeout + 5)}
                if revision:
                    kwargs['resource_version'] = revision
                for event in watcher.stream(
                        self.api.core.list_namespaced_config_map,
                        self.namespace, **kwargs):
                    obj = event['object']
                    if event['type'] == 'DELETED':
                        yield obj.metadata.resource_version, []
                    elif event['type'] in ('ADDED', 'MODIFIED'):
                        yield (obj.metadata.resource_version,
                               self._parse_reservations(obj))
                    if stop.is_set():
                        watcher.stop()
                        return
                delay = self.group.retry_backoff
            except exception.PermanentError:
                # Forbidden or invalid: retrying cannot help; let the
                # agent report it.
                raise
            except exception.StoreUnavailable as exc:
                LOG.warning('Reservations watch: %s', exc)
                stop.wait(delay)
                delay = min(max(delay * 2, 0.1), self.group.retry_backoff_max)
            except Exception as exc:
                # Watch streams end with urllib3 errors, 410 Gone or ERROR
                # events; the answer is always to list and watch again.
                LOG.info('Reservations watch restarts: %s', exc)
                stop.wait(delay)
                delay = min(max(delay * 2, 0.1), self.group.retry_backoff_max)

    def wait_reservations_change(self, revision, timeout):
        """Block until the reservations change after ``revision``.

        The DHCP agent's poller calls this between reloads: one watch
        request per ``timeout`` instead of a GET per poll, and a change is
        seen as soon as the API server reports it. Watching from
        ``revision`` means a change made between the agent's last read and
        this call is not missed.

        :param revision: the revision the agent's cache holds.
        :param timeout: seconds to wait at most.
        :returns: ``True`` when a change was reported, ``False`` on timeout.
        :raises vmetal_ironic.exception.VmetalError: the watch failed; the
            caller falls back to polling.
        """
        kwargs = {'field_selector':
                  f'metadata.name={names.RESERVATIONS_NAME}',
                  'timeout_seconds': max(1, int(timeout)),
                  '_request_timeout': (self.group.connect_timeout,
                                       max(1, int(timeout)) + 5)}
        if revision and revision != '0':
            kwargs['resource_version'] = revision
        watcher = k8s_watch.Watch()
        try:
            for event in watcher.stream(
                    self.api.core.list_namespaced_config_map,
                    self.namespace, **kwargs):
                obj = event['object']
                if (event['type'] in ('ADDED', 'MODIFIED', 'DELETED')
                        and obj.metadata.resource_version != revision):
                    watcher.stop()
                    return True
        except Exception as exc:
            raise exception.StoreUnavailable(
                f'watch of ConfigMap {self.namespace}/'
                f'{names.RESERVATIONS_NAME} failed: {exc}') from None
        return False

    # -- automatic release --------------------------------------------------

    def _existing_hosts(self):
        group, version, plural = BMH_API
        result = self.api.call(f'list {plural}.{group}',
                               self.api.custom.list_cluster_custom_object,
                               group, version, plural)
        return {(item['metadata']['namespace'], item['metadata']['name'])
                for item in result.get('items') or []}

    @staticmethod
    def _dead_entries(data, hosts):
        dead = {}
        for address, owner in (data or {}).items():
            try:
                kind, namespace, name = names.parse_owner(owner)
            except exception.InvalidProperty:
                continue
            if kind == BMH_KIND and (namespace, name) not in hosts:
                dead[address] = owner
        return dead

    def reconcile(self):
        """Free the addresses of BareMetalHosts that no longer exist.

        Pools are listed before hosts: an allocation made after the pool
        listing is not looked at, and one made before it belongs to a host
        created before it, so a live host is never released. Releasing is a
        compare-and-swap per pool and idempotent. The hosts' Secrets go
        with them through garbage collection (ownerReferences).

        :returns: the released :class:`~vmetal_ironic.store.base.Allocation`
            list.
        """
        configmaps = self._pool_configmaps()
        hosts = self._existing_hosts()
        released = []
        for configmap in configmaps:
            name = configmap.metadata.name
            pool_key = (configmap.metadata.annotations or {}).get(
                names.ANNOTATION_NETWORK, name)
            for attempt in range(self.group.max_conflict_retries):
                if attempt:
                    _conflict_pause(attempt)
                    configmap = self._get_configmap(name)
                    if configmap is None:
                        break
                dead = self._dead_entries(configmap.data, hosts)
                if not dead:
                    break
                try:
                    self._patch_configmap(name,
                                          configmap.metadata.resource_version,
                                          dict.fromkeys(dead))
                except kube_client.ApiError as exc:
                    if exc.status in (404, 409):
                        continue
                    raise
                for address, owner in sorted(dead.items()):
                    LOG.info('Released %(address)s of pool %(pool)s: owner '
                             '%(owner)s no longer exists',
                             {'address': address, 'pool': pool_key,
                              'owner': owner})
                    released.append(base.Allocation(owner=owner, pool=pool_key,
                                                    address=address))
                break
        return released

    def start_reconciler(self, interval=None):
        """Reconcile now, then every ``interval`` seconds in a daemon thread.

        The first pass runs before this returns, so addresses of hosts
        deleted while nothing was running are free once the hosting process
        has started. Errors of a pass are logged, never raised.

        :param interval: seconds; ``[vmetal_kubernetes]reconcile_interval``
            when ``None``; 0 means only the first pass.
        :returns: the first pass's released allocations.
        """
        interval = (self.group.reconcile_interval if interval is None
                    else interval)
        released = self._reconcile_logged()
        if interval and self._reconciler is None:
            self._reconciler = threading.Thread(
                target=self._reconcile_loop, args=(interval,),
                name='vmetal-reconcile', daemon=True)
            self._reconciler.start()
        return released

    def _reconcile_logged(self):
        try:
            return self.reconcile()
        except exception.VmetalError as exc:
            LOG.warning('Reconcile pass failed: %s', exc)
            return []

    def _reconcile_loop(self, interval):
        while not self._stop.wait(interval):
            self._reconcile_logged()

    def close(self):
        self._stop.set()
        if self._reconciler is not None:
            self._reconciler.join(timeout=self.group.request_timeout + 5)
            self._reconciler = None
        self.api.close()
