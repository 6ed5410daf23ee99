"""The shared revalidation's rules: who joins which question, what each
answer means for the downloads waiting, and that no download is left
waiting whatever happens to the others or to the question.

Ironic is a fake here on purpose: these tests need interleavings
(a download arriving between the question's connection and its request,
an answer withheld while others arrive, a cancellation at a given point)
that a real server cannot be made to produce on cue. The real server's
side is covered by tests/unit/dhcp_agent/bridge/test_service.py and
tests/functional/test_bridge_cache.py.
"""

import asyncio

import pytest

from vmetal_ironic.dhcp_agent import metrics as metrics_mod
from vmetal_ironic.dhcp_agent.bridge import revalidation

DOWN = revalidation.Failed(502, 'upstream_unreachable', 'down')


class _Entry:
    def __init__(self, key='/ipa'):
        self.key = key


class _Ironic:
    """Each question waits in its connection (``connected``), then in its
    answer (``answers``), both set by the test."""

    def __init__(self):
        self.asked = []
        self.connected = {}
        self.answers = {}

    async def ask(self, entry, sending):
        number = len(self.asked)
        self.asked.append(entry)
        loop = asyncio.get_running_loop()
        connected = self.connected.setdefault(number, asyncio.Event())
        await connected.wait()
        sending()
        answer = self.answers.setdefault(number, loop.create_future())
        return await answer

    def connect(self, number):
        self.connected.setdefault(number, asyncio.Event()).set()

    def answer(self, number, value):
        future = self.answers.setdefault(
            number, asyncio.get_running_loop().create_future())
        future.set_result(value)

    async def respond(self, number, value):
        """Let question ``number`` connect and be written, then answer."""
        self.connect(number)
        await _settle()
        self.answer(number, value)


def _shared(metrics):
    return metrics.bridge_cache_revalidations_shared._value.get()


async def _settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def _written(ironic, revalidations, entry, count=1):
    """``count`` downloads of ``entry`` whose question is written now."""
    tasks = [asyncio.create_task(revalidations.check(entry))
             for _ in range(count)]
    await _settle()
    ironic.connect(len(ironic.asked) - 1)
    await _settle()
    return tasks


def _run(scenario, timeout=5.0):
    ironic = _Ironic()
    metrics = metrics_mod.Metrics()
    revalidations = revalidation.Revalidations(ironic.ask, timeout, metrics)
    return asyncio.run(scenario(ironic, revalidations, metrics))


def test_downloads_arriving_before_the_question_is_sent_share_it():
    async def scenario(ironic, revalidations, metrics):
        entry = _Entry()
        waiting = [asyncio.create_task(revalidations.check(entry))
                   for _ in range(20)]
        await _settle()
        await ironic.respond(0, revalidation.CURRENT)
        answers = await asyncio.gather(*waiting)
        assert answers == [revalidation.CURRENT] * 20
        assert len(ironic.asked) == 1
        assert _shared(metrics) == 19
        assert len(revalidations) == 0

    _run(scenario)


def test_a_download_arriving_after_the_question_was_sent_waits_for_the_next():
    """A 304 to a request written before a download arrived says nothing
    about what Ironic holds when it arrived: it is asked again."""

    async def scenario(ironic, revalidations, _metrics):
        entry = _Entry()
        early, = await _written(ironic, revalidations, entry)
        late = [asyncio.create_task(revalidations.check(entry))
                for _ in range(3)]
        await _settle()
        assert len(ironic.asked) == 1   # not asked twice at once
        ironic.answer(0, revalidation.CURRENT)
        assert await early == revalidation.CURRENT
        await _settle()
        assert len(ironic.asked) == 2   # the next one, for the late three
        assert not any(task.done() for task in late)
        ironic.connect(1)
        await _settle()
        # The file changed in between: the late ones are told so.
        ironic.answer(1, revalidation.CHANGED)
        assert await asyncio.gather(*late) == [revalidation.CHANGED] * 3
        assert len(revalidations) == 0

    _run(scenario)


def test_changed_is_told_to_the_next_ones_without_asking_again():
    async def scenario(ironic, revalidations, _metrics):
        entry = _Entry()
        early, = await _written(ironic, revalidations, entry)
        late = asyncio.create_task(revalidations.check(entry))
        await _settle()
        ironic.answer(0, revalidation.CHANGED)
        assert await early == revalidation.CHANGED
        # The copy is gone: nothing to revalidate, each forwards its own.
        assert await late == revalidation.CHANGED
        assert len(ironic.asked) == 1

    _run(scenario)


