"""Run control: approval of tool calls, hooks that act on calls and turns, usage limits.

**Approval.** A tool whose ``needs_approval`` is ``True`` (or a callable that says so for a
call), or an agent whose ``needs_approval`` says so for every tool, does not run a call
until it is approved. Without an ``approver`` the run pauses after the model's call is
complete and before the tool runs (``RunResult.status == "paused"``); ``Agent.resume`` goes on
with the decisions. With an ``approver`` (a callable of ``(ctx, call)``, sync or async) the
run asks it and waits, however long it takes: the wait is not part of the tool's timeout.
A decision is ``True`` (run it), ``False`` (decline) or a string (decline, with this reason
for the model).

**Hooks** (:class:`Hooks`) may act, not only observe: ``before_tool_call`` allows, denies
(:class:`Deny`, the model reads the message) or replaces the arguments
(:class:`ReplaceArguments`); ``after_tool_call`` may replace the output; ``on_turn_end`` may
stop the run (:class:`StopRun`). A hook that raises ends the run with a :class:`HookError`
naming it.

**Usage limits** (:class:`UsageLimits`) end a run with :class:`UsageLimitExceeded` naming the
limit and the figure reached. They are checked before each model turn (what the next request
would bring), after it, and before each tool call.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harmony_agent.tools.base import RunContext, Tool, ToolResult, serialize_output

from .errors import ConfigurationError, HookError, RunStateError, UsageLimitExceeded
from .result import RunUsage, ToolCallRecord, ToolCallRequest

__all__ = [
    "Approver",
    "Decision",
    "Deny",
    "Hooks",
    "ReplaceArguments",
    "StopRun",
    "TurnInfo",
    "UsageLimits",
    "check_decisions",
    "declined_result",
    "needs_approval",
]

#: an approval decision: True runs the call, False declines it, a string declines with a reason
Decision = bool | str
#: decides calls that need approval as they come (the run waits for it instead of pausing)
Approver = Callable[[RunContext, ToolCallRequest], Decision | Awaitable[Decision]]


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


async def call_hook(hook: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` (sync or async); whatever it raises becomes a :class:`HookError`."""
    try:
        outcome = fn(*args)
        if inspect.isawaitable(outcome):
            outcome = await outcome
    except Exception as exc:
        raise HookError(
            f"the {hook} hook ({_name(fn)}) raised {type(exc).__name__}: {exc}; the run was "
            "stopped. Fix the hook, or catch the error inside it.",
            hook=hook,
        ) from exc
    return outcome


# --- approval ---------------------------------------------------------------------------------


async def needs_approval(
    tool: Tool, agent_policy: Any, ctx: RunContext, call: ToolCallRequest
) -> bool:
    """Whether ``call`` must be approved: the tool's policy or the agent's says so."""
    policies = [
        (f"needs_approval of {tool.recipient}", tool.needs_approval),
        ("the agent's needs_approval", agent_policy),
    ]
    for owner, policy in policies:
        if policy is None or policy is False:
            continue
        if policy is True or await call_hook(owner, policy, ctx, call):
            return True
    return False


def declined_result(decision: Decision) -> ToolResult:
    """The tool message of a call the user declined (the model reads it and adapts)."""
    reason = decision.strip() if isinstance(decision, str) else ""
    text = "The user declined this tool call; it was not run."
    if reason:
        text += f" Reason: {reason.rstrip('.')}."
    text += " Do not call it again as is: go on without it, or ask the user."
    return ToolResult(text, ok=False, error_kind="rejected")


