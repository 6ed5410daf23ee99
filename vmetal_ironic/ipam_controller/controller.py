"""The controller's loop: watches feed a keyed work queue, workers
reconcile one BareMetalHost at a time.

Level-based: a key is ``<namespace>/<name>`` of a host, and reconciling it
reads the host as it is now and judges it by the release rules
(:mod:`.reconciler`), whatever events led
there. Each step is small and on its own, counted in :attr:`Controller.
counts` (``<step>.ok`` / ``<step>.failed``); a failed step puts the key
back with a growing delay and never stops the other steps or keys:

* ``release``: the addresses used on the host whose holder let it go
  (the host deleted, or its Machine gone and the host not running it);
* ``follow``: a host a Machine claims gets its address, Secret and
  outputs (:class:`~.follower.Follower`);
* ``collect`` (the :data:`COLLECT` key): claims no record binds and
  records that hold nothing, left by writers stopped half way.

What feeds the queue: BareMetalHosts (every namespace), the AddressClaims
and AddressOwners of the store's namespace (a claim names the host it is
used on), and the property sources (NodeProviders, Network Environments:
a change there re-judges the claimed hosts still waiting for their
network). Every ``resync`` seconds every known host and :data:`COLLECT`
are queued again, so a missed event costs one period at most.

What someone else wrote malformed (:mod:`.vetting`: a BareMetalHost's
bad ``consumerRef``, an AddressClaim or AddressOwner whose owner or host
does not parse, a NodeProvider's bad selector) is left out, counted
(``skipped.<kind>.<reason>`` and the metric) and said by a Warning Event
on that object, once per object and fault; nothing else waits for it.

Memory: per host one :class:`~.reconciler.HostView` and the owners of the
claims used on it, nothing that grows with time: a deleted host's view
is kept only until its key has been reconciled. The property sources
(NodeProviders, Network Environments: a few objects) are kept whole: a
followed host's subject carries them (:meth:`Controller.sources`), so
following it lists nothing.
"""

import collections
import threading
import time

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.ipam_controller import events
from vmetal_ironic.ipam_controller import follower as follower_mod
from vmetal_ironic.ipam_controller import informer
from vmetal_ironic.ipam_controller import metrics as metrics_mod
from vmetal_ironic.ipam_controller import reconciler as rules
from vmetal_ironic.ipam_controller import vetting
from vmetal_ironic.ipam_controller import work_queue
from vmetal_ironic.store.kubernetes import host_outputs
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import kube_properties

LOG = log.getLogger(__name__)

COLLECT = '*collect'
# involvedObject.apiVersion of the store's kinds and of NodeProviders.
STORE_API_VERSION = f'{names.API_GROUP}/{names.API_VERSION}'
PROVIDER_API_VERSION = 'management.loft.sh/v1'
CLAIM_KIND = 'AddressClaim'


def host_key(obj):
    metadata = obj.get('metadata') or {}
    return f'{metadata.get("namespace")}/{metadata.get("name")}'


class _Feed:
    """Adapts an :class:`~.informer.Informer`'s calls to two functions."""

    def __init__(self, synced, changed):
        self.synced = synced
        self.changed = changed


