"""The loop's steps one at a time: decide's outcomes, and the run state's JSON round trip."""

from __future__ import annotations

import json

import pytest
from harmony_agent import Agent, tool
from harmony_agent._run import CallTool, Finish, Resample, Run
from harmony_agent._state import RunState
from harmony_agent._transcript import Transcript
from harmony_agent._turn import Sampled
from harmony_agent.engine import ScriptedEngine
from harmony_agent.errors import EngineError
from harmony_agent.result import RunUsage, ToolCallRecord
from openai_harmony import Author, Message, Role


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def run_for() -> Run:
    agent = Agent(tools=[add], engine=ScriptedEngine([]), conversation_start_date="2026-01-01")
    return Run(agent, "2+3?")


def assistant(text: str, *, channel: str | None, recipient: str | None = None) -> Message:
    message = Message.from_author_and_content(Author.new(Role.ASSISTANT, None), text)
    if channel is not None:
        message = message.with_channel(channel)
    if recipient is not None:
        message = message.with_recipient(recipient)
    return message


def sampled(*messages: Message, finish="stop", error=None) -> Sampled:
    return Sampled(0, Transcript([1, 2]).view(), [3, 4], list(messages), finish, error)


def test_a_call_to_a_tool_is_a_tool_step():
    call = assistant('{"a":2,"b":3}', channel="commentary", recipient="functions.add")
    turn = sampled(assistant("think", channel="analysis"), call)
    assert run_for().decide(turn) == CallTool(turn, call, "functions.add")


def test_an_unknown_recipient_is_still_a_tool_step():
    call = assistant("{}", channel="analysis", recipient="functions.nope")
    turn = sampled(call)
    assert run_for().decide(turn) == CallTool(turn, call, "functions.nope")


@pytest.mark.parametrize("recipient", [None, "assistant", "user", "all"])
def test_a_message_to_a_person_finishes(recipient):
    turn = sampled(assistant("5", channel="final", recipient=recipient))
    assert run_for().decide(turn) == Finish(turn)


def test_a_tool_call_cut_by_the_token_limit_finishes_not_calls():
    call = assistant('{"a":2', channel="commentary", recipient="functions.add")
    turn = sampled(call, finish="length")
    assert run_for().decide(turn) == Finish(turn)


def test_unparseable_output_is_sampled_again():
    turn = sampled(error="unexpected token")
    assert run_for().decide(turn) == Resample("unexpected token")


def test_an_aborted_request_ends_the_run():
    with pytest.raises(EngineError, match="aborted the request of turn 0"):
        run_for().decide(sampled(finish="abort"))


def test_run_state_round_trips_through_json():
    state = RunState(
        run_id="r1",
        task="2+3?",
        messages=[
            Message.from_role_and_content(Role.USER, "2+3?"),
            assistant('{"a":2,"b":3}', channel="commentary", recipient="functions.add"),
        ],
        prompt_ids=[200006, 1428, 200008],
        next_turn=1,
        tool_calls=[
            ToolCallRecord(
                call_id="r1-0",
                turn=0,
                recipient="functions.add",
                name="functions.add",
                channel="commentary",
                raw_arguments='{"a":2,"b":3}',
                arguments={"a": 2, "b": 3},
                output="5",
                ok=True,
                duration_s=0.25,
            )
        ],
        usage=RunUsage(prompt_tokens=10, cached_prompt_tokens=4, output_tokens=5, turns=1),
    )
    again = RunState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state


def test_a_malformed_run_state_says_which_field():
    with pytest.raises(ValueError, match="no 'prompt_ids' field"):
        RunState.from_dict({"run_id": "r", "task": "t", "messages": []})
