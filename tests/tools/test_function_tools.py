"""@tool: schemas from signatures, docstrings, pydantic models, raw schemas; serialisation."""

from __future__ import annotations

import dataclasses
import datetime

import anyio
import pydantic
import pytest
from harmony_agent import RunContext, tool
from harmony_agent.errors import ConfigurationError
from harmony_agent.tools import FunctionTool


async def invoke(t, raw, **kw):
    async with RunContext.open(**kw) as ctx:
        return await t.invoke(raw, ctx)


def run(coro_fn, *args, **kw):
    return anyio.run(lambda: coro_fn(*args, **kw))


def test_schema_from_hints_and_docstring():
    @tool
    def search(query: str, limit: int = 5, exact: bool = False) -> list[str]:
        """Search the notes.

        Longer text that is not part of the description.

        Args:
            query: words to look for
            limit: at most this many
                results (continued line)
        Returns:
            the matches
        """
        return [query] * limit

    assert search.name == "search" and search.recipient == "functions.search"
    assert search.description == "Search the notes."
    assert search.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "words to look for"},
            "limit": {
                "type": "integer",
                "default": 5,
                "description": "at most this many results (continued line)",
            },
            "exact": {"type": "boolean", "default": False},
        },
        "required": ["query"],
    }
    assert run(invoke, search, '{"query": "x", "limit": 2}').text == '["x","x"]'


class Order(pydantic.BaseModel):
    item: str
    qty: int = pydantic.Field(1, ge=1, description="how many")


def test_single_pydantic_model_parameter():
    @tool
    def place(order: Order) -> Order:
        """Place an order."""
        return order

    assert set(place.parameters["properties"]) == {"item", "qty"}
    ok = run(invoke, place, '{"item": "pen", "qty": 3}')
    assert ok.ok and ok.text == '{"item":"pen","qty":3}'
    bad = run(invoke, place, '{"item": "pen", "qty": 0}')
    assert not bad.ok and "qty" in bad.text


def test_raw_schema_and_handler():
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0}},
        "required": ["n"],
    }

    @tool(name="square", description="Square a number.", parameters=schema)
    def handler(n):
        return n * n

    assert handler.name == "square" and handler.parameters == schema
    assert run(invoke, handler, '{"n": 7}').text == "49"
    bad = run(invoke, handler, '{"n": -1}')
    assert "at n: -1 is less than the minimum of 0" in bad.text


def test_async_tool_gets_context():
    seen = {}

    @tool
    async def whoami(ctx: RunContext) -> str:
        """Report the run."""
        seen["deps"] = ctx.deps
        return ctx.run_id

    assert whoami.parameters["properties"] == {}
    result = run(invoke, whoami, "", run_id="r1", deps={"k": 1})
    assert result.text == "r1" and seen["deps"] == {"k": 1}


def test_return_values_are_serialised():
    @dataclasses.dataclass
    class Point:
        x: int
        when: datetime.date

    @tool
    def point() -> Point:
        """A point."""
        return Point(1, datetime.date(2026, 1, 2))

    @tool
    def nothing() -> None:
        """Nothing."""

    assert run(invoke, point, "{}").text == '{"x":1,"when":"2026-01-02"}'
    assert run(invoke, nothing, "{}").text == "null"


def test_non_object_arguments_and_bad_names():
    @tool
    def f(a: int) -> int:
        """F."""
        return a

    res = run(invoke, f, "[1, 2]")
    assert not res.ok and "must be a JSON object, got list" in res.text
    with pytest.raises(ConfigurationError, match="not a valid identifier"):
        tool(name="bad-name")(lambda: 1)
    with pytest.raises(ConfigurationError, match=r"\*args"):
        tool(lambda *a: 1)

    class Local(pydantic.BaseModel):
        x: int

    def uses_local(v: Local) -> int:
        return v.x

    with pytest.raises(ConfigurationError, match="Define the types a tool uses at module level"):
        tool(uses_local)


def test_long_outputs_are_clipped_with_a_marker():
    @tool
    def big() -> str:
        """Big."""
        return "x" * 200_000

    big.max_output_chars = 1000
    text = run(invoke, big, "{}").text
    assert len(text) < 1100 and "199000 characters cut" in text


def test_function_tool_is_a_tool():
    assert isinstance(tool(lambda: 1, name="one"), FunctionTool)
