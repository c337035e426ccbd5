"""The context budget: per-turn reports and warnings, compaction (the prefix, the newest turns,
the trace, resume and replay across it, a user policy), the reasoning budget and overflow."""

from __future__ import annotations

import itertools
import json

import anyio
import pytest
from harmony_agent import Agent, Compaction, tool
from harmony_agent._context import filled, forced_final_ids, segments, stub_text
from harmony_agent._encoding import load_encoding
from harmony_agent._tokens import END, MESSAGE
from harmony_agent.engine import FunctionEngine, ScriptedEngine
from harmony_agent.errors import ConfigurationError, ContextOverflowError
from harmony_agent.replay import Replay
from harmony_agent.trace import load_trace

ENC = load_encoding()
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()


@tool
def page(n: int) -> str:
    """Read page n of the report."""
    return f"Page {n}. " + " ".join(f"{WORDS[(n + i) % 10]}{i}" for i in range(120))


def reasoning(turn: int, words: int = 60) -> str:
    return " ".join(WORDS[(turn + i) % 10] for i in range(words))


def policy(pages: int, *, words: int = 60):
    """A model that reasons, reads pages 0..pages-1, then answers with the number of pages."""

    def reply(request, turn):
        if turn < pages:
            return (
                f"<|channel|>analysis<|message|>{reasoning(turn, words)}<|end|>"
                f"<|start|>assistant<|channel|>commentary to=functions.page <|constrain|>json"
                f'<|message|>{{"n":{turn}}}<|call|>'
            )
        return f"<|channel|>final<|message|>read {pages} pages<|return|>"

    return reply


def agent_for(engine, **kw) -> Agent:
    kw.setdefault("context_window", 4000)
    kw.setdefault("max_tokens_per_turn", 400)
    kw.setdefault("max_turns", 100)
    return Agent(
        "Read the report.", tools=[page], engine=engine, conversation_start_date="2026-01-01", **kw
    )


def of(events, kind):
    return [e for e in events if e.type == kind]


def stream(agent, task="Read it all.", **kw):
    events = []

    async def main():
        async for event in agent.stream(task, **kw):
            events.append(event)

    anyio.run(main)
    return events


def lcp(a, b) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# --- budget -----------------------------------------------------------------------------------


def test_every_turn_reports_its_context_and_warns_once_per_threshold():
    engine = FunctionEngine(policy(6))
    events = stream(agent_for(engine, compaction=False, context_window=2600))
    turns = of(events, "turn_finished")
    for turn, prompt in zip(turns, engine.requests, strict=True):
        assert turn.context_window == 2600
        assert turn.context_tokens == len(prompt) + len(turn.output_ids)
    warnings = [e.message for e in of(events, "warning") if e.message.startswith("context")]
    assert len(warnings) == 2
    assert "past the 75% warning" in warnings[0] and "past the 90% warning" in warnings[1]
    assert "compaction is off" in warnings[0]
    crossed = [t.context_tokens / 2600 for t in turns]
    first = next(i for i, f in enumerate(crossed) if f >= 0.75)
    assert of(events, "warning")[0].turn == turns[first].turn


def test_warning_thresholds_are_configurable_and_checked():
    engine = FunctionEngine(policy(3))
    events = stream(agent_for(engine, compaction=False, context_warnings=(0.2,)))
    (warning,) = of(events, "warning")
    fill = of(events, "turn_finished")[warning.turn].context_tokens / 4000
    assert warning.message.startswith(f"context {fill:.0%} full") and fill >= 0.2
    with pytest.raises(ConfigurationError, match="fractions of the window"):
        agent_for(engine, context_warnings=(75,))


# --- compaction --------------------------------------------------------------------------------


