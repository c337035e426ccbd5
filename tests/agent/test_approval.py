"""Approval: a call that needs it pauses the run before the tool runs; the paused state goes
through JSON to a fresh agent, which resumes by appending to the call's sampled ids."""

from __future__ import annotations

import json

import anyio
import anyio.lowlevel
import pytest
from harmony_agent import Agent, RunState, tool
from harmony_agent._tokens import CALL
from harmony_agent.engine import ScriptedEngine
from harmony_agent.errors import HookError, RunStateError
from harmony_agent.trace import load_trace

DATE = "2026-01-01"
CALL_PAY = (
    "<|channel|>analysis<|message|>Pay it.<|end|><|start|>assistant"
    '<|channel|>commentary to=functions.pay <|constrain|>json<|message|>{"amount":5,"to":"Ada"}<|call|>'
)
DONE = "<|channel|>final<|message|>Paid Ada 5.<|return|>"
ADAPT = "<|channel|>final<|message|>I did not pay.<|return|>"

ran: list[dict] = []


@tool(needs_approval=True)
def pay(amount: int, to: str) -> str:
    """Send money."""
    ran.append({"amount": amount, "to": to})
    return f"sent {amount} to {to}"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture(autouse=True)
def _clear():
    ran.clear()


def agent_with(replies, **kwargs) -> tuple[Agent, ScriptedEngine]:
    engine = ScriptedEngine(replies)
    kwargs.setdefault("tools", [pay, add])
    agent = Agent("Be careful with money.", engine=engine, conversation_start_date=DATE, **kwargs)
    return agent, engine


def resume(agent: Agent, state: RunState, **kwargs):
    return anyio.run(lambda: agent.resume(state, **kwargs))


def test_a_call_that_needs_approval_pauses_before_the_tool_runs():
    agent, engine = agent_with([CALL_PAY])
    paused = agent.run_sync("pay Ada 5")
    assert paused.status == "paused" and ran == []
    (pending,) = paused.interruptions
    assert pending.tool == "functions.pay" and pending.recipient == "functions.pay"
    assert pending.arguments == {"amount": 5, "to": "Ada"}
    assert pending.raw_arguments == '{"amount":5,"to":"Ada"}'
    assert paused.state.pending == [pending]
    types = [e.type for e in paused.events]
    assert types[-3:] == ["tool_call", "approval_requested", "run_paused"]
    # the call's sampled ids, <|call|> included, end the state's prompt: kept, not re-sampled
    sampled = next(e for e in paused.events if e.type == "turn_finished").output_ids
    assert paused.state.prompt_ids == [*engine.requests[0], *sampled]
    assert paused.state.prompt_ids[-1] == CALL


def test_pause_to_json_to_a_fresh_agent_approve_extends_the_prompt_token_for_token():
    agent, _ = agent_with([CALL_PAY])
    paused = agent.run_sync("pay Ada 5")
    text = paused.state.to_json()
    json.loads(text)  # plain JSON: it can be kept anywhere

    fresh, engine = agent_with([DONE])  # as another process would: a new agent, a new engine
    state = RunState.from_json(text)
    assert state == paused.state
    result = resume(fresh, state, approve={state.pending[0].call_id: True})
    assert result.status == "finished" and result.final_text == "Paid Ada 5."
    assert ran == [{"amount": 5, "to": "Ada"}]
    assert result.tool_calls[0].output == "sent 5 to Ada" and result.tool_calls[0].ok
    # the prefix property across the pause: the resumed prompt extends the paused one
    (prompt,) = engine.requests
    assert prompt[: len(state.prompt_ids)] == state.prompt_ids
    # ... and is exactly the prompt an uninterrupted run sends
    straight, straight_engine = agent_with([CALL_PAY, DONE], needs_approval=False)
    straight.run_sync("pay Ada 5", approver=lambda ctx, call: True)
    assert straight_engine.requests[1] == prompt
    assert result.usage.turns == 2  # the paused turn is counted once, not sampled again


