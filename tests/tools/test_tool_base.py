"""The Tool base class: its own deadline only, every failure an error result, one validator."""

from __future__ import annotations

import anyio
import pytest
from harmony_agent import Agent, RunContext, Tool, tool
from harmony_agent.engine import ScriptedEngine

pytestmark = pytest.mark.anyio


class Upstream(Tool):
    """Raises TimeoutError itself, as a client of a slow upstream service would."""

    name = "upstream"
    description = "Asks a slow upstream service."

    def __init__(self, timeout: float | None) -> None:
        self.parameters = {"type": "object", "properties": {}}
        self.timeout = timeout

    async def call(self, arguments, ctx):
        raise TimeoutError("the upstream service did not answer in 5 s")


class Sleeper(Tool):
    name = "sleeper"
    description = "Sleeps."

    def __init__(self, timeout: float | None) -> None:
        self.parameters = {
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
            "required": ["seconds"],
        }
        self.timeout = timeout

    async def call(self, arguments, ctx):
        await anyio.sleep(arguments["seconds"])
        return "woke up"


async def invoke(t: Tool, raw: str):
    async with RunContext.open() as ctx:
        return await t.invoke(raw, ctx)


@pytest.mark.parametrize("limit", [None, 60.0])
async def test_a_tools_own_timeout_error_is_its_failure_not_a_deadline(limit):
    result = await invoke(Upstream(limit), "{}")
    assert not result.ok
    assert result.error_kind == "tool_failed"
    assert result.text == (
        "functions.upstream failed: TimeoutError: the upstream service did not answer in 5 s"
    )


async def test_a_tool_past_its_deadline_is_stopped_and_reported_as_a_timeout():
    result = await invoke(Sleeper(0.05), '{"seconds": 30}')
    assert not result.ok
    assert result.error_kind == "timeout"
    assert result.text.startswith("functions.sleeper timed out after 0.05 s and was stopped.")


async def test_no_timeout_means_no_limit():
    result = await invoke(Sleeper(None), '{"seconds": 0.01}')
    assert (result.ok, result.text, result.error_kind) == (True, "woke up", None)


async def test_the_validator_is_built_once_per_schema():
    sleeper = Sleeper(None)
    first = sleeper._validator()
    assert sleeper._validator() is first
    bad = await invoke(sleeper, '{"seconds": "ten"}')
    assert not bad.ok and "at seconds: 'ten' is not of type 'number'" in bad.text
    assert sleeper._validator() is first
    sleeper.parameters = {"type": "object", "properties": {}, "additionalProperties": False}
    assert sleeper._validator() is not first
    extra = await invoke(sleeper, '{"seconds": 1}')
    assert not extra.ok and "Additional properties are not allowed" in extra.text


def test_a_run_goes_on_after_a_tool_raises_timeout_error_with_no_deadline():
    @tool(timeout=None)
    def fetch_quote(symbol: str) -> str:
        """A quote from a client library that gives up by raising TimeoutError."""
        raise TimeoutError(f"quote service timed out for {symbol}")

    engine = ScriptedEngine(
        [
            "<|channel|>commentary to=functions.fetch_quote <|constrain|>json"
            '<|message|>{"symbol":"ACME"}<|call|>',
            "<|channel|>final<|message|>The quote service is down.<|return|>",
        ]
    )
    agent = Agent(tools=[fetch_quote], engine=engine, conversation_start_date="2026-01-01")
    result = agent.run_sync("ACME?")
    assert result.final_text == "The quote service is down."
    (call,) = result.tool_calls
    assert (call.ok, call.error_kind) == (False, "tool_failed")
    assert call.output == (
        "functions.fetch_quote failed: TimeoutError: quote service timed out for ACME"
    )
