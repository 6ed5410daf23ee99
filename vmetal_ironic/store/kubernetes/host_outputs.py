"""What the store writes for a host: the network-data Secret and the
outputs on the BareMetalHost (annotations, Secret references).

The Secret ``vmetal-nd-<kind>-<name>`` (key ``networkData``, the Metal3
convention) lives in the owner's namespace; for a BareMetalHost it carries
an ownerReference so the garbage collector deletes it with the host. It is
written without reading it first (create, and replace when it exists), so
the store's identity needs no ``get`` on Secrets to work: it cannot read
Secrets it did not write (see ``etc/kubernetes/rbac``).
"""

import base64
import json

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import network_data
from vmetal_ironic.store.kubernetes import kube_client
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import patches
from vmetal_ironic.store.kubernetes import resources

LOG = log.getLogger(__name__)

BMH_API = ('metal3.io', 'v1alpha1', 'baremetalhosts')
BMH_KIND = 'BareMetalHost'
SECRET_KEY = 'networkData'  # noqa: S105 - the Metal3 key name


def secret_body(owner, namespace, document, host=None):
    """The network-data Secret of ``owner`` (pure)."""
    metadata = {
        'name': names.network_data_secret_name(owner),
        'namespace': namespace,
        'labels': dict(names.MANAGED_BY, **{
            names.LABEL_COMPONENT: names.COMPONENT_NETWORK_DATA,
            names.LABEL_OWNER_KIND: owner.kind.lower(),
            names.LABEL_OWNER: owner.label}),
        'annotations': {names.ANNOTATION_OWNER: str(owner)},
    }
    if host is not None:
        metadata['ownerReferences'] = [{
            'apiVersion': '/'.join(BMH_API[:2]), 'kind': BMH_KIND,
            'name': host['metadata']['name'],
            'uid': host['metadata']['uid'],
        }]
    encoded = base64.b64encode(
        json.dumps(document, sort_keys=True).encode()).decode()
    return {'apiVersion': 'v1', 'kind': 'Secret', 'type': 'Opaque',
            'metadata': metadata, 'data': {SECRET_KEY: encoded}}


class HostOutputs:
    """Secrets and host outputs.

    :param api: a :class:`~vmetal_ironic.store.kubernetes.kube_client.Api`.
    :param namespace: the store's namespace (Secrets of owners without
        a namespace).
    :param attempts: bound of compare-and-swap attempts.
    """

    def __init__(self, api, namespace, attempts=50):
        self.api = api
        self.namespace = namespace
        self.attempts = attempts
        # Every namespace's hosts: the store follows Metal3 wherever it is.
        self.hosts = resources.Collection(api, BMH_API, BMH_KIND,
                                          unserved_is_error=True)

    def get_host(self, namespace, name):
        """:returns: the BareMetalHost dict, or ``None``.

        :raises vmetal_ironic.exception.StoreUnavailable: BareMetalHosts
            are not served (yet).
        """
        return self.hosts.in_namespace(namespace).get(name)

    def patch_host(self, namespace, name, build, host=None):
        """Compare-and-swap patch of a host.

        :param build: ``host -> merge patch or None`` (see
            :mod:`~vmetal_ironic.store.kubernetes.patches`).
        :param host: the host as just read, saving the first GET.
        """
        hosts = self.hosts.in_namespace(namespace)
        given = {'host': host}

        def read():
            # The host handed in serves the first attempt only.
            current = given.pop('host', None)
            return current or hosts.get(name)

        def build_conditional(current):
            if current is None:
                return None
            patch = build(current)
            if patch:
                patch.setdefault('metadata', {})['resourceVersion'] = (
                    current['metadata']['resourceVersion'])
            return patch or None

        resources.compare_and_swap(
            read, build_conditional,
            lambda _current, patch: hosts.patch(name, patch),
            hosts.what(name), self.attempts)

    def write_secret(self, owner, namespace, document, host=None):
        body = secret_body(owner, namespace, document, host)
        name = body['metadata']['name']
        what = f'Secret {namespace}/{name}'
        try:
            self.api.call(f'create {what}',
                          self.api.core.create_namespaced_secret,
                          namespace, body)
            return name
        except kube_client.ApiError as exc:
            if exc.status != 409:
                raise
        # The name is ours (vmetal-nd-...): replace it unconditionally with
        # the latest document instead of reading it first.
        self.api.call(f'replace {what}',
                      self.api.core.replace_namespaced_secret,
                      name, namespace, body)
        return name

    def delete_secret(self, owner, namespace):
        name = names.network_data_secret_name(owner)
        try:
            self.api.call(f'delete Secret {namespace}/{name}',
                          self.api.core.delete_namespaced_secret,
                          name, namespace)
        except kube_client.ApiError as exc:
            if exc.status != 404:
                raise

    def read_secret(self, owner, namespace):
        name = names.network_data_secret_name(owner)
        try:
            secret = self.api.call(f'get Secret {namespace}/{name}',
                                   self.api.core.read_namespaced_secret,
                                   name, namespace)
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
                f'Secret {namespace}/{name} key {SECRET_KEY} is not '
                'JSON') from None

    def save(self, owner, document, host=None, ipv4=None, note=None):
        """Write the Secret, then the outputs on ``host`` (if any).

        :param ipv4: the primary IPv4 the domain computed; read from the
            document only when not given.
        :param note: see :attr:`~vmetal_ironic.store.base.Subject.note`;
            called once, before the first attempt of the host patch.
        """
        namespace = owner.namespace or self.namespace
        secret_name = self.write_secret(owner, namespace, document, host)
        if host is None:
            return
        primary = ipv4 or network_data.primary(document)
        outputs = patches.outputs_of(primary)
        extra = note(primary) if note is not None else None
        metadata = host['metadata']
        self.patch_host(
            metadata['namespace'], metadata['name'],
            lambda current: patches.save_patch(current, outputs, secret_name,
                                               metadata['namespace'], extra),
            host)

    def clear(self, owner, host_namespace=None, host_name=None):
        """Take the outputs back off the host, then delete the Secret."""
        secret_name = names.network_data_secret_name(owner)
        if host_name is not None:
            self.patch_host(
                host_namespace, host_name,
                lambda current: patches.release_patch(current, secret_name))
        self.delete_secret(owner, owner.namespace or self.namespace)