def test_reject_with_a_reason_tells_the_model_and_runs_nothing():
    agent, _ = agent_with([CALL_PAY])
    paused = agent.run_sync("pay Ada 5")
    fresh, engine = agent_with([ADAPT])
    call_id = paused.interruptions[0].call_id
    result = resume(
        fresh, RunState.from_json(paused.state.to_json()), approve={call_id: "too much"}
    )
    assert ran == [] and result.final_text == "I did not pay."
    record = result.tool_calls[0]
    assert not record.ok and record.error_kind == "rejected"
    assert "The user declined this tool call" in record.output and "too much" in record.output
    tool_text = fresh.encoding.decode(engine.requests[0][len(paused.state.prompt_ids) :])
    assert "declined" in tool_text and "too much" in tool_text  # what the model reads


def test_reject_without_a_reason():
    agent, _ = agent_with([CALL_PAY])
    paused = agent.run_sync("pay Ada 5")
    fresh, _ = agent_with([ADAPT])
    result = resume(fresh, paused.state, approve={paused.interruptions[0].call_id: False})
    assert ran == [] and result.tool_calls[0].error_kind == "rejected"
    assert "Reason" not in result.tool_calls[0].output


def test_an_approval_callable_decides_per_call():
    seen = []

    def big(ctx, call):
        seen.append((ctx.run_id, call.arguments))
        return call.arguments["amount"] > 100

    @tool(needs_approval=big)
    def transfer(amount: int) -> str:
        """Transfer money."""
        return f"moved {amount}"

    small = '<|channel|>commentary to=functions.transfer <|constrain|>json<|message|>{"amount":5}<|call|>'
    large = small.replace('"amount":5', '"amount":500')
    agent, _ = agent_with([small, large], tools=[transfer])
    paused = agent.run_sync("move money")
    assert paused.status == "paused"
    assert [c.output for c in paused.tool_calls] == ["moved 5"]  # the small one ran
    assert paused.interruptions[0].arguments == {"amount": 500}
    assert [a for _, a in seen] == [{"amount": 5}, {"amount": 500}]
    assert seen[0][0] == paused.run_id


@pytest.mark.anyio
async def test_an_async_approval_callable_and_the_agent_wide_policy():
    async def only_add(ctx, call):
        await anyio.lowlevel.checkpoint()
        return call.tool == "functions.add"

    add_call = (
        '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":1,"b":2}<|call|>'
    )
    agent, _ = agent_with([add_call], needs_approval=only_add)
    paused = await agent.run("1+2")
    assert paused.status == "paused" and paused.interruptions[0].tool == "functions.add"


@pytest.mark.anyio
async def test_an_approver_decides_inline_and_its_wait_is_not_the_tools_timeout():
    @tool(needs_approval=True, timeout=0.05)
    def quick() -> str:
        """Answers at once."""
        return "done"

    async def slow_human(ctx, call):
        await anyio.sleep(0.3)  # six times the tool's timeout
        return True

    call = "<|channel|>commentary to=functions.quick <|constrain|>json<|message|>{}<|call|>"
    agent, _ = agent_with([call, DONE], tools=[quick])
    result = await agent.run("go", approver=slow_human)
    assert result.status == "finished"
    assert result.tool_calls[0].ok and result.tool_calls[0].output == "done"
    types = [e.type for e in result.events]
    assert types.index("approval_requested") < types.index("tool_result")


@pytest.mark.anyio
async def test_an_approver_that_declines_with_a_reason():
    agent, _ = agent_with([CALL_PAY, ADAPT])
    result = await agent.run("pay", approver=lambda ctx, call: "not today")
    assert ran == [] and "not today" in result.tool_calls[0].output


@pytest.mark.anyio
async def test_an_approver_that_raises_ends_the_run_naming_it():
    def broken(ctx, call):
        raise KeyError("nobody home")

    agent, _ = agent_with([CALL_PAY])
    with pytest.raises(HookError, match=r"approver hook \(.*broken\) raised KeyError") as info:
        await agent.run("pay", approver=broken)
    assert info.value.result is not None and info.value.result.status == "error"
    assert ran == []


def test_calls_that_cannot_run_do_not_pause():
    bad = (
        '<|channel|>commentary to=functions.pay <|constrain|>json<|message|>{"amount":"x"}<|call|>'
    )
    agent, _ = agent_with([bad, ADAPT])
    result = agent.run_sync("pay")
    assert result.status == "finished" and result.tool_calls[0].error_kind == "invalid_arguments"


