"""Connection to the Kubernetes API: configuration, timeouts, retries.

Every API call of the store goes through :meth:`Api.call`, which applies
the request timeout and retries, with exponential backoff, the failures
that are worth retrying: connection errors, timeouts, HTTP 5xx and 429.
When the retries run out the call raises
:class:`~vmetal_ironic.exception.StoreUnavailable` with one line saying
what was tried. Other HTTP errors are returned to the caller as
:class:`ApiError` (so 404 and 409 can steer the store's logic). What only
the deployment can fix is a :class:`~vmetal_ironic.exception.DeploymentError`
saying what to fix: 401/403 (:class:`Forbidden`), a namespace that does not
exist (:class:`NamespaceNotFound`), a client configuration that is not
usable.
"""

import json
import random
import threading
import time

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import exceptions as k8s_exceptions
from kubernetes.config import config_exception
from oslo_log import log

from vmetal_ironic import deadline
from vmetal_ironic import exception

LOG = log.getLogger(__name__)

# 0 is what the client reports for a TLS failure (e.g. a connection torn
# down mid-handshake while the API server stops).
RETRY_STATUSES = frozenset({0, 429, 500, 502, 503, 504})
# Connections to the API server kept open for re-use (urllib3's pool per
# host): at least as many as a bulk publish keeps requests in flight
# (:mod:`.bulk`), so that none of them opens and closes a TLS connection
# per request. The client's default is 5 per CPU the process sees.
CONNECTIONS = 16


