"""Replay in the library: the recorded model outputs through the current tools, compared."""

from __future__ import annotations

import json

import anyio
import pytest
from harmony_agent import Agent, tool
from harmony_agent.engine import ScriptedEngine
from harmony_agent.errors import ConfigurationError
from harmony_agent.events import ToolResultEvent
from harmony_agent.replay import OutputChange, Replay, compare_tool_results
from harmony_agent.trace import load_trace

REPLIES = [
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":1,"b":2}<|call|>',
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":3,"b":4}<|call|>',
    "<|channel|>final<|message|>3 and 7.<|return|>",
]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(name="add")
def add_off_by_one(a: int, b: int) -> int:
    """Add two integers (wrongly, for a's above 2)."""
    return a + b + (1 if a > 2 else 0)


def record(tmp_path):
    path = tmp_path / "run.jsonl"
    agent = Agent(tools=[add], engine=ScriptedEngine(REPLIES), conversation_start_date="2026-01-01")
    agent.run_sync("sums", trace=path)
    return path


def test_an_unchanged_tool_replays_with_no_changes(tmp_path):
    replay = Replay(record(tmp_path))
    outcome = replay.run_sync(Agent(tools=[add], engine=replay.engine))
    assert outcome.result is not None and outcome.result.final_text == "3 and 7."
    assert [e.output for e in outcome.replayed] == ["3", "7"]
    assert outcome.changes == []
    assert outcome.result.run_id == replay.trace.run_id + "-replay"


def test_a_changed_tool_output_is_reported(tmp_path):
    replay = Replay(load_trace(record(tmp_path)))
    seen = []
    outcome = anyio.run(
        lambda: replay.run(
            Agent(tools=[add_off_by_one], engine=replay.engine), on_event=seen.append
        )
    )
    assert outcome.changes == [OutputChange(1, "functions.add", "7", "8")]
    assert [e.type for e in seen][-1] == "run_finished"
    assert seen == replay.events


def test_the_agent_must_play_back_the_trace(tmp_path):
    replay = Replay(record(tmp_path))
    other = Agent(tools=[add], engine=ScriptedEngine(REPLIES))
    with pytest.raises(ConfigurationError, match=r"engine=replay\.engine"):
        replay.run_sync(other)


def result_event(call_id, output):
    return ToolResultEvent(
        run_id="r", turn=0, call_id=call_id, recipient="functions.f", ok=True, output=output
    )


def test_compare_matches_calls_in_order_and_ignores_extra_ones():
    recorded = [result_event("a", "1"), result_event("b", "2")]
    replayed = [result_event("x", "1"), result_event("y", "two"), result_event("z", "3")]
    assert compare_tool_results(recorded, replayed) == [OutputChange(1, "functions.f", "2", "two")]
    assert compare_tool_results(recorded, recorded[:1]) == []


def test_initial_state_is_the_recorded_first_prompt(tmp_path):
    trace = load_trace(record(tmp_path))
    state = trace.initial_state(run_id="again")
    header = json.loads((tmp_path / "run.jsonl").read_text().splitlines()[0])
    assert (state.run_id, state.task, state.next_turn) == ("again", "sums", 0)
    assert state.prompt_ids == header["prompt_ids"]
    assert [m.to_dict() for m in state.messages] == header["messages"]
