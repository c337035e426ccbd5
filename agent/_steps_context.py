"""The context steps of a run: its window, compaction (:class:`Compact`), the context
warnings, and the forced final channel of a turn cut while reasoning (``ForceFinal``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio.to_thread

from . import _context as cx
from ._steps_base import RunCore, Steps
from ._transcript import Transcript
from ._turn import DEFAULT_CONTEXT_WINDOW, ForceFinal
from .events import Compacted, ForcedTokens, WarningEvent

#: the least room a turn needs to say anything (as ``request_for``)
_MIN_ROOM = 16


@dataclass(frozen=True, slots=True)
class Compact:
    """The next prompt would pass the compaction limit: carry out ``plan`` before sampling."""

    plan: cx.CompactionPlan


class ContextSteps(RunCore):
    """:meth:`plan_context`, :meth:`compact` and :meth:`force_final`, mixed into ``Run``."""

    # --- the context: its window, compaction -------------------------------------------

    @property
    def window(self) -> int:
        agent = self.agent
        return agent.context_window or agent.engine.context_window or DEFAULT_CONTEXT_WINDOW

    async def plan_context(self) -> Compact | None:
        """A :class:`Compact` step when the next prompt would pass the policy's limit and
        compaction can remove something; else None. Planning scans the whole transcript, so
        it runs in a worker thread."""
        policy = self.agent.compaction
        if policy is None:
            return None
        window = self.window
        if len(self.transcript) <= policy.limit(window, self.agent.max_tokens_per_turn):
            return None
        ids = self.transcript.view().tolist()
        plan = await anyio.to_thread.run_sync(
            cx.plan_to_target, self.agent.encoding, ids, policy, window
        )
        return None if plan.empty else Compact(plan)

    async def compact(self, step: Compact) -> Steps:
        """Replace the transcript and the messages by their compacted form (rendered once;
        later turns append to it) and record it: a ``Compacted`` event and a trace record."""
        encoding, ids = self.agent.encoding, self.transcript.view().tolist()
        summary = await self._summary(step.plan, ids) if step.plan.summary_range else None
        outcome = await anyio.to_thread.run_sync(
            cx.apply_plan, encoding, ids, list(self.messages), step.plan, summary
        )
        self.transcript = Transcript(outcome.prompt_ids)
        self.messages = outcome.messages
        self.compactions += 1
        window = self.window
        self.warned = {t for t in self.warned if t * window <= outcome.tokens_after}
        event = Compacted(
            run_id=self.run_id,
            turn=self.turn,
            tokens_before=outcome.tokens_before,
            tokens_after=outcome.tokens_after,
            context_window=window,
            dropped_reasoning=outcome.dropped_reasoning,
            stubbed_outputs=outcome.stubbed_outputs,
            summarized=outcome.summarized,
            removed=outcome.removed,
        )
        yield event
        recorded = getattr(self.recorder, "compacted", None)
        if recorded is not None:
            await recorded(self.state(self.turn), event)

    async def _summary(self, plan: cx.CompactionPlan, ids: list[int]) -> str:
        summarize = self.agent.compaction.summarize if self.agent.compaction else None
        if summarize is None:
            raise RuntimeError("a summary plan without a summarize callable")
        old = cx.summary_messages(self.agent.encoding, ids, self.messages, plan)
        return await cx.call_summarizer(summarize, old)

    def _check_room(self, prompt: Sequence[int]) -> None:
        """:class:`ContextOverflowError`, saying what filled the context, when the prompt
        leaves no room to answer."""
        window = self.window
        if window - len(prompt) >= _MIN_ROOM:
            return
        how = (
            "even after compaction"
            if self.compactions
            else "with compaction off"
            if self.agent.compaction is None
            else "and compaction found nothing more to remove"
        )
        raise cx.overflow_error(self.agent.encoding, prompt, window, how)

    def _context_warnings(self, tokens: int) -> list[WarningEvent]:
        window = self.window
        out = []
        for threshold in cx.crossed(self.agent.context_warnings, self.warned, tokens / window):
            self.warned.add(threshold)
            message = cx.warning_text(tokens, window, threshold, self.agent.compaction)
            out.append(WarningEvent(run_id=self.run_id, turn=self.turn, message=message))
        return out

    # --- force final: the turn was cut while reasoning -----------------------------------

    async def force_final(self, step: ForceFinal) -> Steps:
        """Close the cut analysis and open the final channel with ids the model did not
        sample; the next turn continues inside that message."""
        sampled, encoding = step.sampled, self.agent.encoding
        self.messages.extend(sampled.messages)
        forced = cx.forced_final_ids(encoding, sampled.output)
        self.transcript.extend(sampled.output)
        self.transcript.extend(forced)
        yield ForcedTokens(
            run_id=self.run_id,
            turn=self.turn,
            reason=step.reason,
            token_ids=tuple(forced),
            text=encoding.decode(forced),
            reasoning_tokens=sampled.reasoning_tokens,
        )
        recorded = getattr(self.recorder, "forced", None)
        if recorded is not None:
            await recorded(self.state(self.turn + 1), sampled.output, forced)
