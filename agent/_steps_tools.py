"""The tool steps of a run: whether a call needs approval, running it (``CallTool``),
pausing for approval (``Pause``) and resuming a paused run with the decisions."""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import replace

from harmony_agent.tools.base import RunContext, Tool, ToolResult
from openai_harmony import Message

from . import _harmony as hm
from ._hooks import Decision, TurnInfo, call_hook, declined_result, needs_approval
from ._registry import is_tool_recipient
from ._steps_base import RunCore, Steps
from ._turn import CallTool, Pause, Sampled, call_request
from .errors import ToolErrorBudgetError, UnknownToolError
from .events import (
    ApprovalRequested,
    RunPaused,
    ToolCallEvent,
    ToolResultEvent,
    WarningEvent,
)
from .result import RunResult, ToolCallRecord, ToolCallRequest

#: outcomes of user decisions, not tool failures: they do not count against max_tool_errors
_DECIDED = frozenset({"rejected", "denied"})


class ToolSteps(RunCore):
    """:meth:`approval_needed`, :meth:`tool_step`, :meth:`pause` and :meth:`resume_step`,
    mixed into ``Run``."""

    async def approval_needed(self, sampled: Sampled, ctx: RunContext) -> bool:
        """Whether the call ``sampled`` ends in must be approved before it runs (the tool's or
        the agent's policy says so). Calls that cannot run (unknown tool, invalid arguments)
        need none: the model is told why instead."""
        last = sampled.messages[-1] if sampled.messages else None
        if (
            sampled.parse_error is not None
            or sampled.finish_reason != "stop"
            or last is None
            or not is_tool_recipient(last.recipient)
        ):
            return False
        request, tool = self._request(last, last.recipient)
        if not isinstance(tool, Tool):
            return False
        try:  # the policy sees the arguments the tool would run with (aliases resolved)
            arguments = tool.parse_arguments(request.raw_arguments)
        except Exception:  # the tool will refuse them, with the reason, without running
            return False
        return await needs_approval(tool, self.approval, ctx, replace(request, arguments=arguments))

    # --- tool step: resolve, validate, invoke, append the result ids ---------------------

    def _request(
        self, call: Message, recipient: str
    ) -> tuple[ToolCallRequest, Tool | UnknownToolError]:
        return call_request(
            self.agent.registry, call, recipient, self.run_id, self.turn, self.calls
        )

    def _announce(self, request: ToolCallRequest) -> ToolCallEvent:
        return ToolCallEvent(
            run_id=self.run_id,
            turn=self.turn,
            call_id=request.call_id,
            recipient=request.recipient,
            tool=request.tool,
            channel=request.channel,
            raw_arguments=request.raw_arguments,
            arguments=request.arguments,
        )

    async def tool_step(self, step: CallTool, ctx: RunContext) -> Steps:
        """Resolve the recipient, invoke the tool (it validates its arguments), and append the
        sampled ids and the rendered tool message to the transcript: the next prompt."""
        self.messages.extend(step.sampled.messages)
        request, tool = self._request(step.call, step.recipient)
        yield self._announce(request)
        async with aclosing(self._carry_out(request, tool, True, ctx, step.sampled.output)) as ev:
            async for event in ev:
                yield event

    async def _carry_out(
        self,
        request: ToolCallRequest,
        tool: Tool | UnknownToolError,
        decision: Decision,
        ctx: RunContext,
        sampled_output: list[int],
    ) -> Steps:
        """Run (or decline) the call, report it, and append its ids: ``sampled_output`` (the
        call's ids, unless they are in the transcript already) and the tool message."""
        record = await self._invoke(request, tool, decision, ctx)
        self.calls.append(record)
        yield ToolResultEvent(
            run_id=self.run_id,
            turn=self.turn,
            call_id=request.call_id,
            recipient=record.recipient,
            ok=record.ok,
            output=record.output,
            error_kind=record.error_kind,
            duration_s=record.duration_s,
        )
        for message in ctx.take_notices():
            yield WarningEvent(run_id=self.run_id, turn=self.turn, message=message)
        self._check_error_budget(record)
        result = hm.tool_result_message(
            record.name or record.recipient, request.channel, record.output
        )
        self.messages.append(result)
        appended = await hm.off_loop(
            len(record.output), hm.render_tool_result, self.agent.encoding, result
        )
        self.transcript.extend(sampled_output)
        self.transcript.extend(appended)
        self.pending = []
        if self.recorder is not None:
            await self.recorder.step(self.state(self.turn + 1), sampled_output, appended)

    def _check_error_budget(self, record: ToolCallRecord) -> None:
        if record.error_kind in _DECIDED:
            return
        self.consecutive_errors = 0 if record.ok else self.consecutive_errors + 1
        if self.consecutive_errors >= self.agent.max_tool_errors:
            raise ToolErrorBudgetError(
                f"{self.consecutive_errors} tool calls failed in a row (last: "
                f"{record.recipient}: {record.output[:300]}). The model is stuck; check "
                f"the tool descriptions or raise max_tool_errors."
            )

    async def _invoke(
        self,
        request: ToolCallRequest,
        tool: Tool | UnknownToolError,
        decision: Decision,
        ctx: RunContext,
    ) -> ToolCallRecord:
        arguments = request.arguments
        if isinstance(tool, UnknownToolError):
            result = ToolResult(str(tool), ok=False, error_kind=tool.kind)
        elif decision is not True:
            result = declined_result(decision)
        else:
            self.limits.check_before_tool(len(self.calls), request, self.wall_s())
            result, arguments = await self.hooks.around(tool, request, ctx)
        return ToolCallRecord(
            call_id=request.call_id,
            turn=request.turn,
            recipient=request.recipient,
            name=request.tool,
            channel=request.channel,
            raw_arguments=request.raw_arguments,
            arguments=arguments,
            output=result.text,
            ok=result.ok,
            error_kind=result.error_kind,
            duration_s=result.duration_s,
        )

    # --- pause: the call needs approval --------------------------------------------------

    async def pause(self, step: Pause, ctx: RunContext) -> Steps:
        """Ask the approver and carry on, or end the run paused before the tool runs: the
        call's sampled ids are kept in the transcript and the state (never sampled again)."""
        sampled = step.sampled
        self.messages.extend(sampled.messages)
        request, tool = self._request(step.call, step.recipient)
        yield self._announce(request)
        yield ApprovalRequested(
            run_id=self.run_id,
            turn=self.turn,
            call_id=request.call_id,
            recipient=request.recipient,
            tool=request.tool,
            raw_arguments=request.raw_arguments,
            arguments=request.arguments,
        )
        if self.approver is not None:
            decision = await call_hook("approver", self.approver, ctx, request)
            if not isinstance(decision, bool | str):
                decision = bool(decision)
            async with aclosing(
                self._carry_out(request, tool, decision, ctx, sampled.output)
            ) as ev:
                async for event in ev:
                    yield event
            return
        self.transcript.extend(sampled.output)
        self.pending = [request]
        state = self.state(self.turn + 1)
        if self.recorder is not None:
            await self.recorder.step(state, sampled.output, [])
        self.result = RunResult(
            run_id=self.run_id,
            final_text="",
            tool_calls=self.calls,
            usage=self.usage,
            events=self.events_seen,
            messages=self.messages,
            prompt_ids=sampled.prompt.tolist(),
            token_ids=state.prompt_ids,
            finish_reason=sampled.finish_reason,
            status="paused",
            interruptions=list(self.pending),
            state=state,
        )
        yield RunPaused(run_id=self.run_id, turn=self.turn, call_ids=(request.call_id,))

    async def resume_step(self, ctx: RunContext) -> Steps:
        """The first step of a resumed paused run: carry out the decisions on its pending
        calls, appending their results to the call ids the state ends with."""
        assert self.resume is not None
        self.pending = list(self.resume.pending)
        for request in list(self.pending):
            self.turn = request.turn
            tool: Tool | UnknownToolError
            try:
                tool = self.agent.registry.resolve(request.recipient)
            except UnknownToolError as exc:
                tool = exc
            decision = self.decisions[request.call_id]
            async with aclosing(self._carry_out(request, tool, decision, ctx, [])) as events:
                async for event in events:
                    yield event
            if self.calls:
                await self._turn_end(ctx, TurnInfo(request.turn, self._usage_now(), self.calls[-1]))
