"""Wrong arguments to Agent, its run methods and @tool: one ConfigurationError that names the
argument and says what to pass, never a third-party error from deep inside."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from harmony_agent import Agent, tool
from harmony_agent.engine import ScriptedEngine
from harmony_agent.errors import ConfigurationError

FINAL = "<|channel|>final<|message|>ok<|return|>"


def engine() -> ScriptedEngine:
    return ScriptedEngine([FINAL])


@pytest.mark.parametrize(
    ("kwargs", "named", "advice"),
    [
        ({"instructions": 42}, "instructions must be a str or None, got 42 (an int)", "as text"),
        ({"instructions": lambda: "hi"}, "instructions must be a str", "call it first"),
        ({"max_turns": "5"}, "max_turns must be a whole number", "max_turns=30"),
        ({"max_turns": True}, "max_turns must be a whole number", "max_turns=30"),
        ({"max_tokens_per_turn": 1.5}, "max_tokens_per_turn must be a whole number", "8192"),
        ({"max_tool_errors": None}, "max_tool_errors must be a whole number", "=5"),
        ({"context_window": "8k"}, "context_window must be a whole number", "131072"),
        ({"temperature": "hot"}, "temperature must be a number of at least 0", "e.g. 0.7"),
        ({"temperature": -1.0}, "temperature must be a number of at least 0", "None"),
        ({"top_p": 2}, "top_p must be a number above 0 and at most 1", "e.g. 0.95"),
        ({"seed": 1.5}, "seed must be an int or None, got 1.5 (a float)", "seed=0"),
        ({"tools": print}, "tools must be a list of tools", "tools=[...]"),
        ({"tools": "add"}, "tools must be a list of tools", "tools=[...]"),
    ],
)
def test_agent_arguments_of_the_wrong_type_are_named(kwargs, named, advice):
    with pytest.raises(ConfigurationError) as caught:
        Agent(engine=engine(), **kwargs)
    message = str(caught.value)
    assert named in message and advice in message
    assert "\n" not in message


def test_one_tool_not_in_a_list_is_named():
    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    with pytest.raises(
        ConfigurationError, match=r"tools must be a list of tools, got .*tools=\[\.\.\.\]"
    ):
        Agent(engine=engine(), tools=add)
    assert Agent(engine=engine(), tools=(add,)).registry.tools.keys() == {"functions.add"}


def test_a_range_error_keeps_its_wording():
    with pytest.raises(ConfigurationError, match="max_turns must be at least 1, got 0"):
        Agent(engine=engine(), max_turns=0)


@pytest.mark.parametrize("task", [None, 42, ["hi"], b"hi"])
def test_a_task_that_is_not_text_is_named(task):
    scripted = engine()
    agent = Agent(engine=scripted)
    with pytest.raises(ConfigurationError, match=r"task must be a str \(the user's message\)"):
        agent.run_sync(task)
    with pytest.raises(ConfigurationError, match="task must be a str"):
        agent.stream(task)
    assert scripted.requests == []  # refused before anything was sampled


def test_history_must_be_a_run_result():
    agent = Agent(engine=engine())
    with pytest.raises(ConfigurationError, match="history must be the RunResult of an earlier run"):
        agent.run_sync("hi", history="earlier text")
    first = agent.run_sync("hi")
    agent.engine = ScriptedEngine([FINAL])
    assert agent.run_sync("again", history=first).final_text == "ok"


def test_run_sync_inside_a_running_loop_says_to_await():
    agent = Agent(engine=engine())

    async def main() -> None:
        with pytest.raises(ConfigurationError, match=r"await agent\.run"):
            agent.run_sync("hi")
        assert (await agent.run("hi")).final_text == "ok"

    anyio.run(main)


class Opaque:
    """Not a type pydantic can describe."""


def takes_opaque(thing: Opaque) -> str:
    """Use a thing."""
    return "ok"


def takes_callback(n: int, callback: Callable[[int], int]) -> int:
    """Call back."""
    return callback(n)


@pytest.mark.parametrize(
    ("fn", "parameter", "shown"),
    [(takes_opaque, "thing", "Opaque"), (takes_callback, "callback", "Callable")],
)
def test_a_parameter_type_without_a_schema_is_named(fn, parameter, shown):
    with pytest.raises(ConfigurationError) as caught:
        tool(fn)
    message = str(caught.value)
    assert message.startswith(f"@tool {fn.__name__}: the type of parameter {parameter!r} ({shown})")
    assert "cannot become a JSON schema" in message and "@tool(parameters=" in message


def test_a_raw_schema_lifts_the_signature_limit():
    made = tool(parameters={"type": "object", "properties": {"thing": {"type": "string"}}})(
        takes_opaque
    )
    assert made.parameters["properties"] == {"thing": {"type": "string"}}


def test_errors_name_their_setting_for_front_ends():
    with pytest.raises(ConfigurationError) as caught:
        Agent(engine=engine(), temperature="hot")
    assert caught.value.settings == ("temperature",) and "--" not in str(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        Agent(engine=engine(), max_turns=0)
    assert caught.value.settings == ("max_turns",)
