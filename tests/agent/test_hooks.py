"""Hooks that act: deny or change a call, replace its output, stop the run; a raising hook
names itself. on_event on run_sync, and the streamed result."""

from __future__ import annotations

import contextlib
import json

import anyio
import anyio.lowlevel
import pytest
from harmony_agent import Agent, Deny, Hooks, ReplaceArguments, RunStream, StopRun, tool
from harmony_agent.engine import ScriptedEngine
from harmony_agent.errors import HookError, RunStoppedError, ScriptExhaustedError
from harmony_agent.tools import ToolResult

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


def agent_with(replies, **kwargs) -> tuple[Agent, ScriptedEngine]:
    engine = ScriptedEngine(replies)
    kwargs.setdefault("tools", [add])
    return Agent(engine=engine, conversation_start_date="2026-01-01", **kwargs), engine


def test_before_tool_call_denies_with_a_message_for_the_model():
    seen = []

    def guard(ctx, call):
        seen.append(call)
        return Deny("adding is switched off today")

    agent, engine = agent_with([ADD, FINAL], hooks=Hooks(before_tool_call=guard))
    result = agent.run_sync("1+2")
    assert calls == [] and seen[0].arguments == {"a": 1, "b": 2}
    record = result.tool_calls[0]
    assert not record.ok and record.error_kind == "denied"
    assert record.output == "adding is switched off today"
    assert "adding is switched off today" in agent.encoding.decode(engine.requests[1])


def test_before_tool_call_replaces_the_arguments():
    async def double(ctx, call):
        await anyio.lowlevel.checkpoint()
        return ReplaceArguments({k: v * 2 for k, v in call.arguments.items()})

    agent, _ = agent_with([ADD, FINAL], hooks=Hooks(before_tool_call=double))
    result = agent.run_sync("1+2")
    assert calls == [(2, 4)] and result.tool_calls[0].output == "6"
    assert result.tool_calls[0].arguments == {"a": 2, "b": 4}
    assert result.tool_calls[0].raw_arguments == '{"a":1,"b":2}'  # what the model wrote


def test_replaced_arguments_are_validated_like_the_models():
    hooks = Hooks(before_tool_call=lambda ctx, call: ReplaceArguments({"a": "one"}))
    agent, _ = agent_with([ADD, FINAL], hooks=hooks)
    result = agent.run_sync("1+2")
    assert calls == [] and result.tool_calls[0].error_kind == "invalid_arguments"


def test_after_tool_call_replaces_the_output():
    def redact(ctx, call, result: ToolResult):
        assert result.ok and result.text == "3"
        return {"sum": "[redacted]"}

    agent, engine = agent_with([ADD, FINAL], hooks=Hooks(after_tool_call=redact))
    result = agent.run_sync("1+2")
    assert calls == [(1, 2)] and result.tool_calls[0].output == '{"sum":"[redacted]"}'
    assert "[redacted]" in agent.encoding.decode(engine.requests[1])


def test_after_tool_call_may_return_a_whole_tool_result():
    hooks = Hooks(after_tool_call=lambda ctx, call, r: ToolResult("nope", ok=False, error_kind="x"))
    agent, _ = agent_with([ADD, FINAL], hooks=hooks)
    record = agent.run_sync("1+2").tool_calls[0]
    assert (record.output, record.ok, record.error_kind) == ("nope", False, "x")


def test_on_turn_end_stops_the_run_with_the_partial_result():
    turns = []

    def enough(ctx, turn):
        turns.append((turn.turn, turn.usage.turns, turn.tool_call.output))
        return StopRun("one call is enough") if turn.turn == 1 else None

    agent, engine = agent_with([ADD, ADD, ADD, FINAL], hooks=Hooks(on_turn_end=enough))
    with pytest.raises(RunStoppedError, match="after turn 1: one call is enough") as info:
        agent.run_sync("1+2")
    assert turns == [(0, 1, "3"), (1, 2, "3")] and len(engine.requests) == 2
    result = info.value.result
    assert result.status == "error" and len(result.tool_calls) == 2
    assert result.events[-1].type == "error" and result.events[-1].partial_result


