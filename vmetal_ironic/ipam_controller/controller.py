"""The controller's loop: watches feed a keyed work queue, workers
reconcile one BareMetalHost at a time.

Level-based: a key is ``<namespace>/<name>`` of a host, and reconciling it
reads the host as it is now and judges it by the store's rules
(:mod:`vmetal_ironic.store.kubernetes.reconciler`), whatever events led
there. Each step is small and on its own, counted in :attr:`Controller.
counts` (``<step>.ok`` / ``<step>.failed``); a failed step puts the key
back with a growing delay and never stops the other steps or keys:

* ``release``: the addresses used on the host whose holder let it go
  (the host deleted, or its Machine gone and the host not running it);
* ``follow``: a host a Machine claims gets its address, Secret and
  outputs (:class:`~vmetal_ironic.store.kubernetes.claims.Follower`);
* ``collect`` (the :data:`COLLECT` key): claims no record binds and
  records that hold nothing, left by writers stopped half way.

What feeds the queue: BareMetalHosts (every namespace), the AddressClaims
and AddressOwners of the store's namespace (a claim names the host it is
used on), and the property sources (NodeProviders, Network Environments:
a change there re-judges the claimed hosts still waiting for their
network). Every ``resync`` seconds every known host and :data:`COLLECT`
are queued again, so a missed event costs one period at most.

Memory: per host one :class:`~.reconciler.HostView` and the owners of the
claims used on it, nothing that grows with time: a deleted host's view
is kept only until its key has been reconciled.
"""

import collections
import threading

from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic.ipam_controller import events
from vmetal_ironic.ipam_controller import informer
from vmetal_ironic.ipam_controller import work_queue
from vmetal_ironic.store.kubernetes import claims as claims_mod
from vmetal_ironic.store.kubernetes import host_outputs
from vmetal_ironic.store.kubernetes import kube_names as names
from vmetal_ironic.store.kubernetes import reconciler as rules

LOG = log.getLogger(__name__)

COLLECT = '*collect'


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

    :param store: the store (its API client, rules and writers).
    :param identity: this replica's name (Events say who reported).
    :param workers: threads reconciling keys (one key is never worked on
        by two at once).
    :param resync: seconds between two full resyncs.
    """

    def __init__(self, store, identity, workers=1, resync=300,
                 base_delay=0.5, max_delay=60.0):
        self.store = store
        self.identity = identity
        self.workers = workers
        self.resync = resync
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.queue = work_queue.WorkQueue(base_delay, max_delay)
        self.follower = claims_mod.Follower(store)
        self.reporter = events.Reporter(store.api, identity)
        self.counts = collections.Counter()
        self._lock = threading.Lock()
        self.hosts = {}         # key -> HostView, as last seen
        self.gone = {}          # key -> HostView at deletion, until judged
        self.claims = {}        # claim name -> (host key, owner text)
        self.on_host = {}       # host key -> {claim name}
        self._threads = []
        self._stop = None
        self.informers = []

    # -- what the watches say --------------------------------------------

    def host_changed(self, kind, obj):
        key = host_key(obj)
        view = rules.view_of(obj)
        with self._lock:
            if kind == 'DELETED':
                self.hosts.pop(key, None)
                self.gone[key] = view
            else:
                self.hosts[key] = view
                self.gone.pop(key, None)
        self.queue.add(key)

    def hosts_synced(self, objects):
        seen = {host_key(obj): rules.view_of(obj) for obj in objects}
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
            if before is not None:
                self.on_host.get(before, set()).discard(name)
                if not self.on_host.get(before):
                    self.on_host.pop(before, None)
            if obj is None:
                return before
            where = rules._host_of(obj)
            if where is None:
                return before
            owner = (obj.get('spec') or {}).get('owner')
            self.claims[name] = (where, owner)
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
            self.claims, self.on_host = {}, {}
        for obj in objects:
            self._index((obj.get('metadata') or {}).get('name'), obj)
        with self._lock:
            keys = set(self.on_host)
        for key in keys:
            self.queue.add(key)

    def record_changed(self, kind, obj):
        where = (obj.get('spec') or {}).get('host')
        if where:
            self.queue.add(where)

    def layers_changed(self, *_args):
        """A property source changed: the claimed hosts still waiting for
        their network are judged again (others keep what they hold)."""
        with self._lock:
            waiting = [key for key, view in self.hosts.items()
                       if claims_mod.needs_network(view, self._held(key))]
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
            if isinstance(exc, exception.VmetalError):
                LOG.warning('%(step)s failed: %(err)s',
                            {'step': name, 'err': exc})
            else:
                LOG.exception('%s failed unexpectedly', name)
            return False, None
        self.counts[f'{name}.ok'] += 1
        return True, result

    def reconcile(self, key):
        """Reconcile one key; :returns: whether every step succeeded."""
        if key == COLLECT:
            ok, _ = self._step('collect', self.store.reconciler.collect)
            return ok
        namespace, _, name = key.partition('/')
        ok, host = self._step('read', self.store.outputs.get_host,
                              namespace, name)
        if not ok:
            return False
        with self._lock:
            owners = self._held(key)
            gone = self.gone.get(key)
        view = rules.view_of(host) if host is not None else None
        judged = set(owners)
        if view is not None:
            judged.discard(view.consumer)
        elif gone is not None and gone.consumer:
            judged.add(gone.consumer)
        done = True
        if judged:
            released_ok, outcome = self._step(
                'release', self.store.reconciler.settle_host, key, judged,
                gone if host is None else None)
            done = released_ok
            for freed in (outcome or ([], set()))[0]:
                self.counts['released'] += 1
                self.reporter.report(
                    host, events.RELEASED,
                    f'{freed.address} released from {freed.owner}: the host '
                    'no longer runs with it')
        if host is not None and view.consumer is not None and (
                self.follower.follows(key)):
            held = owners - {freed.owner for freed in
                             (outcome or ([], set()))[0]} if judged else owners
            if claims_mod.needs_network(view, held):
                followed, report = self._step(
                    'follow', self.follower.follow, {key: view}, held,
                    {key: host})
                done = done and followed
                self._report_follow(host, view, report)
        if done:
            with self._lock:
                if host is None:
                    self.gone.pop(key, None)
        return done

    def _report_follow(self, host, view, report):
        if report is None:
            return
        for _where in report.given:
            self.counts['allocated'] += 1
            allocation = self.store.get_allocation(view.consumer)
            address = allocation.address if allocation else 'its network data'
            self.reporter.report(host, events.ALLOCATED,
                                 f'{address} allocated to {view.consumer}')
        for _where, message in report.rejected:
            self.counts['refused'] += 1
            self.reporter.report(host, events.REFUSED, message)

    # -- threads ------------------------------------------------------------

    def _work(self, stop):
        while not stop.is_set():
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                ok = self.reconcile(key)
            finally:
                self.queue.done(key)
            if ok:
                self.queue.forget(key)
            else:
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
            _Feed(self.hosts_synced, self.host_changed))
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
        layers = [informer.Informer(
            api, plural_, custom.list_cluster_custom_object, resource,
            _Feed(self.layers_changed, self.layers_changed))
            for plural_, resource in (
                ('NodeProviders', self.store._providers_api),
                ('NetworkEnvironments', self.store._environments_api))]
        return [hosts, claims, records, *layers]

    def start(self):
        """Start leading: watches, workers and the resync timer."""
        if self._stop is not None:
            return
        self._stop = stop = threading.Event()
        self.queue = work_queue.WorkQueue(self.base_delay, self.max_delay)
        self.queue.add(COLLECT)
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

