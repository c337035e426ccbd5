"""Traces: written as the run goes, loaded back, resumed after a crash, replayed."""

from __future__ import annotations

import json

import anyio
import pytest
from harmony_agent import Agent, tool
from harmony_agent.engine import ReplayEngine, ScriptedEngine
from harmony_agent.errors import ScriptExhaustedError
from harmony_agent.trace import TraceError, load_trace

REPLIES = [
    '<|channel|>analysis<|message|>Add first.<|end|><|start|>assistant<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":1,"b":2}<|call|>',
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":3,"b":4}<|call|>',
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":10,"b":20}<|call|>',
    "<|channel|>final<|message|>3, 7 and 30.<|return|>",
]
calls: list[tuple[int, int]] = []


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    calls.append((a, b))
    return a + b


def agent_with(replies):
    return Agent(tools=[add], engine=ScriptedEngine(replies), conversation_start_date="2026-01-01")


def test_trace_records_every_event_and_step(tmp_path):
    path = tmp_path / "run.jsonl"
    result = agent_with(REPLIES).run_sync("sums", trace=path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["record"] == "header" and lines[0]["version"] == 1
    assert [r["record"] for r in lines].count("step") == 3
    trace = load_trace(path)
    assert [e.type for e in trace.events] == [e.type for e in result.events]
    assert trace.finished and trace.task == "sums"
    assert len(trace.turn_outputs) == 4
    assert trace.turn_outputs[0][-1] == 200012 and trace.turn_outputs[-1][-1] == 200002


def test_resume_after_a_crash_continues_from_the_last_complete_step(tmp_path):
    path = tmp_path / "run.jsonl"
    uninterrupted = agent_with(REPLIES)
    full = uninterrupted.run_sync("sums")
    # The first attempt dies after two tool steps (the engine goes away).
    crashed = agent_with(REPLIES[:2])
    with pytest.raises(ScriptExhaustedError):
        crashed.run_sync("sums", trace=path)
    trace = load_trace(path)
    assert not trace.finished and len(trace.steps) == 2
    state = trace.resume_state()
    assert state.next_turn == 2 and [c.output for c in state.tool_calls] == ["3", "7"]
    calls.clear()
    engine = ScriptedEngine(REPLIES[2:])
    resumed = anyio.run(lambda: Agent(tools=[add], engine=engine).resume(state, trace=path))
    assert resumed.final_text == "3, 7 and 30."
    assert calls == [(10, 20)]  # completed steps are not run again
    assert [c.output for c in resumed.tool_calls] == ["3", "7", "30"]
    # the resumed run sends exactly the prompt the uninterrupted run sent
    assert engine.requests[0] == uninterrupted.engine.requests[2]
    assert resumed.token_ids == full.token_ids
    again = load_trace(path)
    assert again.finished and again.resumed == 1


def test_replay_reruns_the_tools_deterministically(tmp_path):
    path = tmp_path / "run.jsonl"
    original = agent_with(REPLIES).run_sync("sums", trace=path)
    calls.clear()
    replay = Agent(
        tools=[add], engine=ReplayEngine(load_trace(path)), conversation_start_date="2026-01-01"
    )
    result = replay.run_sync("sums")
    assert calls == [(1, 2), (3, 4), (10, 20)]
    assert result.final_text == original.final_text
    assert result.token_ids == original.token_ids


def test_a_half_written_last_line_is_ignored(tmp_path):
    path = tmp_path / "run.jsonl"
    with pytest.raises(ScriptExhaustedError):
        agent_with(REPLIES[:2]).run_sync("sums", trace=path)
    with path.open("a") as f:
        f.write('{"record": "event", "ev')
    trace = load_trace(path)
    assert trace.truncated_tail and len(trace.steps) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ('{"hello": 1}\n{"record": "x"}\n', "not a trace record"),
        ('{"record": "header", "format": "something-else"}\n', "not a harmony-agent trace"),
        (
            '{"record": "header", "format": "harmony-agent-trace", "version": 99, "run_id": "x", "task": "t"}\n',
            "format version 99",
        ),
        (
            '{"record": "header", "format": "harmony-agent-trace", "version": 1}\nnot json\n{}\n',
            "line 2 is not JSON",
        ),
    ],
)
def test_bad_traces_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "t.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TraceError, match=message):
        load_trace(path)