class ApiError(exception.PermanentError):
    """An HTTP error answer the caller may handle (404, 409, 422...).

    The store turns 404 and 409 into its own logic; anything else that
    reaches a caller (422 Invalid, a missing namespace) will not go away by
    retrying, hence permanent.

    :ivar status: the HTTP status.
    :ivar reason: the API server's reason, e.g. ``Conflict``,
        ``AlreadyExists``, ``NotFound``.
    """

    def __init__(self, message, status, reason, details=None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        # The Status ``details``: a 404 of an absent object names it; a
        # 404 without a name is the resource itself not being served.
        self.details = details or {}


class Forbidden(exception.DeploymentError):
    """The credentials are rejected (401) or may not do what the store
    needs (403, RBAC)."""


class NamespaceNotFound(exception.DeploymentError):
    """The namespace the store writes into does not exist."""


def _describe_api_exception(exc):
    """Status reason, message and ``details`` from an ApiException body;
    the message on one line."""
    reason, message, details = exc.reason, '', {}
    body = getattr(exc, 'body', None)
    if body:
        try:
            status = json.loads(body)
            reason = status.get('reason') or reason
            message = status.get('message') or ''
            details = status.get('details') or {}
        except (TypeError, ValueError, AttributeError):
            message = str(body)[:200]
    if not isinstance(details, dict):
        details = {}
    return reason, ' '.join(str(message).split()), details


def _retry_after(exc):
    """Seconds an answer's ``Retry-After`` header asks for (``0`` when it
    names none: kube-apiserver sends whole seconds)."""
    try:
        return max(0.0, float((exc.headers or {}).get('Retry-After')))
    except (TypeError, ValueError, AttributeError):
        return 0.0


# What to fix, by status, for the errors only the deployment can fix.
_FIX_401 = ('check the credentials: [vmetal_kubernetes]token, token_file '
            'or kubeconfig')
_FIX_403 = ('grant the store\'s identity the roles of etc/kubernetes/rbac')


def build_configuration(group):
    """Client configuration from ``[vmetal_kubernetes]``.

    Order: explicit ``api_url``; a ``kubeconfig`` file; the in-cluster
    service account; the default kubeconfig.

    :param group: the ``conf.vmetal_kubernetes`` group.
    :raises vmetal_ironic.exception.DeploymentError: nothing usable.
    """
    configuration = k8s_client.Configuration()
    if group.api_url:
        configuration.host = group.api_url.rstrip('/')
        token = group.token
        if group.token_file:
            try:
                with open(group.token_file, encoding='utf-8') as handle:
                    token = handle.read().strip()
            except OSError as exc:
                raise exception.DeploymentError(
                    f'[vmetal_kubernetes]token_file {group.token_file!r} '
                    f'cannot be read: {exc.strerror}') from None
        if token:
            configuration.api_key = {'authorization': 'Bearer ' + token}
        configuration.verify_ssl = group.verify_ssl
        if not group.verify_ssl:
            # Said once here instead of a urllib3 warning on every request.
            LOG.warning('Kubernetes API %s: TLS certificate not verified '
                        '([vmetal_kubernetes]verify_ssl = false)',
                        configuration.host)
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if group.ca_file:
            configuration.ssl_ca_cert = group.ca_file
    elif group.kubeconfig:
        try:
            k8s_config.load_kube_config(
                config_file=group.kubeconfig, context=group.context,
                client_configuration=configuration)
        except (config_exception.ConfigException, OSError) as exc:
            raise exception.DeploymentError(
                f'[vmetal_kubernetes]kubeconfig {group.kubeconfig!r} is not '
                f'usable: {exc}') from None
    else:
        try:
            k8s_config.load_incluster_config(
                client_configuration=configuration)
        except config_exception.ConfigException:
            try:
                k8s_config.load_kube_config(
                    context=group.context, client_configuration=configuration)
            except (config_exception.ConfigException, OSError) as exc:
                raise exception.DeploymentError(
                    'no Kubernetes API configured: set [vmetal_kubernetes]'
                    'api_url or kubeconfig, or run in a pod with a service '
                    f'account ({exc})') from None
    # Retries are ours (bounded, with backoff, counted); urllib3 must not
    # add hidden ones underneath.
    configuration.retries = urllib3.util.Retry(total=0, connect=0, read=0,
                                               redirect=0, status=0)
    return configuration


def _shortened(timeout, left):
    """``timeout`` (a number or ``(connect, read)``) cut to ``left``
    seconds (``None``: unchanged)."""
    if left is None:
        return timeout
    left = max(left, 0.1)
    if isinstance(timeout, tuple):
        return tuple(min(part, left) for part in timeout)
    return min(timeout, left)


class Api:
    """The typed APIs plus the retry policy.

    :param group: the ``[vmetal_kubernetes]`` options.
    :param configuration: a prepared client configuration (tests); built
        from ``group`` when ``None``.
    """

    def __init__(self, group, configuration=None):
        self.group = group
        self.configuration = configuration or build_configuration(group)
        self.configuration.connection_pool_maxsize = max(
            self.configuration.connection_pool_maxsize or 0, CONNECTIONS)
        self.client = k8s_client.ApiClient(self.configuration)
        self.core = k8s_client.CoreV1Api(self.client)
        self.custom = k8s_client.CustomObjectsApi(self.client)
        self.timeout = (group.connect_timeout, group.request_timeout)
        self._lock = threading.Lock()
        self.requests = 0
        # Until when (monotonic clock) the API server asked this client to
        # send nothing (a 429 answer's Retry-After): every thread waits.
        self._quiet_until = 0.0

    @property
    def host(self):
        return self.configuration.host

    def _count(self):
        with self._lock:
            self.requests += 1

    def _quiet(self, seconds):
        """The API server said to come back in ``seconds`` (429): no
        thread of this client sends before then."""
        with self._lock:
            self._quiet_until = max(self._quiet_until,
                                    time.monotonic() + seconds)

    def _wait_quiet(self):
        """Wait out a pause the API server asked for, within the
        operation's deadline."""
        with self._lock:
            wait = self._quiet_until - time.monotonic()
        left = deadline.remaining()
        if left is not None:
            wait = min(wait, left)
        if wait > 0:
            time.sleep(wait)

    def call(self, what, func, *args, **kwargs):
        """Run one API call with the timeout and retry policy.

        :param what: a short description for messages, e.g.
            ``get ConfigMap vmetal-system/vmetal-ipam-198-51-100-0-24``.
        :returns: the call's result.
        :raises ApiError: a non-retryable HTTP error (404, 409, 422...).
        :raises Forbidden: HTTP 401/403.
        :raises NamespaceNotFound: HTTP 404 for the namespace itself.
        :raises vmetal_ironic.exception.StoreUnavailable: retries exhausted.
        """
        attempts = self.group.max_retries + 1
        delay = self.group.retry_backoff
        last = None
        timeout = kwargs.pop('_request_timeout', self.timeout)
        tried = 0
        for attempt in range(1, attempts + 1):
            left = deadline.remaining()
            if left is not None and left <= 0:
                raise exception.StoreUnavailable(
                    f'Kubernetes API {self.host}: {what}: the operation\'s '
                    f'deadline is spent after {attempt - 1} attempt(s)'
                    f'{", last: " + last if last else ""}; the API server '
                    'is slow or down', retry_after=1.0)
            self._wait_quiet()
            kwargs['_request_timeout'] = _shortened(timeout, left)
            tried = attempt
            self._count()
            try:
                return func(*args, **kwargs)
            except k8s_exceptions.ApiException as exc:
                reason, message, details = _describe_api_exception(exc)
                if exc.status in (401, 403):
                    fix = _FIX_401 if exc.status == 401 else _FIX_403
                    raise Forbidden(
                        f'Kubernetes API {self.host} refused to {what}: '
                        f'{exc.status} {reason}: {message}; {fix}') from None
                if exc.status == 404 and details.get('kind') == 'namespaces':
                    # Only a create in a missing namespace says so; reads
                    # of absent objects name the object's own kind.
                    raise NamespaceNotFound(
                        f'Kubernetes API {self.host}: {what} failed: '
                        f'namespace {details.get("name")!r} does not exist; '
                        'create it (etc/kubernetes/rbac) or set '
                        '[vmetal_kubernetes]namespace') from None
                if exc.status not in RETRY_STATUSES:
                    raise ApiError(
                        f'Kubernetes API {self.host}: {what} failed: '
                        f'{exc.status} {reason}: {message}',
                        exc.status, reason, details) from None
                last = f'HTTP {exc.status} {reason}'
                if exc.status == 429:
                    # Priority and fairness (or the max-in-flight filter)
                    # turned the request away: the whole client holds
                    # back for as long as the server asked, its own
                    # backoff included.
                    self._quiet(min(max(_retry_after(exc), delay),
                                    self.group.retry_backoff_max))
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                # Connection refused/reset, TLS failures and timeouts all
                # surface as urllib3 errors (or OSError underneath).
                last = ' '.join(str(exc).split())[:200] or type(exc).__name__
            left = deadline.remaining()
            if left is not None and left <= delay:
                break
            if attempt < attempts:
                LOG.debug('Kubernetes API %(host)s: %(what)s failed '
                          '(%(last)s); retry %(n)d of %(max)d in %(d).2fs',
                          {'host': self.host, 'what': what, 'last': last,
                           'n': attempt, 'max': attempts - 1, 'd': delay})
                time.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
                delay = min(max(delay * 2, 0.01), self.group.retry_backoff_max)
        raise exception.StoreUnavailable(
            f'Kubernetes API {self.host} unavailable: {what} failed '
            f'{tried} time(s), last: {last}',
            retry_after=max(self.group.retry_backoff, 1.0))

    def close(self):
        self.client.close()
