"""The agent loop end to end on ScriptedEngine: the real encoding and parser run."""

from __future__ import annotations

import json
import time

import anyio
import pydantic
import pytest
from harmony_agent import Agent, tool
from harmony_agent.engine import FunctionEngine, ScriptedEngine
from harmony_agent.errors import (
    ContextOverflowError,
    MaxTurnsError,
    OutputTruncatedError,
    ScriptExhaustedError,
    ToolErrorBudgetError,
)
from harmony_agent.events import ToolCallStarted, ToolResultEvent, WarningEvent

CALL_ADD = (
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>'
)
FINAL = "<|channel|>final<|message|>The answer is 5.<|return|>"


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: first addend
        b: second addend
    """
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"boom: {reason}")


@tool(timeout=0.2)
async def slow(seconds: float) -> str:
    """Sleeps."""
    await anyio.sleep(seconds)
    return "done"


class City(pydantic.BaseModel):
    name: str
    country: str | None = None


@tool
def lookup(city: City) -> dict:
    """Look a city up."""
    return {"name": city.name.upper(), "country": city.country}


def make_agent(replies, **kw):
    engine = ScriptedEngine(replies)
    kw.setdefault("tools", [add, explode, slow, lookup])
    return Agent(engine=engine, conversation_start_date="2026-01-01", **kw), engine


def test_single_call_then_final():
    agent, engine = make_agent([CALL_ADD, FINAL])
    result = agent.run_sync("What is 2+3?")
    assert result.final_text == "The answer is 5."
    (call,) = result.tool_calls
    assert (call.recipient, call.name, call.arguments, call.output, call.ok) == (
        "functions.add",
        "functions.add",
        {"a": 2, "b": 3},
        "5",
        True,
    )
    assert result.usage.turns == 2
    assert engine.remaining == 0
    # the tool result went back to the model, authored by the tool, on the call's channel
    second = agent.encoding.decode(engine.requests[1])
    assert second.endswith(
        "<|start|>functions.add to=assistant<|channel|>commentary<|message|>5<|end|>"
        "<|start|>assistant"
    )


def test_several_sequential_calls_and_analysis_channel():
    replies = [
        "<|channel|>analysis<|message|>First add.<|end|><|start|>assistant" + CALL_ADD,
        '<|channel|>analysis to=functions.add <|constrain|>json<|message|>{"a":5,"b":5}<|call|>',
        '<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{"name":"oslo"}<|call|>',
        FINAL,
    ]
    agent, _ = make_agent(replies)
    result = agent.run_sync("go")
    assert [c.output for c in result.tool_calls] == ["5", "10", '{"name":"OSLO","country":null}']
    assert result.tool_calls[1].channel == "analysis"
    # the result of an analysis-channel call goes back on analysis
    assert any(
        m.author.name == "functions.add" and m.channel == "analysis" for m in result.messages
    )


@pytest.mark.parametrize(
    "reply",
    [
        # recipient before the channel
        '<|channel|>analysis<|message|>x<|end|><|start|>assistant to=functions.add<|channel|>commentary <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
        # <|constrain|>json glued to the recipient (no space)
        '<|channel|>commentary to=functions.add<|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
        # <|constrain|> json with a space
        '<|channel|>commentary to=functions.add <|constrain|> json<|message|>{"a":2,"b":3}<|call|>',
        # json glued after the name
        '<|channel|>commentary to=functions.addjson<|message|>{"a":2,"b":3}<|call|>',
        # a stray ? after the channel name
        '<|channel|>commentary? to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
        # missing content type
        '<|channel|>commentary to=functions.add<|message|>{"a":2,"b":3}<|call|>',
        # plain `json` content type and an extra word
        '<|channel|>commentary to=functions.add extra json<|message|>{"a":2,"b":3}<|call|>',
        # doubled channel section
        '<|channel|>commentary<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
    ],
    ids=[
        "recipient-first",
        "constrain-glued",
        "constrain-space",
        "json-glued",
        "channel-question",
        "no-content-type",
        "extra-word",
        "doubled-channel",
    ],
)
def test_tolerated_malformations(reply):
    agent, engine = make_agent([reply, FINAL])
    result = agent.run_sync("2+3")
    (call,) = result.tool_calls
    assert call.ok, call.output
    assert call.name == "functions.add" and call.output == "5"
    # whatever the header looked like, the prompt keeps exactly what was sampled
    sampled = agent.encoding.encode(reply, allowed_special="all")
    assert (
        engine.requests[1][: len(engine.requests[0]) + len(sampled)] == engine.requests[0] + sampled
    )


@pytest.mark.parametrize(
    "reply",
    [
        "<|channel|>final<|message|>The answer is 5.<|end|><|return|>",
        "<|channel|>analysis<|message|>easy<|end|><|start|>assistant<|channel|>final"
        "<|message|>The answer is 5.<|end|><|return|>",
    ],
    ids=["final", "after-analysis"],
)
def test_end_then_return_ends_the_turn(reply):
    # `<|end|><|return|>` (seen from fine-tunes and in vLLM bug reports): the message is
    # complete, the stop ends the turn; no resample, no warning
    agent, engine = make_agent([reply])
    result = agent.run_sync("2+3")
    assert result.final_text == "The answer is 5."
    assert not [e for e in result.events if e.type == "warning"]
    assert len(engine.requests) == 1


def test_invalid_json_then_recovery():
    bad = '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":<|call|>'
    agent, engine = make_agent([bad, CALL_ADD, FINAL])
    result = agent.run_sync("2+3")
    first, second = result.tool_calls
    assert not first.ok and first.error_kind == "invalid_arguments"
    assert "not valid JSON" in first.output
    assert second.ok and result.final_text == "The answer is 5."
    assert "not valid JSON" in agent.encoding.decode(engine.requests[1])


def test_schema_violation_then_recovery():
    bad = '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":"two","c":1}<|call|>'
    agent, _engine = make_agent([bad, CALL_ADD, FINAL])
    result = agent.run_sync("2+3")
    first = result.tool_calls[0]
    assert not first.ok and first.error_kind == "invalid_arguments"
    assert "at a: 'two' is not of type 'integer'" in first.output
    assert "'b' is a required property" in first.output
    assert result.tool_calls[1].ok


def test_unknown_tool_then_recovery():
    bad = '<|channel|>commentary to=functions.multiply <|constrain|>json<|message|>{"a":2}<|call|>'
    agent, engine = make_agent([bad, CALL_ADD, FINAL])
    result = agent.run_sync("2+3")
    first = result.tool_calls[0]
    assert first.name is None and first.error_kind == "unknown_tool"
    assert "functions.add" in first.output  # the error lists what exists
    prompt = agent.encoding.decode(engine.requests[1])
    assert "<|start|>functions.multiply to=assistant<|channel|>commentary<|message|>" in prompt
    assert result.final_text == "The answer is 5."


def test_tool_exception_goes_to_the_model():
    bad = '<|channel|>commentary to=functions.explode <|constrain|>json<|message|>{"reason":"x"}<|call|>'
    agent, _ = make_agent([bad, FINAL])
    result = agent.run_sync("go")
    (call,) = result.tool_calls
    assert not call.ok and call.error_kind == "tool_failed"
    assert "RuntimeError: boom: x" in call.output


def test_tool_timeout_goes_to_the_model():
    bad = (
        '<|channel|>commentary to=functions.slow <|constrain|>json<|message|>{"seconds":30}<|call|>'
    )
    agent, _ = make_agent([bad, FINAL])
    started = time.monotonic()
    result = agent.run_sync("go")
    assert time.monotonic() - started < 10
    (call,) = result.tool_calls
    assert call.error_kind == "timeout" and "timed out after 0.2 s" in call.output


def test_consecutive_tool_errors_end_the_run():
    bad = '<|channel|>commentary to=functions.explode <|constrain|>json<|message|>{"reason":"x"}<|call|>'
    agent, _ = make_agent([bad] * 3, max_tool_errors=3)
    with pytest.raises(ToolErrorBudgetError, match="3 tool calls failed in a row"):
        agent.run_sync("go")


def test_max_turns():
    agent, _ = make_agent([CALL_ADD] * 3, max_turns=3)
    with pytest.raises(MaxTurnsError, match="no final answer after 3 turns"):
        agent.run_sync("loop")


def test_length_truncation_of_the_final_answer():
    agent, _ = make_agent(["<|channel|>final<|message|>This answer is cut"])
    events = []

    async def main():
        async for ev in agent.stream("go"):
            events.append(ev)

    anyio.run(main)
    result_text = next(e for e in events if e.type == "run_finished").final_text
    assert result_text == "This answer is cut"
    assert any(isinstance(e, WarningEvent) and "cut at max_tokens" in e.message for e in events)


def test_length_truncation_mid_tool_call_is_a_typed_error():
    agent, _ = make_agent(
        ['<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":']
    )
    with pytest.raises(OutputTruncatedError, match="a tool call"):
        agent.run_sync("go")


def test_max_tokens_per_turn_is_sent_and_truncates():
    agent, _engine = make_agent(
        ["<|channel|>final<|message|>" + "word " * 50 + "<|return|>"], max_tokens_per_turn=10
    )
    result = agent.run_sync("go")
    assert result.truncated and result.finish_reason == "length"


def test_plain_text_without_header_is_the_answer_with_a_warning():
    agent, _ = make_agent(["Just some text.<|return|>"])
    result = agent.run_sync("go")
    assert result.final_text == "Just some text."
    assert any(
        e.type == "warning" and "without a Harmony header" in e.message for e in result.events
    )


def test_script_exhausted_is_a_clear_error():
    agent, _ = make_agent([CALL_ADD])
    with pytest.raises(ScriptExhaustedError, match="no reply left"):
        agent.run_sync("go")


def test_context_overflow():
    agent, _ = make_agent([FINAL], context_window=50)
    with pytest.raises(ContextOverflowError, match="context window 50"):
        agent.run_sync("go")


def test_prefix_property_over_five_turns():
    replies = [
        '<|channel|>analysis<|message|>Step one.<|end|><|start|>assistant<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":1,"b":1}<|call|>',
        '<|channel|>commentary<|message|>Now the second.<|end|><|start|>assistant<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":2}<|call|>',
        '<|channel|>analysis to=functions.add code<|message|>{"a":3,"b":3}<|call|>',
        '<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{"name":"x"}<|call|>',
        "<|channel|>analysis<|message|>Done.<|end|><|start|>assistant<|channel|>final<|message|>ok<|return|>",
    ]
    agent, engine = make_agent(replies)
    result = agent.run_sync("go")
    assert result.usage.turns == 5 and len(engine.requests) == 5
    enc = agent.encoding
    for i in range(1, 5):
        previous = engine.requests[i - 1]
        sampled = enc.encode(replies[i - 1], allowed_special="all")
        current = engine.requests[i]
        assert current[: len(previous) + len(sampled)] == previous + sampled, f"turn {i}"
        assert current[-2:] == enc.encode("<|start|>assistant", allowed_special="all")
    # the double reports what a prefix cache would: the whole previous prompt is reused
    turn_events = [e for e in result.events if e.type == "turn_finished"]
    assert turn_events[0].cached_prompt_tokens == 0
    for i, ev in enumerate(turn_events[1:], start=1):
        assert ev.cached_prompt_tokens == len(engine.requests[i - 1])
    assert result.token_ids == engine.requests[-1] + enc.encode(replies[-1], allowed_special="all")


def test_events_are_in_order_and_json():
    replies = [
        "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>commentary<|message|>Let me add.<|end|><|start|>assistant"
        '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
        FINAL,
    ]
    agent, _ = make_agent(replies)
    result = agent.run_sync("go")
    types = [e.type for e in result.events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    order = [
        "reasoning_delta",
        "preamble_delta",
        "tool_call_started",
        "turn_finished",
        "tool_call",
        "tool_result",
        "text_delta",
    ]
    assert [types.index(t) for t in order] == sorted(types.index(t) for t in order)
    assert "".join(e.delta for e in result.events if e.type == "reasoning_delta") == "Think."
    assert "".join(e.delta for e in result.events if e.type == "preamble_delta") == "Let me add."
    assert "".join(e.delta for e in result.events if e.type == "text_delta") == "The answer is 5."
    from harmony_agent.events import event_from_dict, event_to_dict, event_to_json

    for e in result.events:
        assert event_from_dict(json.loads(event_to_json(e))) == e
        assert event_to_dict(e)["type"] == e.type
    started = next(e for e in result.events if isinstance(e, ToolCallStarted))
    done = next(e for e in result.events if isinstance(e, ToolResultEvent))
    assert started.call_id == done.call_id


@pytest.mark.anyio
async def test_cancellation_aborts_the_engine_and_leaves_no_task():
    gate = anyio.Event()

    async def reply(request, turn):
        return "<|channel|>final<|message|>" + "tick " * 200 + "<|return|>"

    engine = FunctionEngine(reply, chunk_size=1, delay=0.01)
    agent = Agent(engine=engine)
    seen = []
    with anyio.move_on_after(0.3) as scope:
        async for event in agent.stream("go"):
            seen.append(event)
            if event.type == "text_delta":
                gate.set()
    assert scope.cancelled_caught and gate.is_set()
    assert engine.aborted == 1
    assert not any(e.type == "run_finished" for e in seen)


@pytest.mark.anyio
async def test_stream_closed_early_aborts_the_engine():
    engine = ScriptedEngine(
        ["<|channel|>final<|message|>" + "tick " * 100 + "<|return|>"], chunk_size=1
    )
    agent = Agent(engine=engine)
    from contextlib import aclosing

    async with aclosing(agent.stream("go")) as events:
        async for event in events:
            if event.type == "text_delta":
                break
    assert engine.aborted == 1


def test_multi_turn_history_drops_earlier_analysis():
    agent, engine = make_agent(
        [
            "<|channel|>analysis<|message|>secret thoughts<|end|><|start|>assistant<|channel|>final<|message|>Hi!<|return|>",
            "<|channel|>final<|message|>Again.<|return|>",
        ]
    )
    first = agent.run_sync("hello")
    second = agent.run_sync("and again", history=first)
    assert second.final_text == "Again."
    prompt2 = agent.encoding.decode(engine.requests[1])
    assert "secret thoughts" not in prompt2
    assert (
        "<|start|>assistant<|channel|>final<|message|>Hi!<|end|><|start|>user<|message|>and again"
        in prompt2
    )


def test_sync_tools_run_in_a_worker_thread():
    import threading

    seen = {}

    @tool
    def where() -> str:
        """Which thread runs me."""
        seen["thread"] = threading.current_thread() is threading.main_thread()
        return "ok"

    agent = Agent(
        tools=[where],
        engine=ScriptedEngine(
            [
                "<|channel|>commentary to=functions.where <|constrain|>json<|message|>{}<|call|>",
                FINAL,
            ]
        ),
    )
    assert agent.run_sync("go").tool_calls[0].output == "ok"
    assert seen["thread"] is False


def test_function_aliases_for_builtins_and_bare_names():
    agent, _ = make_agent(
        [
            '<|channel|>commentary to=add <|constrain|>json<|message|>{"a":1,"b":2}<|call|>',
            FINAL,
        ]
    )
    assert agent.run_sync("go").tool_calls[0].name == "functions.add"
