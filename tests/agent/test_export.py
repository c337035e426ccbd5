"""Recorded runs → training data → read back, checked token for token against the trace:
``tokens`` (ids, loss mask, logprobs over HTTP, turn boundaries) and ``chat`` (round trip
through Harmony), plus the CLI and the runs that cannot be exported."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import httpx
import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import OpenAICompatibleEngine, ScriptedEngine
from harmony_agent.export import chat_to_harmony, export, run_messages, tokens_record
from harmony_agent.trace import load_trace
from openai_harmony import Conversation, RenderConversationConfig

pytestmark = pytest.mark.anyio
ENC = load_encoding()
REPLIES = [
    "<|channel|>analysis<|message|>Need the sum.<|end|><|start|>assistant"
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
    "<|channel|>analysis<|message|>It is 5.<|end|><|start|>assistant"
    "<|channel|>final<|message|>The sum is 5.<|return|>",
]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def recorded_run(tmp_path, engine, name="run.jsonl"):
    path = tmp_path / name
    agent = Agent("Answer with the tools.", tools=[add], engine=engine, reasoning_effort="low")
    result = await agent.run("What is 2+3?", trace=path)
    return path, result


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_tokens_export_matches_the_trace_token_for_token(tmp_path):
    trace_path, result = await recorded_run(tmp_path, ScriptedEngine(REPLIES))
    out = tmp_path / "tokens.jsonl"
    report = export([trace_path], "tokens", out)
    assert (report.written, report.left_out) == (1, [])
    (row,) = read_lines(out)
    trace = load_trace(trace_path)
    # the whole sequence is exactly what the model saw and sampled
    assert (
        row["prompt_ids"]
        == trace.header["prompt_ids"]
        == result.prompt_ids[: len(row["prompt_ids"])]
    )
    assert row["prompt_ids"] + row["response_ids"] == result.token_ids
    assert row["response_mask"] == row["loss_mask"] and len(row["loss_mask"]) == len(
        row["response_ids"]
    )
    # per turn: sampled ids under mask 1, the appended tool message under mask 0
    step = trace.steps[0]
    sampled0, appended, sampled1 = row["turns"]
    assert (sampled0["kind"], appended["kind"], sampled1["kind"]) == (
        "sampled",
        "appended",
        "sampled",
    )
    ids, mask = row["response_ids"], row["loss_mask"]
    assert (
        ids[sampled0["start"] : sampled0["end"]]
        == step["output_ids"]
        == ENC.encode(REPLIES[0], allowed_special="all")
    )
    assert ids[appended["start"] : appended["end"]] == step["appended_ids"]
    assert ids[sampled1["start"] : sampled1["end"]] == trace.turn_outputs[-1]
    assert set(mask[sampled0["start"] : sampled0["end"]]) == {1}
    assert set(mask[appended["start"] : appended["end"]]) == {0}
    assert set(mask[sampled1["start"] : sampled1["end"]]) == {1}
    assert sum(mask) == sum(len(o) for o in trace.turn_outputs)
    assert ENC.decode(ids[appended["start"] : appended["end"]]).startswith("<|start|>functions.add")
    assert (row["stop_reason"], row["num_turns"], row["final_text"]) == ("stop", 4, "The sum is 5.")
    assert row["response_logprobs"] is None  # the scripted engine returns none


def sse_with_logprobs(replies):
    """An httpx transport answering like vLLM with ``logprobs``: each id with a logprob."""
    answers = [ENC.encode(r, allowed_special="all") for r in replies]
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        ids = answers[len(seen) - 1]
        events = []
        for i, token in enumerate(ids):
            last = i == len(ids) - 1
            choice = {
                "token_ids": [token],
                "logprobs": {"token_logprobs": [-(token % 97) / 10]},
                "finish_reason": "stop" if last else None,
                "stop_reason": token if last else None,
            }
            events.append(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=b"".join(events)
        )

    return httpx.MockTransport(handler), seen


async def test_logprobs_asked_for_over_http_reach_the_trace_and_the_export(tmp_path):
    transport, seen = sse_with_logprobs(REPLIES)
    engine = OpenAICompatibleEngine(
        "http://127.0.0.1:9/v1", model="m", context_window=4096, transport=transport, logprobs=True
    )
    async with engine:
        trace_path, result = await recorded_run(tmp_path, engine)
    assert all(body["logprobs"] == 0 for body in seen)  # the opt-in reached the server
    turns = [e for e in load_trace(trace_path).events if e.type == "turn_finished"]
    assert [len(t.output_logprobs) for t in turns] == [len(t.output_ids) for t in turns]

    out = tmp_path / "tokens.jsonl"
    export([trace_path], "tokens", out)
    (row,) = read_lines(out)
    assert row["prompt_ids"] + row["response_ids"] == result.token_ids
    for token, flag, lp in zip(
        row["response_ids"], row["loss_mask"], row["response_logprobs"], strict=True
    ):
        expected = -(token % 97) / 10 if flag else 0.0
        assert math.isclose(lp, expected), (token, flag, lp)
    assert row["rollout_logprobs"] == row["response_logprobs"]


async def test_chat_export_round_trips_through_harmony(tmp_path):
    trace_path, _ = await recorded_run(tmp_path, ScriptedEngine(REPLIES))
    out = tmp_path / "chat.jsonl"
    report = export([trace_path], "chat", out)
    assert (report.written, report.left_out) == (1, [])
    (row,) = read_lines(out)
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    system, user, call, tool_msg, answer = row["messages"]
    assert system["content"] == "Answer with the tools." and user["content"] == "What is 2+3?"
    assert call["reasoning_content"] == "Need the sum." and call["content"] is None
    assert call["tool_calls"] == [
        {
            "id": "call_0",
            "type": "function",
            "function": {"name": "add", "arguments": '{"a":2,"b":3}'},
        }
    ]
    assert tool_msg == {"role": "tool", "tool_call_id": "call_0", "name": "add", "content": "5"}
    assert answer == {
        "role": "assistant",
        "content": "The sum is 5.",
        "reasoning_content": "It is 5.",
    }
    assert row["tools"][0]["function"]["name"] == "add" and row["reasoning_effort"] == "low"

    # read back: chat → Harmony gives the run's messages, which render the same tokens. (The
    # chat form cannot keep the model's own header order — it wrote the channel before
    # `to=` — nor <|return|>: token-exact training data is the tokens format.)
    trace = load_trace(trace_path)
    messages = run_messages(trace)
    back = chat_to_harmony(row)
    assert [m.to_dict() for m in back] == [m.to_dict() for m in messages[2:]]
    config = RenderConversationConfig(auto_drop_analysis=False)
    rendered = ENC.render_conversation(Conversation.from_messages([*messages[:2], *back]), config)
    assert rendered == ENC.render_conversation(Conversation.from_messages(messages), config)
    first = trace.header["prompt_ids"]  # ... <|start|>user ... <|end|><|start|>assistant
    assert rendered[: len(first) - 2] == first[:-2]


async def test_unfinished_and_broken_traces_are_left_out_with_the_reason(tmp_path):
    done, _ = await recorded_run(tmp_path, ScriptedEngine(REPLIES))
    lines = done.read_text().splitlines()
    cut = tmp_path / "cut.jsonl"  # the run stopped after its tool step
    cut.write_text(
        "\n".join(x for x in lines if '"run_finished"' not in x and '"turn": 1' not in x) + "\n"
    )
    bogus = tmp_path / "bogus.jsonl"
    bogus.write_text('{"hello": 1}\n')
    out = tmp_path / "tokens.jsonl"
    report = export([done, cut, bogus], "tokens", out)
    assert report.written == 1 and len(read_lines(out)) == 1
    assert "no final answer" in report.left_out[0] and "is not a trace record" in report.left_out[1]
    partial = tokens_record(load_trace(cut), include_unfinished=True)
    assert partial["stop_reason"] == "unfinished" and [t["kind"] for t in partial["turns"]] == [
        "sampled",
        "appended",
    ]


async def test_export_cli(tmp_path):
    trace_path, _ = await recorded_run(tmp_path, ScriptedEngine(REPLIES))
    proc = subprocess.run(
        [sys.executable, "-m", "harmony_agent", "export", str(trace_path), "missing.jsonl",
         "--format", "chat", "-o", "chat.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1  # one trace left out
    assert "left out: trace missing.jsonl does not exist" in proc.stderr
    assert "1 runs -> chat.jsonl (1 left out)" in proc.stderr
    assert read_lines(tmp_path / "chat.jsonl")[0]["messages"][1]["content"] == "What is 2+3?"