def check_decisions(
    pending: list[ToolCallRequest], approve: Mapping[str, Decision] | None
) -> dict[str, Decision]:
    """Decisions for exactly the pending calls, or :class:`RunStateError` saying what is off."""
    approve = dict(approve or {})
    ids = [p.call_id for p in pending]
    listed = ", ".join(f"{p.call_id} ({p.recipient})" for p in pending) or "none"
    unknown = sorted(set(approve) - set(ids))
    if unknown:
        raise RunStateError(
            f"approve= names {', '.join(unknown)}, which the run is not waiting on; it waits on: "
            f"{listed}. Nothing was run."
        )
    missing = [i for i in ids if i not in approve]
    if missing:
        raise RunStateError(
            f"no decision for {', '.join(missing)}: pass approve={{call_id: True | False | "
            f"'reason'}} for every pending call ({listed}). Nothing was run."
        )
    for call_id, decision in approve.items():
        if not isinstance(decision, bool | str):
            raise RunStateError(
                f"the decision for {call_id} must be True, False or a reason (str), got "
                f"{decision!r}. Nothing was run."
            )
    return approve


# --- hooks ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deny:
    """``before_tool_call``'s answer to refuse a call: the model reads ``message``."""

    message: str


@dataclass(frozen=True, slots=True)
class ReplaceArguments:
    """``before_tool_call``'s answer to run the call with other ``arguments`` (a dict, or the
    text for the python tool); they are validated like the model's own."""

    arguments: Any


@dataclass(frozen=True, slots=True)
class StopRun:
    """``on_turn_end``'s answer to end the run (:class:`RunStoppedError`, with the result)."""

    reason: str = "stopped by on_turn_end"


@dataclass(frozen=True, slots=True)
class TurnInfo:
    """What ``on_turn_end`` sees: the turn's number, the run's usage so far and the turn's
    tool call (None when the turn was sampled again)."""

    turn: int
    usage: RunUsage
    tool_call: ToolCallRecord | None


@dataclass(frozen=True, slots=True)
class Hooks:
    """Callables (sync or async) the run calls at its steps; each may be None.

    ``before_tool_call(ctx, call)`` — just before an (approved) call runs: return None to
    allow it, :class:`Deny` to refuse it or :class:`ReplaceArguments` to change them.
    ``after_tool_call(ctx, call, result)`` — return None to keep the ``ToolResult``, or a
    replacement: a ``ToolResult``, or any value, which becomes the output text.
    ``on_turn_end(ctx, turn)`` — after every turn the run goes on from (a :class:`TurnInfo`);
    return :class:`StopRun` (or True) to end the run.

    Example::

        from harmony_agent import Agent, Deny, Hooks, tool
        from harmony_agent.engine import ScriptedEngine

        @tool
        def rm(path: str) -> str:
            "Delete a file."
            raise AssertionError("never runs")

        no_root = Hooks(before_tool_call=lambda ctx, call: Deny("not under /") if
                        call.arguments["path"].startswith("/") else None)
        agent = Agent(tools=[rm], hooks=no_root, engine=ScriptedEngine([
            '<|channel|>commentary to=functions.rm <|constrain|>json<|message|>{"path":"/etc"}<|call|>',
            "<|channel|>final<|message|>I may not.<|return|>",
        ]))
        result = agent.run_sync("clean up")
        assert result.tool_calls[0].output == "not under /"
    """

    before_tool_call: Callable[[RunContext, ToolCallRequest], Any] | None = None
    after_tool_call: Callable[[RunContext, ToolCallRequest, ToolResult], Any] | None = None
    on_turn_end: Callable[[RunContext, TurnInfo], Any] | None = None

    def merged(self, other: Hooks | None) -> Hooks:
        """These hooks with ``other``'s set ones in their place (a run's over the agent's)."""
        if other is None:
            return self
        return Hooks(
            other.before_tool_call or self.before_tool_call,
            other.after_tool_call or self.after_tool_call,
            other.on_turn_end or self.on_turn_end,
        )

    async def before(
        self, ctx: RunContext, call: ToolCallRequest
    ) -> Deny | ReplaceArguments | None:
        if self.before_tool_call is None:
            return None
        outcome = await call_hook("before_tool_call", self.before_tool_call, ctx, call)
        if outcome is None or outcome is True:
            return None
        if outcome is False:
            return Deny("This tool call was refused by the application; it was not run.")
        if isinstance(outcome, Deny | ReplaceArguments):
            return outcome
        raise HookError(
            f"the before_tool_call hook ({_name(self.before_tool_call)}) returned {outcome!r}; "
            "return None to allow the call, Deny(message) or ReplaceArguments(arguments)",
            hook="before_tool_call",
        )

    async def after(self, ctx: RunContext, call: ToolCallRequest, result: ToolResult) -> ToolResult:
        if self.after_tool_call is None:
            return result
        outcome = await call_hook("after_tool_call", self.after_tool_call, ctx, call, result)
        if outcome is None:
            return result
        if isinstance(outcome, ToolResult):
            return outcome
        return dataclasses.replace(result, text=serialize_output(outcome), value=outcome)

    async def around(
        self, tool: Tool, call: ToolCallRequest, ctx: RunContext
    ) -> tuple[ToolResult, Any]:
        """Run an approved call through ``before_tool_call``, the tool and
        ``after_tool_call``: the result and the arguments it ran with."""
        verdict = await self.before(ctx, call)
        if isinstance(verdict, Deny):
            return ToolResult(verdict.message, ok=False, error_kind="denied"), call.arguments
        arguments, raw = call.arguments, call.raw_arguments
        if isinstance(verdict, ReplaceArguments):
            arguments, raw = verdict.arguments, replaced_raw(tool, verdict.arguments)
        result = await tool.invoke(raw, ctx)
        return await self.after(ctx, call, result), arguments

    async def turn_end(self, ctx: RunContext, info: TurnInfo) -> StopRun | None:
        if self.on_turn_end is None:
            return None
        outcome = await call_hook("on_turn_end", self.on_turn_end, ctx, info)
        if outcome is None or outcome is False:
            return None
        if outcome is True:
            return StopRun()
        if isinstance(outcome, StopRun):
            return outcome
        raise HookError(
            f"the on_turn_end hook ({_name(self.on_turn_end)}) returned {outcome!r}; return "
            "None to go on or StopRun(reason) to end the run",
            hook="on_turn_end",
        )