def test_compaction_keeps_the_prefix_the_newest_turns_and_appends_after_it():
    engine = FunctionEngine(policy(30))
    agent = agent_for(engine)
    events = stream(agent)
    assert of(events, "run_finished")[0].final_text == "read 30 pages"
    compactions = of(events, "compacted")
    assert 1 <= len(compactions) <= 6
    prompts = engine.requests
    head = agent.first_prompt("Read it all.")
    limit = agent.compaction.limit(4000, 400)
    for n, c in enumerate(compactions):
        after = prompts[c.turn]
        assert c.tokens_before > limit >= c.tokens_after
        assert c.tokens_after <= 0.5 * 4000 + 200  # one large step, down to the target
        assert after[: len(head)] == head  # system, developer and task untouched
        # the newest tool results are verbatim (keep_recent=4 the first time; fewer later,
        # as the stubs add up in this small window); older ones are stubs
        segs = [s for s in segments(ENC, after) if s.is_tool]
        stubbed = ["removed to save context" in ENC.decode(after[s.start : s.end]) for s in segs]
        kept = stubbed[::-1].index(True)
        assert kept == 4 if n == 0 else kept >= 1
        assert all(stubbed[: len(stubbed) - kept])
        # what compaction removed is the old turns' reasoning first
        assert c.dropped_reasoning >= 1 and any(r.startswith("reasoning") for r in c.removed)
        # the turn after the compaction appends to the compacted prompt
        assert lcp(after, prompts[c.turn + 1]) == len(after)
    # between compactions, every prompt extends the one before, token for token
    breaks = {c.turn for c in compactions}
    shared = sum(lcp(a, b) for a, b in itertools.pairwise(prompts))
    assert all(
        lcp(a, b) == len(a)
        for i, (a, b) in enumerate(itertools.pairwise(prompts))
        if i + 1 not in breaks
    )
    assert shared / sum(len(p) for p in prompts[1:]) > 0.7  # a 4k window compacts often
    assert max(len(p) for p in prompts) <= limit
    # the result's messages say what the transcript says: stubs and no old reasoning
    result_messages = agent_for(FunctionEngine(policy(30))).run_sync("Read it all.").messages
    tool_texts = [m.content[0].text for m in result_messages if m.author.role.value == "tool"]
    assert any("removed to save context" in t for t in tool_texts)
    assert all("removed" not in t for t in tool_texts[-4:])


def test_stub_says_what_was_there_and_how_to_get_it_back():
    assert stub_text("browser.open", "[3] Title (example.com)\n**viewing lines", 1043) == (
        "[browser.open result (cursor 3, 1,043 tokens) removed to save context — "
        "open it again if needed]"
    )
    assert "run the code again" in stub_text("python", "out", 70)
    assert "call functions.page again" in stub_text("functions.page", "Page 1.", 70)


def test_compaction_is_on_by_default_only_with_tools_and_can_be_turned_off():
    assert isinstance(agent_for(ScriptedEngine([])).compaction, Compaction)
    assert Agent(engine=ScriptedEngine([])).compaction is None
    assert agent_for(ScriptedEngine([]), compaction=False).compaction is None
    with pytest.raises(ConfigurationError, match="target <= trigger"):
        Compaction(trigger=0.5, target=0.8)
    with pytest.raises(ConfigurationError, match="Compaction policy"):
        agent_for(ScriptedEngine([]), compaction="yes")


def test_without_compaction_the_same_run_overflows_and_says_what_filled_it():
    agent = agent_for(FunctionEngine(policy(30)), compaction=False)
    with pytest.raises(ContextOverflowError, match="compaction off") as info:
        agent.run_sync("Read it all.")
    parts = info.value.filled
    assert max(parts, key=parts.get) == "tool output: functions.page"
    assert "reasoning" in parts and "tool output: functions.page" in str(info.value)


def test_a_prompt_that_cannot_be_compacted_enough_is_an_overflow():
    @tool
    def dump() -> str:
        """Everything at once."""
        return " ".join(f"w{i}" for i in range(3000))

    engine = ScriptedEngine(
        ["<|channel|>commentary to=functions.dump <|constrain|>json<|message|>{}<|call|>"] * 2
    )
    agent = Agent(
        tools=[dump], engine=engine, context_window=3000, conversation_start_date="2026-01-01"
    )
    with pytest.raises(ContextOverflowError, match="compaction found nothing") as info:
        agent.run_sync("dump it")
    assert next(iter(info.value.filled)) == "tool output: functions.dump"