class Controller:
    """Reconciles the BareMetalHosts of a :class:`~vmetal_ironic.store.
    kubernetes.KubernetesStore`.

    :param store: the store (its API client and writers).
    :param identity: this replica's name (Events say who reported).
    :param workers: threads reconciling keys (one key is never worked on
        by two at once).
    :param resync: seconds between two full resyncs.
    :param metrics: a :class:`~.metrics.Metrics` (a registry of its own
        by default).
    """

    def __init__(self, store, identity, workers=1, resync=300,
                 base_delay=0.5, max_delay=60.0, metrics=None):
        self.store = store
        self.identity = identity
        self.workers = workers
        self.resync = resync
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.queue = work_queue.WorkQueue(base_delay, max_delay)
        self.rules = rules.Reconciler(store)
        self.follower = self.rules.follower
        self.metrics = metrics or metrics_mod.Metrics()
        self.reporter = events.Reporter(
            store.api, identity, on_written=lambda ok: self.metrics.events
            .labels('written' if ok else 'failed').inc())
        self.metrics.follow_queue(lambda: len(self.queue))
        self.counts = collections.Counter()
        self._lock = threading.Lock()
        self.hosts = {}         # key -> HostView, as last seen
        self.gone = {}          # key -> HostView at deletion, until judged
        self.claims = {}        # claim name -> (host key, owner text)
        self.on_host = {}       # host key -> {claim name}
        self.retained = set()   # claim names labelled retain
        # The property sources as the informers hold them (name -> object),
        # used for every followed host once both have listed.
        self.providers = {}
        self.environments = {}
        self._sources_listed = set()
        self._threads = []
        self._stop = None
        self.informers = []

    # -- what the watches say --------------------------------------------

    def skip(self, api_version, kind, obj, problem):
        """Leave ``obj`` out: counted, and said on the object."""
        self.counts[f'skipped.{kind}.{problem.reason}'] += 1
        self.metrics.skipped.labels(kind, problem.reason).inc()
        if self.reporter.warn(api_version, kind, obj, problem.message):
            # Once per object and fault, as the Event.
            LOG.warning('Skipping %s', problem.message)

    def _host_view(self, obj):
        """The host's view, or ``None`` (skipped) when its consumerRef
        is malformed."""
        problem = vetting.host_problem(obj)
        if problem is None:
            return rules.view_of(obj)
        self.skip('/'.join(host_outputs.BMH_API[:2]), 'BareMetalHost', obj,
                  problem)
        return None

    def host_changed(self, kind, obj):
        key = host_key(obj)
        if kind == 'DELETED':
            self.reporter.forget('BareMetalHost', obj)
            with self._lock:
                last = self.hosts.pop(key, None)
                # Judged as last seen well-formed, if it was malformed.
                view = (rules.view_of(obj) if vetting.host_problem(obj) is None
                        else last)
                if view is not None:
                    self.gone[key] = view
        else:
            view = self._host_view(obj)
            if view is None:
                # Left as it was until its consumerRef is fixed.
                return
            with self._lock:
                self.hosts[key] = view
                self.gone.pop(key, None)
        self.queue.add(key)

    def host_digest(self, obj):
        """What the host list keeps of one host: ``(key, view or None)``
        (a list of 10,000 whole hosts would be kept at once otherwise)."""
        return host_key(obj), self._host_view(obj)

    def hosts_synced(self, digests):
        """The host list, as :meth:`host_digest` pairs."""
        seen = {}
        for key, view in digests:
            if view is None:
                with self._lock:
                    view = self.hosts.get(key)
            if view is not None:
                seen[key] = view
        with self._lock:
            # Deleted while nobody watched: judged as deleted.
            for key in set(self.hosts) - set(seen):
                self.gone[key] = self.hosts[key]
            self.hosts = seen
        for key in seen:
            self.queue.add(key)

    def _index(self, name, obj):
        """Remember claim ``name`` (``obj`` ``None``: gone); the host key it
        concerns, before or after."""
        with self._lock:
            before = self.claims.pop(name, (None, None))[0]
            self.retained.discard(name)
            if before is not None:
                self.on_host.get(before, set()).discard(name)
                if not self.on_host.get(before):
                    self.on_host.pop(before, None)
            if obj is None:
                return before
        problem = vetting.store_object_problem(CLAIM_KIND, obj)
        if problem is not None:
            self.skip(STORE_API_VERSION, CLAIM_KIND, obj, problem)
            return before
        with self._lock:
            where = rules._host_of(obj)
            if where is None:
                return before
            owner = (obj.get('spec') or {}).get('owner')
            self.claims[name] = (where, owner)
            if rules.LABEL_RETAIN in ((obj.get('metadata') or {}).get(
                    'labels') or {}):
                self.retained.add(name)
            self.on_host.setdefault(where, set()).add(name)
            return where

    def claim_changed(self, kind, obj):
        name = (obj.get('metadata') or {}).get('name')
        before = self._index(name, None)
        after = None if kind == 'DELETED' else self._index(name, obj)
        for key in {before, after} - {None}:
            self.queue.add(key)

    def claims_synced(self, objects):
        with self._lock:
            self.claims, self.on_host, self.retained = {}, {}, set()
        for obj in objects:
            self._index((obj.get('metadata') or {}).get('name'), obj)
        with self._lock:
            keys = set(self.on_host)
        for key in keys:
            self.queue.add(key)

    def record_changed(self, kind, obj):
        problem = vetting.store_object_problem(names.OWNER_KIND, obj)
        if problem is not None:
            if kind != 'DELETED':
                self.skip(STORE_API_VERSION, names.OWNER_KIND, obj, problem)
            return
        where = (obj.get('spec') or {}).get('host')
        if where:
            self.queue.add(where)

    def _vet_provider(self, obj):
        for _provider, _type, message in kube_properties.bad_node_types(
                [obj]):
            self.skip(PROVIDER_API_VERSION, 'NodeProvider', obj,
                      vetting.Problem('selector', message))

    def _keep(self, kept, kind, obj):
        name = (obj.get('metadata') or {}).get('name')
        with self._lock:
            if kind == 'DELETED':
                kept.pop(name, None)
            elif name:
                kept[name] = obj

    def _relisted(self, what, kept, objects):
        with self._lock:
            kept.clear()
            kept.update(((obj.get('metadata') or {}).get('name'), obj)
                        for obj in objects)
            self._sources_listed.add(what)

    def providers_synced(self, objects):
        self._relisted('providers', self.providers, objects)
        for obj in objects:
            self._vet_provider(obj)
        self.layers_changed()

    def provider_changed(self, kind, obj):
        self._keep(self.providers, kind, obj)
        if kind == 'DELETED':
            self.reporter.forget('NodeProvider', obj)
        else:
            self._vet_provider(obj)
        self.layers_changed()

    def environments_synced(self, objects):
        self._relisted('environments', self.environments, objects)
        self.layers_changed()

    def environment_changed(self, kind, obj):
        self._keep(self.environments, kind, obj)
        self.layers_changed()

    def sources(self):
        """The property sources as the informers hold them, or ``None``
        until both have listed (the store then lists them itself): a
        followed host costs no listing of them. A copy behind the API
        server misses only a change whose event queues the waiting hosts
        again (:meth:`layers_changed`)."""
        with self._lock:
            if self._sources_listed != {'providers', 'environments'}:
                return None
            return kube_properties.Sources(
                tuple(obj for _, obj in sorted(self.providers.items())),
                tuple(obj for _, obj in sorted(self.environments.items())))

    def layers_changed(self, *_args):
        """A property source changed: the claimed hosts still waiting for
        their network are judged again (others keep what they hold)."""
        with self._lock:
            waiting = [key for key, view in self.hosts.items()
                       if follower_mod.needs_network(view, self._held(key))]
        for key in waiting:
            self.queue.add(key)

    # -- reconciling ---------------------------------------------------------

    def _held(self, key):
        """Owners (text) holding a claim used on host ``key`` (the lock
        held)."""
        return {self.claims[name][1] for name in self.on_host.get(key, ())
                if name in self.claims}

    def _step(self, name, func, *args):
        """Run one step; ``(ok, result)``; a failure is counted and
        logged, never raised."""
        try:
            result = func(*args)
        except Exception as exc:
            self.counts[f'{name}.failed'] += 1
            self.metrics.steps.labels(name, 'failed').inc()
            if isinstance(exc, exception.VmetalError):
                LOG.warning('%(step)s failed: %(err)s',
                            {'step': name, 'err': exc})
            else:
                LOG.exception('%s failed unexpectedly', name)
            return False, None
        self.counts[f'{name}.ok'] += 1
        self.metrics.steps.labels(name, 'ok').inc()
        return True, result

    def _settled(self, key):
        """Whether the watches' copy of host ``key`` says there is nothing
        to release or give (the lock held): then it is not read again. A
        copy behind the API server is no risk: the change it misses is an
        event that queues the key again."""
        view = self.hosts.get(key)
        if view is None or view.detached or (
                self.on_host.get(key, set()) & self.retained):
            # Detached or paused hosts' claims get or lose the retain
            # label: read and judged every time.
            return False
        owners = self._held(key)
        # The host's own address stays while the host does.
        if owners - {view.consumer, f'{owner_mod.BAREMETALHOST}/{key}'}:
            return False
        return not (view.consumer is not None and self.follower.follows(key)
                    and follower_mod.needs_network(view, owners))

    def reconcile(self, key):
        """Reconcile one key; :returns: whether every step succeeded."""
        if key == COLLECT:
            ok, _ = self._step('collect', self.rules.collect)
            return ok
        with self._lock:
            settled = self._settled(key)
        if settled:
            self.counts['settled'] += 1
            self.metrics.steps.labels('settled', 'ok').inc()
            return True
        namespace, _, name = key.partition('/')
        ok, host = self._step('read', self.store.outputs.get_host,
                              namespace, name)
        if not ok:
            return False
        view = None
        if host is not None:
            view = self._host_view(host)
            if view is None:
                # Nothing is released or given for it until it is fixed;
                # its next change queues it again.
                return True
        with self._lock:
            owners = self._held(key)
            gone = self.gone.get(key)
        judged = set(owners)
        if view is not None:
            judged.discard(view.consumer)
        elif gone is not None and gone.consumer:
            judged.add(gone.consumer)
        done = True
        if judged:
            released_ok, outcome = self._step(
                'release', self.rules.settle_host, key, judged,
                gone if host is None else None)
            done = released_ok
            for freed in (outcome or ([], set()))[0]:
                self._verdict('released')
                self.reporter.report(
                    host, events.RELEASED,
                    f'{freed.address} released from {freed.owner}: the host '
                    'no longer runs with it')
        if host is not None and view.consumer is not None and (
                self.follower.follows(key)):
            held = owners - {freed.owner for freed in
                             (outcome or ([], set()))[0]} if judged else owners
            if follower_mod.needs_network(view, held):
                announced = set()
                followed, report = self._step(
                    'follow', self.follower.follow, {key: view}, held,
                    {key: host}, self.sources(),
                    {key: self._announcer(key, host, view, announced)})
                done = done and followed
                self._report_follow(host, view, report, announced)
        if done:
            with self._lock:
                if host is None:
                    self.gone.pop(key, None)
        return done

    def _verdict(self, outcome):
        self.counts[outcome] += 1
        self.metrics.verdicts.labels(outcome).inc()

    def _announcer(self, key, host, view, announced):
        """The note of a followed host (see :attr:`~vmetal_ironic.store.
        base.Subject.note`): once its address is known, the Event says
        it and the verdict annotation rides on the outputs patch."""
        def note(ipv4):
            address = (str(ipv4.address) if ipv4 is not None
                       else 'its network data')
            announced.add(key)
            return self.reporter.announce(
                host, events.ALLOCATED,
                f'{address} allocated to {view.consumer}')
        return note

    def _report_follow(self, host, view, report, announced=()):
        if report is None:
            return
        for where in report.given:
            self._verdict('allocated')
            if where in announced:
                # Said with the outputs already.
                continue
            address = report.addresses.get(where, 'its network data')
            self.reporter.report(host, events.ALLOCATED,
                                 f'{address} allocated to {view.consumer}')
        for _where, message in report.rejected:
            self._verdict('refused')
            self.reporter.report(host, events.REFUSED, message)

    # -- threads ------------------------------------------------------------

    def _work(self, stop):
        while not stop.is_set():
            key = self.queue.get(timeout=1.0)
            if key is not None:
                self.work_on(key)

    def work_on(self, key):
        """Reconcile ``key`` as the queue handed it: timed, handed back,
        and queued again after a delay when it failed."""
        started = time.monotonic()
        try:
            ok = self.reconcile(key)
        finally:
            self.queue.done(key)
            self.metrics.latency.labels(
                'collect' if key == COLLECT else 'host').observe(
                    time.monotonic() - started)
        if ok:
            self.queue.forget(key)
        else:
            self.metrics.retries.inc()
            self.queue.retry(key)

    def _resync(self, stop):
        while not stop.wait(self.resync):
            self.queue.add(COLLECT)
            with self._lock:
                keys = list(self.hosts) + list(self.gone)
            for key in keys:
                self.queue.add(key)

    def _informers(self):
        api = self.store.api
        custom = api.custom
        group, version, plural = host_outputs.BMH_API
        hosts = informer.Informer(
            api, 'BareMetalHosts', custom.list_cluster_custom_object,
            (group, version, plural),
            _Feed(self.hosts_synced, self.host_changed),
            digest=self.host_digest)
        scope = f'{names.LABEL_SCOPE}={self.store.addresses.scope}'
        claims = informer.Informer(
            api, 'AddressClaims', custom.list_namespaced_custom_object,
            (*names.ADDRESS_API[:2], self.store.namespace,
             names.ADDRESS_API[2]),
            _Feed(self.claims_synced, self.claim_changed),
            selector=f'{names.LABEL_COMPONENT}={names.COMPONENT_ADDRESS},'
                     f'{scope}')
        records = informer.Informer(
            api, 'AddressOwners', custom.list_namespaced_custom_object,
            (*names.OWNER_API[:2], self.store.namespace, names.OWNER_API[2]),
            _Feed(lambda objects: None, self.record_changed),
            selector=f'{names.LABEL_COMPONENT}='
                     f'{names.COMPONENT_ADDRESS_OWNER},{scope}')
        providers = informer.Informer(
            api, 'NodeProviders', custom.list_cluster_custom_object,
            self.store._providers_api,
            _Feed(self.providers_synced, self.provider_changed))
        environments = informer.Informer(
            api, 'NetworkEnvironments', custom.list_cluster_custom_object,
            self.store._environments_api,
            _Feed(self.environments_synced, self.environment_changed))
        feeds = [hosts, claims, records, providers, environments]
        for feed in feeds:
            feed.on_failure = self.metrics.watch_failures.labels(
                feed.what).inc
        return feeds

    def start(self):
        """Start leading: watches, workers and the resync timer."""
        if self._stop is not None:
            return
        self._stop = stop = threading.Event()
        self.queue = work_queue.WorkQueue(self.base_delay, self.max_delay)
        self.queue.add(COLLECT)
        with self._lock:
            # Held again only once the new watches have listed them.
            self._sources_listed = set()
        self.informers = self._informers()
        targets = [(f'vmetal-watch-{feed.what}', feed.run)
                   for feed in self.informers]
        targets += [(f'vmetal-work-{n}', self._work)
                    for n in range(self.workers)]
        targets.append(('vmetal-resync', self._resync))
        for name, target in targets:
            thread = threading.Thread(target=target, args=(stop,), name=name,
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout=5.0):
        """Stop leading: no key is started from now on; waits at most
        ``timeout`` seconds for the work in progress."""
        if self._stop is None:
            return
        self._stop.set()
        self.queue.close()
        for thread in self._threads:
            if thread.name.startswith('vmetal-work'):
                thread.join(timeout)
        self._threads = []
        self._stop = None

    def informers_ready(self):
        """Whether this replica leads and every watch has listed once
        (any change from then on reaches the queue)."""
        return self._stop is not None and all(
            feed.relists for feed in self.informers)

    def busy(self):
        """Keys waiting or in work."""
        return len(self.queue)