def test_ironic_failing_fails_every_download_never_serves_the_copy():
    async def scenario(ironic, revalidations, _metrics):
        entry = _Entry()
        early = await _written(ironic, revalidations, entry, 2)
        late = asyncio.create_task(revalidations.check(entry))
        await _settle()
        ironic.answer(0, DOWN)
        assert await asyncio.gather(*early, late) == [DOWN] * 3
        assert len(ironic.asked) == 1
        # A download after the failure asks again (Ironic may be back).
        again = asyncio.create_task(revalidations.check(entry))
        await _settle()
        await ironic.respond(1, revalidation.CURRENT)
        assert await again == revalidation.CURRENT

    _run(scenario)


def test_a_question_without_an_answer_in_time_is_a_504_for_all():
    async def scenario(ironic, revalidations, _metrics):
        entry = _Entry()
        ironic.connect(0)   # connected, then Ironic says nothing
        waiting = [asyncio.create_task(revalidations.check(entry))
                   for _ in range(3)]
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 5)
        assert {answer.status for answer in answers} == {504}
        assert answers[0].reason == 'upstream_timeout'
        assert len(revalidations) == 0

    _run(scenario, timeout=0.2)


def test_the_first_download_cancelled_leaves_the_question_to_the_others():
    """The client that started the question goes away (its task is
    cancelled): the question is not its own, the others get the answer."""

    async def scenario(ironic, revalidations, _metrics):
        entry = _Entry()
        first = asyncio.create_task(revalidations.check(entry))
        await _settle()
        others = [asyncio.create_task(revalidations.check(entry))
                  for _ in range(2)]
        await _settle()
        first.cancel()
        await _settle()
        assert first.cancelled()
        await ironic.respond(0, revalidation.CURRENT)
        assert await asyncio.gather(*others) == [revalidation.CURRENT] * 2
        assert len(ironic.asked) == 1

    _run(scenario)


def test_every_download_cancelled_still_ends_the_question():
    async def scenario(ironic, revalidations, _metrics):
        entry = _Entry()
        waiting = asyncio.create_task(revalidations.check(entry))
        await _settle()
        waiting.cancel()
        await ironic.respond(0, revalidation.CURRENT)
        await _settle()
        assert len(revalidations) == 0
        # Nothing left behind: the next download asks afresh.
        again = asyncio.create_task(revalidations.check(entry))
        await _settle()
        assert len(ironic.asked) == 2
        await ironic.respond(1, revalidation.CURRENT)
        assert await again == revalidation.CURRENT

    _run(scenario)


def test_a_bug_in_the_question_fails_the_downloads_not_strands_them():
    async def broken(_entry, _sending):
        raise RuntimeError('bug')

    async def scenario():
        revalidations = revalidation.Revalidations(broken, 5.0)
        answer = await asyncio.wait_for(
            revalidations.check(_Entry()), 5)
        assert (answer.status, answer.reason) == (502,
                                                  'upstream_bad_response')

    asyncio.run(scenario())


def test_closing_answers_every_download_and_serves_no_copy():
    async def scenario(ironic, revalidations, _metrics):
        entry = _Entry()
        ironic.connect(0)
        await _settle()
        early = asyncio.create_task(revalidations.check(entry))
        await _settle()
        late = asyncio.create_task(revalidations.check(entry))
        await _settle()
        revalidations.close()
        answers = await asyncio.wait_for(asyncio.gather(early, late), 5)
        assert {answer.status for answer in answers} == {503}
        assert len(revalidations) == 0

    _run(scenario)


def test_closing_before_the_question_ran_leaves_no_download_waiting():
    async def scenario(ironic, revalidations, _metrics):
        waiting = asyncio.create_task(revalidations.check(_Entry()))
        # One step: the question's task is created, not yet run.
        await asyncio.sleep(0)
        revalidations.close()
        answer = await asyncio.wait_for(waiting, 5)
        assert answer.status == 503 and ironic.asked == []
        assert len(revalidations) == 0

    _run(scenario)


def test_copies_are_revalidated_apart():
    async def scenario(ironic, revalidations, metrics):
        kernel, ramdisk = _Entry('/kernel'), _Entry('/ramdisk')
        first = asyncio.create_task(revalidations.check(kernel))
        second = asyncio.create_task(revalidations.check(ramdisk))
        await _settle()
        assert ironic.asked == [kernel, ramdisk]
        ironic.connect(0)
        ironic.connect(1)
        await _settle()
        ironic.answer(0, revalidation.CURRENT)
        ironic.answer(1, revalidation.CHANGED)
        assert (await first, await second) == (revalidation.CURRENT,
                                               revalidation.CHANGED)
        assert _shared(metrics) == 0

    _run(scenario)


@pytest.mark.parametrize('answer', [revalidation.CURRENT,
                                    revalidation.CHANGED, DOWN])
def test_one_download_asks_once(answer):
    async def scenario(ironic, revalidations, metrics):
        waiting = asyncio.create_task(revalidations.check(_Entry()))
        await _settle()
        await ironic.respond(0, answer)
        assert await waiting == answer
        assert len(ironic.asked) == 1 and _shared(metrics) == 0

    _run(scenario)