def test_the_trace_records_compaction_and_resume_and_replay_go_across_it(tmp_path):
    path = tmp_path / "run.jsonl"
    agent = agent_for(FunctionEngine(policy(20)))
    result = agent.run_sync("Read it all.", trace=path)
    trace = load_trace(path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    compaction = [r for r in records if r["record"] == "compaction"]
    events = [e for e in trace.events if e.type == "compacted"]
    assert compaction and len(compaction) == len(events)
    assert [r["tokens_after"] for r in compaction] == [e.tokens_after for e in events]
    # resume from a state after the first compaction: truncate the trace after its next step
    lines = path.read_text().splitlines()
    cut = records.index(compaction[0])
    cut = next(i for i in range(cut + 1, len(records)) if records[i]["record"] == "step")
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(lines[: cut + 1]) + "\n")
    state = load_trace(partial).resume_state()
    assert state.prompt_ids[: len(compaction[0]["prompt_ids"])] == compaction[0]["prompt_ids"]
    resumed = agent_for(FunctionEngine(lambda r, t: policy(20)(r, state.next_turn + t)))
    again = anyio.run(lambda: resumed.resume(state))
    assert again.final_text == result.final_text == "read 20 pages"
    assert again.token_ids == result.token_ids  # the same transcript, compactions included
    # replay: the recorded outputs through the same tools compact at the same turns
    replay = Replay(trace)
    outcome = replay.run_sync(agent_for(replay.engine))
    assert outcome.changes == [] and outcome.result.token_ids == result.token_ids
    replayed = [e for e in replay.events if e.type == "compacted"]
    assert [(e.turn, e.tokens_before, e.tokens_after) for e in replayed] == [
        (e.turn, e.tokens_before, e.tokens_after) for e in events
    ]


def test_a_user_policy_summarises_the_old_turns():
    seen = []

    def summarize(messages):
        seen.append(messages)
        pages = [m.content[0].text.split(".")[0] for m in messages if m.author.role.value == "tool"]
        return "Summary so far: read " + ", ".join(pages)

    engine = FunctionEngine(policy(20))
    agent = agent_for(engine, compaction=Compaction(summarize=summarize, keep_recent=2))
    events = stream(agent)
    compactions = of(events, "compacted")
    assert compactions and all(c.summarized for c in compactions)
    assert seen[0] and all(m.author.role.value != "user" for m in seen[0])
    after = ENC.decode(engine.requests[compactions[0].turn])
    assert "<|start|>user<|message|>Summary so far: read Page 0, Page 1" in after
    assert after.count("Page ") >= 2  # the newest turns are kept as they were
    assert of(events, "run_finished")[0].final_text == "read 20 pages"


# --- reasoning budget --------------------------------------------------------------------------

LONG_THOUGHT = "<|channel|>analysis<|message|>" + reasoning(0, 400)  # no end: would run on


def test_the_reasoning_budget_closes_the_analysis_and_the_model_answers(tmp_path):
    engine = ScriptedEngine([LONG_THOUGHT, "The answer is 42.<|return|>"])
    agent = Agent(engine=engine, conversation_start_date="2026-01-01", max_reasoning_tokens=50)
    path = tmp_path / "run.jsonl"
    events = []
    result = anyio.run(lambda: agent.run("Think.", trace=path, on_event=events.append))
    assert result.final_text == "The answer is 42." and not result.truncated
    (forced,) = of(events, "forced_tokens")
    assert forced.reason == "max_reasoning_tokens" and forced.reasoning_tokens >= 50
    assert forced.text == "<|end|><|start|>assistant<|channel|>final<|message|>"
    assert list(forced.token_ids) == forced_final_ids(ENC, [])
    first, second = engine.requests
    cut = of(events, "turn_finished")[0]
    assert 50 <= len(cut.output_ids) < 60 and engine.aborted == 1  # the request was ended
    assert second == first + list(cut.output_ids) + list(forced.token_ids)
    assert [m.channel for m in result.messages[-2:]] == ["analysis", "final"]
    (step,) = load_trace(path).steps
    assert step["forced"] is True and step["appended_ids"] == list(forced.token_ids)