def replaced_raw(tool: Tool, arguments: Any) -> str:
    """The call text for arguments a hook put in place of the model's."""
    if tool.parameters is None:
        return str(arguments)
    return json.dumps(arguments, ensure_ascii=False)


# --- usage limits -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageLimits:
    """Limits on one run; ``None`` means no limit (or, for a run's limits, the agent's).

    ``max_turns`` model requests; ``max_tool_calls`` tool calls run; ``max_input_tokens``,
    ``max_output_tokens`` and ``max_total_tokens`` summed over the run's requests (a request
    that would pass the input or total limit is not sent); ``max_cost_usd`` at the given
    prices (US dollars per million tokens); ``max_wall_s`` seconds of wall time (checked
    between steps; a pause waiting for approval does not count).

    Example::

        from harmony_agent import Agent, UsageLimits
        from harmony_agent.engine import ScriptedEngine
        from harmony_agent.errors import UsageLimitExceeded

        agent = Agent(engine=ScriptedEngine(["<|channel|>final<|message|>hi<|return|>"]),
                      usage_limits=UsageLimits(max_input_tokens=10))
        try:
            agent.run_sync("hello")
        except UsageLimitExceeded as exc:
            assert exc.limit == "max_input_tokens" and exc.result.usage.turns == 0
    """

    max_turns: int | None = None
    max_tool_calls: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_total_tokens: int | None = None
    max_cost_usd: float | None = None
    max_wall_s: float | None = None
    price_input: float = 0.07
    price_cached: float = 0.04
    price_output: float = 0.30

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ConfigurationError(
                    f"UsageLimits({f.name}=...) must be a non-negative number or None, got "
                    f"{value!r}"
                )

    def merged(self, other: UsageLimits | None) -> UsageLimits:
        """These limits with ``other``'s set ones in their place (a run's over the agent's)."""
        if other is None:
            return self
        changes = {
            f.name: getattr(other, f.name)
            for f in dataclasses.fields(other)
            if f.name.startswith("max_") and getattr(other, f.name) is not None
        }
        prices = ("price_input", "price_cached", "price_output")
        defaults = UsageLimits()
        changes |= {
            p: getattr(other, p) for p in prices if getattr(other, p) != getattr(defaults, p)
        }
        return dataclasses.replace(self, **changes)

    def cost_usd(self, usage: RunUsage) -> float:
        fresh = usage.prompt_tokens - usage.cached_prompt_tokens
        return (
            fresh * self.price_input
            + usage.cached_prompt_tokens * self.price_cached
            + usage.output_tokens * self.price_output
        ) / 1e6

    def _exceeded(self, limit: str, value: Any, what: str) -> UsageLimitExceeded:
        maximum = getattr(self, limit)
        return UsageLimitExceeded(
            f"usage limit {limit}={maximum:g} reached: {what}. Raise the limit "
            "(UsageLimits) or give the model a smaller task.",
            limit=limit,
            value=value,
            maximum=maximum,
        )

    def check_before_turn(self, usage: RunUsage, prompt_len: int, wall_s: float) -> None:
        """Before a request of ``prompt_len`` tokens: whether the run may send it."""
        if self.max_turns is not None and usage.turns >= self.max_turns:
            raise self._exceeded(
                "max_turns",
                usage.turns,
                f"{usage.turns} model turns done and the run needs another",
            )
        if self.max_input_tokens is not None:
            total = usage.prompt_tokens + prompt_len
            if total > self.max_input_tokens:
                raise self._exceeded(
                    "max_input_tokens",
                    total,
                    f"the next prompt ({prompt_len} tokens) would bring the run's input to {total}",
                )
        if self.max_total_tokens is not None:
            total = usage.prompt_tokens + usage.output_tokens + prompt_len
            if total > self.max_total_tokens:
                raise self._exceeded(
                    "max_total_tokens",
                    total,
                    f"the next prompt ({prompt_len} tokens) would bring the run's tokens to {total}",
                )
        self._check_spent(usage, wall_s, at_limit=True)

    def check_after_turn(self, usage: RunUsage, wall_s: float) -> None:
        """After a turn: whether what it used passed a limit."""
        if self.max_input_tokens is not None and usage.prompt_tokens > self.max_input_tokens:
            raise self._exceeded(
                "max_input_tokens", usage.prompt_tokens, f"{usage.prompt_tokens} input tokens used"
            )
        total = usage.prompt_tokens + usage.output_tokens
        if self.max_total_tokens is not None and total > self.max_total_tokens:
            raise self._exceeded("max_total_tokens", total, f"{total} tokens used")
        self._check_spent(usage, wall_s, at_limit=False)

    def _check_spent(self, usage: RunUsage, wall_s: float, *, at_limit: bool) -> None:
        # before a turn, reaching a limit is enough to stop (the next turn would pass it)
        def over(value: float, maximum: float | None) -> bool:
            return maximum is not None and (value >= maximum if at_limit else value > maximum)

        if over(usage.output_tokens, self.max_output_tokens):
            raise self._exceeded(
                "max_output_tokens",
                usage.output_tokens,
                f"{usage.output_tokens} output tokens used",
            )
        cost = self.cost_usd(usage)
        if over(cost, self.max_cost_usd):
            raise self._exceeded("max_cost_usd", cost, f"the run has cost ${cost:.6f}")
        self.check_wall(wall_s)

    def check_wall(self, wall_s: float) -> None:
        if self.max_wall_s is not None and wall_s > self.max_wall_s:
            raise self._exceeded("max_wall_s", wall_s, f"the run has taken {wall_s:.1f} s")

    def check_before_tool(self, calls_done: int, call: ToolCallRequest, wall_s: float) -> None:
        """Before ``call`` runs: whether the run may make another tool call."""
        if self.max_tool_calls is not None and calls_done >= self.max_tool_calls:
            raise self._exceeded(
                "max_tool_calls",
                calls_done,
                f"{calls_done} tool calls done and the model asked for another "
                f"({call.recipient}); it was not run",
            )
        self.check_wall(wall_s)
