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
    recorded_id = replay.recorded[1].call_id
    assert outcome.changes == [
        OutputChange(1, "functions.add", "7", "8", call_id=recorded_id, turn=1)
    ]
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
    assert compare_tool_results(recorded, replayed) == [
        OutputChange(1, "functions.f", "2", "two", call_id="b", turn=0)
    ]
    assert compare_tool_results(recorded, recorded[:1]) == []


def test_initial_state_is_the_recorded_first_prompt(tmp_path):
    trace = load_trace(record(tmp_path))
    state = trace.initial_state(run_id="again")
    header = json.loads((tmp_path / "run.jsonl").read_text().splitlines()[0])
    assert (state.run_id, state.task, state.next_turn) == ("again", "sums", 0)
    assert state.prompt_ids == header["prompt_ids"]
    assert [m.to_dict() for m in state.messages] == header["messages"]


def test_a_change_says_which_call_and_shows_a_unified_diff(tmp_path):
    replay = Replay(record(tmp_path))
    outcome = replay.run_sync(Agent(tools=[add_off_by_one], engine=replay.engine))
    (change,) = outcome.changes
    call_id = replay.recorded[1].call_id
    assert change.diff().splitlines() == [
        f"--- recorded call 1 (functions.add, turn 1, id {call_id})",
        "+++ replayed",
        "@@ -1 +1 @@",
        "-7",
        "+8",
    ]
    summary = json.loads(json.dumps(outcome.to_dict()))
    assert summary["type"] == "replay_summary" and summary["finished"] is True
    assert (summary["recorded_calls"], summary["replayed_calls"], summary["changed"]) == (2, 2, 1)
    assert summary["changes"][0] == {
        "index": 1,
        "call_id": call_id,
        "turn": 1,
        "recipient": "functions.add",
        "recorded": "7",
        "replayed": "8",
        "ok": True,
        "replayed_ok": True,
        "diff": change.diff(),
    }


def test_a_diff_is_trimmed_to_its_lines_and_width():
    old = "\n".join(f"line {i}" for i in range(200))
    new = "\n".join(f"line {i}" if i % 2 else f"LINE {i}" for i in range(200))
    diff = OutputChange(0, "functions.f", old, new).diff(max_lines=12)
    lines = diff.splitlines()
    assert len(lines) == 13 and lines[-1].startswith("… (") and "more diff lines" in lines[-1]
    # one long line (JSON): the window shows where it first differs, not its start
    before = '{"rows": [' + ", ".join(str(i) for i in range(3000)) + "]}"
    after = before.replace("2500", "two thousand five hundred")
    minus, plus = OutputChange(0, "functions.f", before, after).diff(width=120).splitlines()[3:]
    assert minus.startswith("-…") and "2500" in minus and len(minus) < 160
    assert plus.startswith("+…") and "two thousand five hundred" in plus
    assert minus.endswith(f"… ({len(before)} chars)")


def test_a_status_change_with_the_same_text_is_a_change():
    recorded = [result_event("a", "no such file")]
    failed = ToolResultEvent(
        run_id="r", turn=0, call_id="x", recipient="functions.f", ok=False, output="no such file"
    )
    (change,) = compare_tool_results(recorded, [failed])
    assert (change.ok, change.replayed_ok) == (True, False)
    assert "ok True -> False" in change.diff()