def test_a_paused_trace_resumes_where_it_stopped(tmp_path):
    path = tmp_path / "run.jsonl"
    agent, _ = agent_with([CALL_PAY])
    paused = agent.run_sync("pay Ada 5", trace=path)
    trace = load_trace(path)
    assert trace.paused and not trace.finished
    state = trace.resume_state()
    assert state.pending == paused.interruptions and state.prompt_ids == paused.state.prompt_ids
    fresh, _ = agent_with([DONE])
    result = resume(fresh, state, approve={state.pending[0].call_id: True}, trace=path)
    assert result.final_text == "Paid Ada 5."
    done = load_trace(path)
    assert done.finished and not done.paused and done.resumed == 1
    assert [s["tool_call"]["output"] for s in done.steps if s["tool_call"]] == ["sent 5 to Ada"]


# --- bad input: a clear error, nothing run ---------------------------------------------------


def paused_state() -> RunState:
    agent, _ = agent_with([CALL_PAY])
    return agent.run_sync("pay Ada 5").state


def test_unknown_call_ids_are_refused():
    state = paused_state()
    fresh, engine = agent_with([DONE])
    with pytest.raises(RunStateError, match="names nope-7, which the run is not waiting on"):
        resume(fresh, state, approve={"nope-7": True})
    assert engine.requests == [] and ran == []


def test_a_pending_call_without_a_decision_is_refused():
    state = paused_state()
    fresh, engine = agent_with([DONE])
    with pytest.raises(RunStateError, match=f"no decision for {state.pending[0].call_id}"):
        resume(fresh, state)
    assert engine.requests == [] and ran == []


def test_a_decision_of_the_wrong_type_is_refused():
    state = paused_state()
    fresh, _ = agent_with([DONE])
    with pytest.raises(RunStateError, match="must be True, False or a reason"):
        resume(fresh, state, approve={state.pending[0].call_id: 1})


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"instructions": "Other instructions."}, "the developer message differs"),
        ({"tools": [pay]}, "the developer message differs"),
        ({"reasoning_effort": "high"}, "the system message differs"),
    ],
)
def test_a_different_agent_is_refused(change, what):
    state = paused_state()
    engine = ScriptedEngine([DONE])
    settings = {"tools": [pay, add], "conversation_start_date": DATE} | change
    instructions = settings.pop("instructions", "Be careful with money.")
    other = Agent(instructions, engine=engine, **settings)
    with pytest.raises(RunStateError, match=f"saved by a different agent: {what}"):
        resume(other, state, approve={state.pending[0].call_id: True})
    assert engine.requests == [] and ran == []


def test_an_agent_of_another_day_may_resume():
    state = paused_state()
    engine = ScriptedEngine([DONE])
    later = Agent("Be careful with money.", tools=[pay, add], engine=engine)  # today's date
    result = resume(later, state, approve={state.pending[0].call_id: True})
    assert (
        result.final_text == "Paid Ada 5."
        and engine.requests[0][: len(state.prompt_ids)] == state.prompt_ids
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON"),
        ('{"hello": "world"}', "not a harmony-agent run state"),
        ("[1, 2]", "not a harmony-agent run state"),
    ],
)
def test_corrupt_or_foreign_json_is_refused(text, message):
    with pytest.raises(RunStateError, match=message):
        RunState.from_json(text)


def test_malformed_fields_are_named():
    data = json.loads(paused_state().to_json())
    data["prompt_ids"] = ["a", 1]
    with pytest.raises(RunStateError, match="malformed 'prompt_ids' field"):
        RunState.from_json(json.dumps(data))
    data = json.loads(paused_state().to_json())
    data["pending"] = [{"call": 1}]
    with pytest.raises(RunStateError, match="malformed 'pending' field"):
        RunState.from_json(json.dumps(data))
    data = json.loads(paused_state().to_json())
    data["version"] = 99
    with pytest.raises(RunStateError, match="version 99"):
        RunState.from_json(json.dumps(data))


