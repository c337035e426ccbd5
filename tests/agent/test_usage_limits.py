"""Usage limits end a run with UsageLimitExceeded naming the limit and the figure; every error
that ends a run carries the partial run."""

from __future__ import annotations

import pytest
from harmony_agent import Agent, UsageLimits, tool
from harmony_agent.engine import ScriptedEngine
from harmony_agent.errors import (
    ConfigurationError,
    ContextOverflowError,
    EngineError,
    HarmonyAgentError,
    MaxTurnsError,
    OutputTruncatedError,
    ScriptExhaustedError,
    ToolErrorBudgetError,
    UsageLimitExceeded,
)
from harmony_agent.events import ErrorEvent

ADD = '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":1,"b":2}<|call|>'
FINAL = "<|channel|>final<|message|>3<|return|>"

calls = []


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    calls.append((a, b))
    return a + b


@pytest.fixture(autouse=True)
def _clear():
    calls.clear()


def agent_with(replies, **kwargs) -> Agent:
    kwargs.setdefault("tools", [add])
    return Agent(engine=ScriptedEngine(replies), conversation_start_date="2026-01-01", **kwargs)


def exceeded(agent: Agent, **run_kwargs) -> UsageLimitExceeded:
    with pytest.raises(UsageLimitExceeded) as info:
        agent.run_sync("add", **run_kwargs)
    return info.value


def test_max_turns():
    exc = exceeded(agent_with([ADD, ADD, ADD, FINAL]), usage_limits=UsageLimits(max_turns=2))
    assert exc.limit == "max_turns" and exc.value == 2 and exc.maximum == 2
    assert "max_turns=2 reached: 2 model turns done" in str(exc)
    assert exc.result.usage.turns == 2 and len(exc.result.tool_calls) == 2


def test_max_tool_calls_stops_before_the_call_runs():
    agent = agent_with([ADD, ADD, FINAL], usage_limits=UsageLimits(max_tool_calls=1))
    exc = exceeded(agent)
    assert exc.limit == "max_tool_calls" and exc.value == 1
    assert "asked for another (functions.add); it was not run" in str(exc)
    assert calls == [(1, 2)] and len(exc.result.tool_calls) == 1


def test_max_input_tokens_refuses_to_send_a_prompt_past_it():
    agent = agent_with([FINAL])
    prompt = len(agent.first_prompt("add"))
    exc = exceeded(agent, usage_limits=UsageLimits(max_input_tokens=prompt - 1))
    assert exc.limit == "max_input_tokens" and exc.value == prompt
    assert exc.result.usage.turns == 0  # nothing was sent
    assert agent.engine.requests == []


def test_max_input_tokens_summed_over_turns():
    agent = agent_with([ADD, FINAL])
    first = len(agent.first_prompt("add"))
    exc = exceeded(agent, usage_limits=UsageLimits(max_input_tokens=first + 10))
    assert exc.limit == "max_input_tokens" and exc.value > first + 10
    assert exc.result.usage.turns == 1 and len(agent.engine.requests) == 1


def test_max_output_tokens():
    exc = exceeded(agent_with([ADD, FINAL]), usage_limits=UsageLimits(max_output_tokens=5))
    assert exc.limit == "max_output_tokens" and exc.value == exc.result.usage.output_tokens > 5


def test_max_total_tokens():
    agent = agent_with([ADD, FINAL])
    first = len(agent.first_prompt("add"))
    exc = exceeded(agent, usage_limits=UsageLimits(max_total_tokens=first + 5))
    usage = exc.result.usage
    assert exc.limit == "max_total_tokens"
    assert exc.value == usage.prompt_tokens + usage.output_tokens > first + 5


def test_max_cost_usd():
    limits = UsageLimits(max_cost_usd=1e-6, price_input=1.0, price_output=1.0)
    exc = exceeded(agent_with([ADD, ADD, FINAL]), usage_limits=limits)
    assert exc.limit == "max_cost_usd" and exc.value > 1e-6
    assert exc.value == pytest.approx(limits.cost_usd(exc.result.usage))
    assert "the run has cost $" in str(exc)