def test_run_hooks_replace_the_agents_per_hook():
    agent_hooks = Hooks(
        before_tool_call=lambda ctx, call: Deny("agent says no"),
        after_tool_call=lambda ctx, call, r: "agent output",
    )
    run_hooks = Hooks(before_tool_call=lambda ctx, call: None)
    agent, _ = agent_with([ADD, FINAL], hooks=agent_hooks)
    result = agent.run_sync("1+2", hooks=run_hooks)
    assert calls == [(1, 2)] and result.tool_calls[0].output == "agent output"


@pytest.mark.parametrize(
    ("hooks", "name"),
    [
        (Hooks(before_tool_call=lambda ctx, call: 1 / 0), "before_tool_call"),
        (Hooks(after_tool_call=lambda ctx, call, r: {}["missing"]), "after_tool_call"),
        (Hooks(on_turn_end=lambda ctx, turn: [][1]), "on_turn_end"),
    ],
)
def test_a_raising_hook_ends_the_run_naming_the_hook(hooks, name):
    agent, _ = agent_with([ADD, FINAL], hooks=hooks)
    with pytest.raises(HookError, match=rf"the {name} hook \(.*<lambda>\) raised") as info:
        agent.run_sync("1+2")
    assert info.value.hook == name and info.value.__cause__ is not None
    assert info.value.result.status == "error"


def test_a_hook_answer_of_the_wrong_kind_is_a_clear_error():
    agent, _ = agent_with([ADD, FINAL], hooks=Hooks(before_tool_call=lambda ctx, call: "ok"))
    with pytest.raises(HookError, match="returned 'ok'; return None to allow the call, Deny"):
        agent.run_sync("1+2")


def test_the_hooks_docstring_example_runs():
    from harmony_agent import _hooks

    for obj in (_hooks.Hooks, _hooks.UsageLimits):
        code = obj.__doc__.split("Example::", 1)[1]
        exec(compile(__import__("textwrap").dedent(code), obj.__name__, "exec"), {})


def test_on_event_on_run_sync():
    seen = []
    agent, _ = agent_with([ADD, FINAL])
    result = agent.run_sync("1+2", on_event=seen.append)
    assert seen == result.events and seen[-1].type == "run_finished"


# --- the streamed result -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_stream_has_the_result_at_the_end_and_continues_a_conversation():
    agent, engine = agent_with([ADD, FINAL, "<|channel|>final<|message|>6<|return|>"])
    stream = agent.stream("1+2")
    assert isinstance(stream, RunStream)
    with pytest.raises(RuntimeError, match="iterate the stream to its end first"):
        _ = stream.result
    async with stream as events:
        types = [event.type async for event in events]
    assert types[-1] == "run_finished"
    result = stream.result
    assert result.final_text == "3" and result.events[-1].type == "run_finished"
    again = await agent.run("and doubled?", history=result)
    assert again.final_text == "6"
    assert "and doubled?" in agent.encoding.decode(engine.requests[-1])


@pytest.mark.anyio
async def test_a_paused_stream_has_the_paused_result():
    @tool(needs_approval=True)
    def delete(path: str) -> str:
        """Delete a file."""
        raise AssertionError("not approved")

    call = (
        '<|channel|>commentary to=functions.delete <|constrain|>json<|message|>{"path":"x"}<|call|>'
    )
    agent, _ = agent_with([call], tools=[delete])
    async with agent.stream("delete x") as stream:
        async for event in stream:
            last = event
    assert last.type == "run_paused" and stream.result.status == "paused"
    assert last.call_ids == (stream.result.interruptions[0].call_id,)
    json.loads(stream.result.state.to_json())


@pytest.mark.anyio
async def test_a_failed_stream_raises_and_keeps_the_partial_result():
    agent, _ = agent_with([ADD])
    async with agent.stream("1+2") as stream:
        with pytest.raises(ScriptExhaustedError) as info:
            async for _ in stream:
                pass
    assert stream.result is info.value.result and stream.result.status == "error"
    assert stream.result.tool_calls[0].output == "3"


@pytest.mark.anyio
async def test_leaving_the_stream_early_stops_the_run():
    agent, engine = agent_with([ADD, FINAL])
    async with agent.stream("1+2") as stream:
        async for event in stream:
            if event.type == "tool_call":
                break
    assert calls == [] and len(engine.requests) == 1
    # contextlib.aclosing still works on it, as on the generator it used to be
    async with contextlib.aclosing(agent.stream("again")) as events:
        async for _ in events:
            break
