"""ScriptedEngine and ReplayEngine: whole requests recorded, unused replies reported,
assistant-prefixed replies handled, replay from plain token lists; the engine modules'
docstring examples run."""

from __future__ import annotations

import importlib
import inspect
import textwrap

import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent._tokens import START
from harmony_agent.engine import GenerationRequest, ReplayEngine, ScriptedEngine
from harmony_agent.errors import ConfigurationError, ScriptExhaustedError

ENC = load_encoding()
FINAL = "<|channel|>final<|message|>5<|return|>"
CALL = '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>'


@tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


def test_whole_requests_are_recorded():
    engine = ScriptedEngine([CALL, FINAL])
    agent = Agent(tools=[add], engine=engine, max_tokens_per_turn=500, temperature=0.25, seed=3)
    result = agent.run_sync("2+3")
    assert result.final_text == "5"
    first, second = engine.generation_requests
    assert isinstance(first, GenerationRequest)
    assert (first.max_tokens, first.temperature, first.seed) == (500, 0.25, 3)
    assert set(first.stop_token_ids) == {200002, 200012}
    assert first.session_id == second.session_id and first.request_id != second.request_id
    assert list(second.prompt_ids) == engine.requests[1]  # prompt ids are still kept alone
    engine.assert_all_used()


def test_unused_replies_are_reported():
    engine = ScriptedEngine([FINAL, CALL, "<|channel|>final<|message|>never<|return|>"])
    Agent(engine=engine).run_sync("hi")
    with pytest.raises(AssertionError, match=r"2 of 3 scripted replies were never used") as e:
        engine.assert_all_used()
    assert "functions.add" in str(e.value) and "1 requests came" in str(e.value)


@pytest.mark.parametrize(
    "reply",
    [
        "<|start|>assistant<|channel|>final<|message|>5<|return|>",
        ENC.encode(
            "<|start|>assistant<|channel|>final<|message|>5<|return|>", allowed_special="all"
        ),
    ],
)
def test_a_reply_starting_with_the_assistant_header_is_stripped(reply):
    engine = ScriptedEngine([reply])
    result = Agent(engine=engine).run_sync("hi")
    assert result.final_text == "5"
    # the transcript holds one <|start|>assistant: the prompt's, not a second one
    assert result.token_ids[len(engine.requests[0]) :][0] != START


def test_a_reply_starting_another_message_is_explained():
    with pytest.raises(ConfigurationError, match=r"starts another message: '<\|start\|>user"):
        ScriptedEngine(["<|start|>user<|message|>hi<|end|>"])
    engine = ScriptedEngine([[START, *ENC.encode("user")]])
    with pytest.raises(ConfigurationError, match="not the assistant's"):
        Agent(engine=engine).run_sync("hi")


def test_token_id_replies_are_checked():
    engine = ScriptedEngine([[200005, 1.5]])
    with pytest.raises(ConfigurationError, match=r"token id 1\.5"):
        Agent(engine=engine).run_sync("hi")


def test_replay_from_plain_token_lists():
    original_engine = ScriptedEngine([CALL, FINAL])
    original = Agent(tools=[add], engine=original_engine).run_sync("2+3")
    sampled = [ENC.encode(r, allowed_special="all") for r in (CALL, FINAL)]
    replay = ReplayEngine(sampled, source="a test recording")
    again = Agent(tools=[add], engine=replay).run_sync("2+3")
    assert again.token_ids == original.token_ids
    replay.assert_all_used()
    short = ReplayEngine(sampled[:1], source="a test recording")
    with pytest.raises(ScriptExhaustedError, match="a test recording recorded 1 model turns"):
        Agent(tools=[add], engine=short).run_sync("2+3")


def test_replay_takes_anything_with_turn_outputs_but_not_a_path(tmp_path):
    class Recording:
        path = "rec.jsonl"

        @property
        def turn_outputs(self):
            return [ENC.encode(FINAL, allowed_special="all")]

    engine = ReplayEngine(Recording())
    assert engine.source == "the trace rec.jsonl" and engine.remaining == 1
    with pytest.raises(ConfigurationError, match="load_trace"):
        ReplayEngine(tmp_path / "run.jsonl")
    with pytest.raises(ConfigurationError, match="token-id lists"):
        ReplayEngine(["not ids"])


def test_engine_imports_nothing_of_the_agent_but_errors_and_tokens():
    import ast
    from pathlib import Path

    import harmony_agent.engine as package

    allowed = {"harmony_agent.errors", "harmony_agent._tokens", "harmony_agent._encoding"}
    for file in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                name = node.module
            elif isinstance(node, ast.Import):
                name = node.names[0].name
            else:
                continue
            if name.startswith("harmony_agent") and not name.startswith("harmony_agent.engine"):
                assert name in allowed, f"{file.name} imports {name}"


@pytest.mark.parametrize(
    "module",
    [
        "harmony_agent.engine._sse",
        "harmony_agent.engine._spec",
        "harmony_agent.engine.replay",
        "harmony_agent.engine.testing",
    ],
)
def test_docstring_examples_run(module):
    doc = inspect.getdoc(importlib.import_module(module)) or ""
    code = textwrap.dedent(_example(doc)).strip()
    assert "import" in code, f"{module} has no runnable example"
    exec(compile(code, f"<{module} example>", "exec"), {"__name__": "__example__"})


def _example(doc: str) -> str:
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("::"))
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith(" "):
            break
        body.append(line)
    return "\n".join(body)