def test_max_wall_s():
    exc = exceeded(agent_with([ADD, FINAL]), usage_limits=UsageLimits(max_wall_s=0))
    assert exc.limit == "max_wall_s" and exc.value > 0


def test_run_limits_override_the_agents_field_by_field():
    agent = agent_with([ADD, ADD, FINAL], usage_limits=UsageLimits(max_turns=10, max_tool_calls=1))
    exc = exceeded(agent, usage_limits=UsageLimits(max_turns=1))
    assert exc.limit == "max_turns"  # the run's max_turns, the agent's max_tool_calls kept
    assert agent.usage_limits.merged(UsageLimits(max_turns=1)) == UsageLimits(
        max_turns=1, max_tool_calls=1
    )


def test_under_the_limits_the_run_answers():
    limits = UsageLimits(max_turns=2, max_tool_calls=1, max_total_tokens=100_000, max_wall_s=600)
    assert agent_with([ADD, FINAL], usage_limits=limits).run_sync("add").final_text == "3"


def test_bad_limits_are_refused():
    with pytest.raises(ConfigurationError, match=r"max_turns=\.\.\.\) must be a non-negative"):
        UsageLimits(max_turns=-1)
    with pytest.raises(ConfigurationError, match="usage_limits must be a UsageLimits"):
        agent_with([], usage_limits={"max_turns": 1})


# --- every run-ending error keeps the run ------------------------------------------------------


def failing_run(case: str) -> tuple[Agent, dict]:
    bad = '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":"x"}<|call|>'
    if case == "max_turns":
        return agent_with([ADD, ADD], max_turns=2), {}
    if case == "tool_error_budget":
        return agent_with([ADD, bad, bad], max_tool_errors=2), {}
    if case == "context_overflow":
        agent = agent_with([ADD, FINAL])
        agent.context_window = len(agent.first_prompt("add")) + 40
        return agent, {}
    if case == "output_truncated":
        # a tool call cut by max_tokens_per_turn (cut reasoning is recovered: the model is
        # made to answer, see test_context.py)
        cut_call = '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a": '
        return agent_with([ADD, cut_call + "1" * 200], max_tokens_per_turn=25), {}
    if case == "script_exhausted":
        return agent_with([ADD]), {}
    if case == "usage_limit":
        return agent_with([ADD, ADD, FINAL]), {"usage_limits": UsageLimits(max_tool_calls=1)}
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("max_turns", MaxTurnsError),
        ("tool_error_budget", ToolErrorBudgetError),
        ("context_overflow", ContextOverflowError),
        ("output_truncated", OutputTruncatedError),
        ("script_exhausted", ScriptExhaustedError),
        ("usage_limit", UsageLimitExceeded),
    ],
)
def test_a_run_ending_error_carries_the_partial_run(case, error):
    agent, kwargs = failing_run(case)
    with pytest.raises(HarmonyAgentError) as info:
        agent.run_sync("add", **kwargs)
    exc = info.value
    assert isinstance(exc, error)
    result = exc.result
    assert result is not None and result.status == "error" and result.final_text == ""
    assert result.usage.turns >= 1 and result.tool_calls and result.tool_calls[0].output == "3"
    assert [m.author.role.value for m in result.messages[:3]] == ["system", "developer", "user"]
    last_sent = agent.engine.requests[-1]  # the last turn's prompt extends it, or is it
    assert result.prompt_ids[: len(last_sent)] == last_sent
    assert result.token_ids[: len(result.prompt_ids)] == result.prompt_ids
    last = result.events[-1]
    assert isinstance(last, ErrorEvent) and last.partial_result and last.error == type(exc).__name__


def test_an_engine_error_before_any_output_still_carries_the_run():
    agent = agent_with([ADD, FINAL])

    async def broken(request):
        raise RuntimeError("the GPU fell off")
        yield  # pragma: no cover

    agent.engine.generate = broken  # type: ignore[method-assign]
    with pytest.raises(EngineError, match="the GPU fell off") as info:
        agent.run_sync("add")
    result = info.value.result
    assert result.status == "error" and result.usage.turns == 0
    assert result.prompt_ids == agent.first_prompt("add")
    assert [e.type for e in result.events] == ["run_started", "error"]