def test_a_run_sets_its_own_reasoning_budget():
    engine = ScriptedEngine([LONG_THOUGHT, "Short.<|return|>"])
    agent = Agent(engine=engine, conversation_start_date="2026-01-01")
    result = agent.run_sync("Think.", max_reasoning_tokens=20)
    assert result.final_text == "Short."
    assert len(engine.requests[1]) - len(engine.requests[0]) < 20 + 3 + 10
    with pytest.raises(ConfigurationError, match="max_reasoning_tokens"):
        agent.run_sync("Think.", max_reasoning_tokens=0)


def test_hitting_max_tokens_per_turn_while_reasoning_ends_in_an_answer():
    engine = ScriptedEngine([LONG_THOUGHT, "Done thinking: 7.<|return|>"])
    agent = Agent(engine=engine, conversation_start_date="2026-01-01", max_tokens_per_turn=40)
    events = []
    result = anyio.run(lambda: agent.run("Think.", on_event=events.append))
    assert result.final_text == "Done thinking: 7."
    (forced,) = of(events, "forced_tokens")
    assert forced.reason == "max_tokens_per_turn"
    assert of(events, "turn_finished")[0].finish_reason == "length"
    cut = engine.requests[1][len(engine.requests[0]) :]
    assert cut[39] != END and cut[-1] == MESSAGE  # the analysis was cut, then closed for it


def test_filled_counts_every_kind_of_message():
    engine = FunctionEngine(policy(2))
    result = agent_for(engine, compaction=False).run_sync("go")
    parts = filled(ENC, result.prompt_ids)
    assert sum(parts.values()) == len(result.prompt_ids)
    assert {"system and developer messages", "user messages", "reasoning"} <= set(parts)
    assert parts["tool output: functions.page"] > parts["tool calls and answers"]


def test_a_run_resumes_after_forced_tokens_and_the_report_shows_them(tmp_path):
    from harmony_agent.report import render_report

    path = tmp_path / "run.jsonl"
    agent = Agent(
        engine=ScriptedEngine([LONG_THOUGHT]),
        conversation_start_date="2026-01-01",
        max_reasoning_tokens=30,
    )
    with pytest.raises(Exception, match="no reply left"):  # the process "dies" after turn 0
        agent.run_sync("Think.", trace=path)
    state = load_trace(path).resume_state()
    assert state.next_turn == 1 and state.prompt_ids[-1] == MESSAGE
    later = Agent(
        engine=ScriptedEngine(["Resumed answer.<|return|>"]), conversation_start_date="2026-01-01"
    )
    result = anyio.run(lambda: later.resume(state, trace=path))
    assert result.final_text == "Resumed answer."
    page = render_report(load_trace(path))
    assert "max_reasoning_tokens reached: the runtime appended" in page and "not sampled" in page


def test_the_report_shows_compactions(tmp_path):
    from harmony_agent.report import render_report

    path = tmp_path / "run.jsonl"
    agent_for(FunctionEngine(policy(12))).run_sync("Read it all.", trace=path)
    assert "context compacted before this turn" in render_report(load_trace(path))


def test_the_compaction_docstring_example_runs():
    import inspect
    import textwrap

    doc = inspect.getdoc(Compaction) or ""
    example = textwrap.dedent(doc.split("Example::", 1)[1])
    assert "Compaction(" in example
    exec(compile(example, "Compaction.__doc__", "exec"), {})