def test_resuming_a_finished_run_is_refused(tmp_path):
    path = tmp_path / "run.jsonl"
    agent_with(REPLIES).run_sync("sums", trace=path)
    with pytest.raises(TraceError, match="already finished"):
        load_trace(path).resume_state()


def test_a_reused_trace_path_is_refused_unless_overwritten(tmp_path):
    from harmony_agent.trace import TraceWriter

    path = tmp_path / "run.jsonl"
    agent_with(REPLIES).run_sync("first", trace=path)
    before = path.read_text()
    with pytest.raises(TraceError, match=r"already holds run .*another file, or overwrite"):
        agent_with(REPLIES).run_sync("second", trace=path)
    assert path.read_text() == before  # nothing appended: the file still loads
    assert load_trace(path).task == "first"
    agent_with(REPLIES).run_sync("second", trace=TraceWriter(path, overwrite=True))
    trace = load_trace(path)
    assert trace.task == "second" and trace.finished
    assert [json.loads(line)["record"] for line in path.read_text().splitlines()].count(
        "header"
    ) == 1


def test_resume_from_before_the_first_step_appends_to_the_same_trace(tmp_path):
    # the run died in its first turn: the resumed run (same run id) continues the file
    path = tmp_path / "run.jsonl"
    with pytest.raises(ScriptExhaustedError):
        agent_with([]).run_sync("sums", trace=path)
    state = load_trace(path).resume_state()
    assert state.next_turn == 0
    anyio.run(lambda: agent_with(REPLIES).resume(state, trace=path))
    trace = load_trace(path)
    assert trace.finished and trace.resumed == 1


def test_lone_surrogates_and_deep_values_are_written_and_read_back(tmp_path):
    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    deep: list = []
    for _ in range(5000):
        deep = [deep]
    replies = [
        '<|channel|>commentary to=functions.echo <|constrain|>json<|message|>{"text":"\\ud83d"}<|call|>',
        "<|channel|>final<|message|>ok<|return|>",
    ]
    path = tmp_path / "run.jsonl"
    agent = Agent(tools=[echo], engine=ScriptedEngine(replies))
    result = agent.run_sync("t", trace=path)
    assert result.tool_calls[0].ok
    trace = load_trace(path)
    (call,) = [e for e in trace.events if e.type == "tool_call"]
    assert call.raw_arguments == '{"text":"\\ud83d"}'
    assert call.arguments == {"text": "\ufffd"}  # parsed: the lone surrogate replaced

    from harmony_agent.trace import MAX_DEPTH, _dump

    line = _dump({"record": "event", "text": "a\ud83db", "deep": deep})
    line.encode("utf-8")  # strict: no surrogate left
    back = json.loads(line)
    assert back["text"] == "a\ud83db"
    depth, node = 0, back["deep"]
    while isinstance(node, list):
        node, depth = node[0], depth + 1
    assert depth == MAX_DEPTH - 1 and "nested deeper" in node


def test_turn_numbers_agree_in_events_report_and_messages(tmp_path):
    from harmony_agent.errors import OutputTruncatedError
    from harmony_agent.report import render_report

    path = tmp_path / "run.jsonl"
    # no stop token: cut by max_tokens in a tool call (cut reasoning is recovered instead)
    cut = '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":'
    with pytest.raises(OutputTruncatedError, match=r"^turn 1 hit") as info:
        agent_with([REPLIES[1], cut]).run_sync("sums", trace=path)
    trace = load_trace(path)
    assert [e.turn for e in trace.events if e.type == "turn_finished"] == [0, 1]
    (call,) = [e for e in trace.events if e.type == "tool_call"]
    (error,) = [e for e in trace.events if e.type == "error"]
    assert call.turn == 0 and error.turn == 1 and str(info.value) == error.message
    assert trace.steps[0]["turn"] == 0 and trace.steps[0]["tool_call"]["turn"] == 0
    assert trace.resume_state().next_turn == 1
    page = render_report(trace)
    assert "<h2>Turn 0<span>" in page and "<h2>Turn 1<span>" in page and "Turn 2" not in page