def test_a_pending_state_whose_ids_do_not_end_with_the_call_is_refused():
    state = paused_state()
    state.prompt_ids = state.prompt_ids[:-1]
    fresh, engine = agent_with([DONE])
    with pytest.raises(RunStateError, match="do not end with the call"):
        resume(fresh, state, approve={state.pending[0].call_id: True})
    assert engine.requests == []


def test_resume_takes_a_run_state():
    fresh, _ = agent_with([DONE])
    with pytest.raises(RunStateError, match="resume takes a RunState"):
        resume(fresh, {"run_id": "x"})  # type: ignore[arg-type]


def test_python_code_waits_for_approval_and_a_rejection_runs_nothing():
    from harmony_agent.tools.python import PythonTool

    code = "<|channel|>analysis to=python code<|message|>import shutil; shutil.rmtree('/mnt/data')<|call|>"
    agent, _ = agent_with([code], tools=[PythonTool(needs_approval=True)])
    paused = agent.run_sync("clean up")
    (pending,) = paused.interruptions
    assert pending.tool == "python" and "rmtree" in pending.arguments  # the code, as text
    fresh, _ = agent_with([ADAPT], tools=[PythonTool(needs_approval=True)])
    result = resume(fresh, paused.state, approve={pending.call_id: "never delete files"})
    assert result.tool_calls[0].error_kind == "rejected" and result.final_text == "I did not pay."


def test_builtin_tools_take_needs_approval():
    from harmony_agent.errors import ConfigurationError
    from harmony_agent.tools.browser import BrowserTool
    from harmony_agent.tools.python import PythonTool

    assert PythonTool(needs_approval=True).tools()[0].needs_approval is True
    browser = BrowserTool(automation=True, needs_approval={"open": True, "browser_click": True})
    policies = {t.name: t.needs_approval for t in browser.tools()}
    assert policies["open"] is True and policies["browser_click"] is True
    assert policies["search"] is False and policies["browser_snapshot"] is False
    assert all(t.needs_approval is True for t in BrowserTool(needs_approval=True).tools())
    with pytest.raises(ConfigurationError, match=r"'clik'.*its functions are"):
        BrowserTool(needs_approval={"clik": True})
    with pytest.raises(ConfigurationError, match="must be True, False or a callable"):
        tool(needs_approval="yes")(add.handler)  # type: ignore[arg-type]


def test_a_replay_gives_each_call_the_decision_it_got(tmp_path):
    from harmony_agent.replay import Replay

    path = tmp_path / "run.jsonl"
    agent, _ = agent_with([CALL_PAY])
    state = agent.run_sync("pay Ada 5", trace=path).state
    fresh, _ = agent_with([ADAPT])
    resume(fresh, state, approve={state.pending[0].call_id: False}, trace=path)
    replay = Replay(path)
    player = Agent(
        "Be careful with money.",
        tools=[pay, add],
        engine=replay.engine,
        conversation_start_date=DATE,
    )
    outcome = replay.run_sync(player)
    assert outcome.result.status == "finished" and ran == []  # declined again, not paused
    assert outcome.result.tool_calls[0].error_kind == "rejected" and outcome.changes == []


def test_a_paused_result_cannot_be_continued_as_history():
    from harmony_agent.errors import ConfigurationError

    agent, engine = agent_with([CALL_PAY])
    paused = agent.run_sync("pay Ada 5")
    with pytest.raises(ConfigurationError, match="paused for approval of a tool call; resume it"):
        agent.run_sync("and now?", history=paused)
    assert len(engine.requests) == 1


def test_the_policy_sees_the_arguments_the_tool_runs_with():
    from harmony_agent.tools.browser import BrowserTool

    seen = []

    def policy(ctx, call):
        seen.append(call.arguments)
        return True

    call = '<|channel|>analysis to=browser.open <|constrain|>json<|message|>{"url":"http://127.0.0.1:9/x"}<|call|>'
    browser = BrowserTool(needs_approval={"open": policy})
    agent, _ = agent_with([call], tools=[browser])
    paused = agent.run_sync("open it")
    assert seen == [{"id": "http://127.0.0.1:9/x"}]  # the model's `url` alias resolved
    assert paused.interruptions[0].arguments == {"url": "http://127.0.0.1:9/x"}  # as written
