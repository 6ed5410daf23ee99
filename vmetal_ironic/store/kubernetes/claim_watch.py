"""Follow the claims as they are made, and release as hosts go: a watch
of the BareMetalHosts.

The reconcile pass follows the claims every ``reconcile_interval``
seconds; a host claimed and booted by virtual media within one interval
would boot before its Secret exists. This watch gives a claimed host its
network within about a second of the claim, by the same
:class:`~vmetal_ironic.store.kubernetes.claims.Follower`; the pass stays
the safety net (a missed event, a watch that failed, hosts claimed while
no process watched).

The watch starts from the current position (the pass covers what came
before), relists its position when the API server no longer has it (410),
and waits ``retry`` seconds after any other failure, logging one WARNING
while it is broken. Most events are status updates of hosts already
followed: the Machines seen holding an address are remembered (one GET of
the owner record the first time), so such an event costs no request.

The same events apply the reconciler's verdict to one host as soon as it
matters (:meth:`~.reconciler.Reconciler.settle_host`): a host deleted, or
no longer naming a Machine that held an address on it (and, when it was
in use, each later event of the host until it is deprovisioned). The
watch remembers, per host, the Machines seen naming it (the pass hands it
every host's), so a host that still names its Machine costs no request.
"""


from kubernetes import watch as k8s_watch
from oslo_log import log

from vmetal_ironic import exception
from vmetal_ironic import owner as owner_mod
from vmetal_ironic.store.kubernetes import background
from vmetal_ironic.store.kubernetes import claims
from vmetal_ironic.store.kubernetes import host_outputs

LOG = log.getLogger(__name__)

WINDOW = 60     # seconds of one watch request (and of a close at most)


class ClaimWatch(background.BackgroundJob):
    """Watches BareMetalHosts and follows their claims.

    :param store: a :class:`~vmetal_ironic.store.kubernetes.KubernetesStore`.
    :param follower: its :class:`~vmetal_ironic.store.kubernetes.claims.
        Follower`.
    :param view_of: ``host -> HostView`` (the reconciler's).
    """

    thread_name = 'vmetal-claim-watch'

    def __init__(self, store, follower, view_of, retry=5.0):
        self.store = store
        self.follower = follower
        self.view_of = view_of
        self.retry = retry
        self.held = set()
        self.given = 0
        self.events = 0
        # "<ns>/<name>" -> owners (text) seen naming the host that may
        # still hold an address used on it.
        self.holders = {}

    def remember(self, views):
        """Learn every host's Machine from a pass's
        ``{"<ns>/<name>": HostView}``."""
        for where, view in views.items():
            if view.consumer is not None:
                self.holders.setdefault(where, set()).add(view.consumer)

    def settle(self, host, deleted=False):
        """Judge the claims of the owners that let go of ``host``."""
        metadata = host.get('metadata') or {}
        where = f'{metadata.get("namespace")}/{metadata.get("name")}'
        view = self.view_of(host)
        known = self.holders.pop(where, set())
        if deleted:
            candidates = known | {str(owner_mod.for_host(
                metadata.get('namespace'), metadata.get('name')))}
            if view.consumer is not None:
                candidates.add(view.consumer)
        else:
            candidates = known - {view.consumer}
        kept = set()
        if candidates:
            try:
                _, kept = self.store.reconciler.settle_host(
                    where, candidates, gone=view if deleted else None)
            except Exception as exc:
                # The pass is the safety net; later events try again.
                LOG.warning('Judging BareMetalHost %(host)s on its event '
                            'failed (%(err)s); the reconcile pass will',
                            {'host': where, 'err': exc})
                kept = candidates
        if not deleted:
            kept |= {view.consumer} - {None}
            if kept:
                self.holders[where] = kept

    def _position(self):
        group, version, plural = host_outputs.BMH_API
        api = self.store.api
        page = api.call(f'list {plural}.{group} (position)',
                        api.custom.list_cluster_custom_object,
                        group, version, plural, limit=1)
        return (page.get('metadata') or {}).get('resourceVersion') or '0'

    def _holds(self, consumer):
        if consumer in self.held:
            return True
        try:
            if self.store.addresses.current(owner_mod.parse(consumer))[1]:
                self.held.add(consumer)
                return True
        except exception.InvalidProperty:
            pass    # the follower reports it
        return False

    def handle(self, host):
        """Follow one host's claim, if it needs it."""
        metadata = host.get('metadata') or {}
        where = f'{metadata.get("namespace")}/{metadata.get("name")}'
        view = self.view_of(host)
        if not self.follower.follows(where) or view.consumer is None:
            return
        held = {view.consumer} if self._holds(view.consumer) else set()
        if not claims.needs_network(view, held):
            return
        report = self.follower.follow({where: view}, held, {where: host})
        if report.given:
            self.held.add(view.consumer)
            self.given += 1

    def _stream(self, revision, stop):
        group, version, plural = host_outputs.BMH_API
        watcher = k8s_watch.Watch()
        try:
            for event in watcher.stream(
                    self.store.api.custom.list_cluster_custom_object,
                    group, version, plural, resource_version=revision,
                    allow_watch_bookmarks=True, timeout_seconds=WINDOW,
                    _request_timeout=(self.store.group.connect_timeout,
                                      WINDOW + 5)):
                if stop.is_set():
                    return revision
                kind, obj = event['type'], event['object']
                if kind == 'ERROR':
                    if (obj or {}).get('code') == 410:
                        return None
                    raise exception.StoreUnavailable(
                        f'BareMetalHost watch: {obj}')
                revision = ((obj.get('metadata') or {}).get('resourceVersion')
                            or revision)
                if kind in ('ADDED', 'MODIFIED'):
                    self.events += 1
                    self.settle(obj)
                    self.handle(obj)
                elif kind == 'DELETED':
                    self.events += 1
                    self.settle(obj, deleted=True)
        finally:
            watcher.stop()
        return revision

    def run(self, stop):
        """Watch until ``stop`` is set; never raises."""
        revision, broken = None, False
        while not stop.is_set():
            try:
                if revision is None:
                    revision = self._position()
                revision = self._stream(revision, stop)
                broken = False
            except Exception as exc:
                # A 410 raised by the client, or any trouble: start over
                # from the current position; the pass covers the gap.
                revision = None
                if stop.is_set():
                    return
                if not broken:
                    LOG.warning('Watching BareMetalHosts for claims failed '
                                '(%s); the reconcile pass still follows '
                                'them, retrying every %s s', exc, self.retry)
                broken = True
                stop.wait(self.retry)

    def start(self, stop):
        self._start_thread(self.run, stop)
