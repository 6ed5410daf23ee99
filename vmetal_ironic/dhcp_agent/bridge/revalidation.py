"""One conditional request to Ironic for many downloads of the same copy.

Every download of a local copy (:mod:`.http_cache`) is answered from it
only once Ironic's HTTP server has said that the copy is current. Asked
by each download on its own, twenty servers booting at once cost twenty
connections to Ironic, twenty conditional requests and twenty ``304``
answers parsed on the bridge's one event loop before a single byte goes
out. Here the downloads of one copy share the question, as a caching
proxy's collapsed forwarding does (Squid's ``collapsed_forwarding``,
nginx's ``proxy_cache_lock``), with a rule that keeps today's guarantee
whole:

**A download joins only a question not yet sent.** The first download
of a copy starts a revalidation; downloads that arrive while its request
has not been written to Ironic yet (it is still connecting) join it; a
download that arrives after it was written waits for the next one, which
starts when the current one ends and which every download arriving in
the meantime joins. So a ``304`` serves only the downloads whose request
the bridge had read whole before it wrote the question: Ironic answered
after each of them arrived, as when each asked for itself, and nothing
is served that a download of its own would not have been.

What the answer means for its downloads:

* :data:`CURRENT` (``304``): every one is served from the copy;
* :data:`CHANGED` (any other answer): the copy was dropped; every one
  forwards its own request, as without a copy (one of them fills the new
  version), and so do the ones waiting for the next revalidation, which
  is not asked (there is nothing left to revalidate);
* a :class:`Failed` (Ironic unreachable, no valid answer, or none within
  ``upstream_timeout``): every one answers 502/504 itself, never the
  copy, and so do the ones waiting for the next revalidation (they
  arrived while Ironic was failing; asking again would double their
  wait).

Bounds: a revalidation is a task of its own, not a download's, so a
download that goes away (its client gone, its task cancelled) leaves the
others' question running; it ends within ``timeout`` (its connection and
the answer's head together), so a download waits at most the rest of
the current revalidation and one more: a client on the provisioning L2
cannot hold it longer, since nothing a client sends is on the question's
path. How many downloads wait is bounded by the bridge's admission
limits. Used from the bridge's one event loop thread only, so no lock.
"""

import asyncio
import dataclasses

from oslo_log import log

LOG = log.getLogger(__name__)

#: Ironic answered ``304``: the copy may answer.
CURRENT = 'current'
#: Ironic answered anything else: the copy is gone.
CHANGED = 'changed'


@dataclasses.dataclass(frozen=True)
class Failed:
    """Ironic gave no answer: what each download tells its client."""

    status: int
    reason: str
    text: str


#: What the downloads still waiting get when the bridge stops.
_STOPPING = Failed(503, 'stopping', 'the bridge is stopping')


class _Question:
    """One conditional request for one copy, and the downloads waiting."""

    def __init__(self, loop):
        self.answer = loop.create_future()
        #: Written to Ironic: later downloads must not join it.
        self.sent = False


class Revalidations:
    """The revalidations under way, one copy at a time.

    :param ask: ``ask(entry, sending)``, a coroutine function that asks
        Ironic whether ``entry`` is current and returns :data:`CURRENT`,
        :data:`CHANGED` or a :class:`Failed`; it calls ``sending()`` just
        before it writes the request (no wait between the two).
    :param timeout: seconds one question may take in all.
    :param metrics: :class:`~vmetal_ironic.dhcp_agent.metrics.Metrics` or
        ``None``.
    """

    def __init__(self, ask, timeout, metrics=None):
        self._ask = ask
        self.timeout = timeout
        self.metrics = metrics
        # entry -> [current question, the next one or None]
        self._questions = {}
        self._tasks = set()

    def __len__(self):
        """Copies with a revalidation under way."""
        return len(self._questions)

    async def check(self, entry):
        """Whether the copy ``entry`` may answer a download that arrived
        now (see the module's rule).

        :returns: :data:`CURRENT`, :data:`CHANGED` or a :class:`Failed`.
        """
        pair = self._questions.get(entry)
        if pair is None:
            question = _Question(asyncio.get_running_loop())
            self._questions[entry] = [question, None]
            self._start(entry, question)
        else:
            current, following = pair
            if not current.sent:
                question = current
            else:
                if following is None:
                    following = pair[1] = _Question(
                        asyncio.get_running_loop())
                question = following
            if self.metrics is not None:
                self.metrics.bridge_cache_revalidations_shared.inc()
        # Shielded: a download cancelled while it waits must not cancel
        # the others' answer.
        return await asyncio.shield(question.answer)

    def _start(self, entry, question):
        task = asyncio.get_running_loop().create_task(
            self._run(entry, question))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, entry, question):
        def sending():
            question.sent = True

        try:
            try:
                answer = await asyncio.wait_for(
                    self._ask(entry, sending), self.timeout)
            except asyncio.TimeoutError:
                answer = Failed(504, 'upstream_timeout',
                                'Ironic did not answer')
            except Exception:   # a bug must not strand the downloads
                LOG.exception('Bridge: revalidating %s failed', entry.key)
                answer = Failed(502, 'upstream_bad_response',
                                'the revalidation failed')
        except asyncio.CancelledError:
            self._end(entry, question, _STOPPING)
            raise
        self._end(entry, question, answer)

    def _end(self, entry, question, answer):
        if question.answer.done():
            return   # answered by close()
        question.answer.set_result(answer)
        pair = self._questions.get(entry)
        following = pair[1] if pair is not None else None
        if following is None:
            self._questions.pop(entry, None)
        elif answer == CURRENT:
            # Asked again for those who arrived after the question was
            # written: a 304 from before they came says nothing to them.
            pair[:] = [following, None]
            self._start(entry, following)
        else:
            # The copy is gone, or Ironic is failing: the same for them.
            self._questions.pop(entry, None)
            following.answer.set_result(answer)

    def close(self):
        """Answer every waiting download with a 503 and cancel the
        questions under way (the bridge stops): none is left waiting or
        gets a copy, even where a question's task never got to run."""
        for pair in self._questions.values():
            for question in pair:
                if question is not None and not question.answer.done():
                    question.answer.set_result(_STOPPING)
        self._questions.clear()
        for task in list(self._tasks):
            task.cancel()
