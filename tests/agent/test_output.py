"""Structured output: output types, the Response Formats section, header forms, validation and
repair, with the real parser on raw Harmony text (ScriptedEngine)."""

from __future__ import annotations

import dataclasses
import json
from contextlib import aclosing
from typing import Any, ClassVar, Literal

import pydantic
import pytest
from harmony_agent import Agent, tool
from harmony_agent._tokens import END, RETURN
from harmony_agent.engine import ScriptedEngine
from harmony_agent.errors import ConfigurationError, OutputValidationError
from harmony_agent.events import RunFinished, TextDelta, WarningEvent
from typing_extensions import TypedDict

DATE = "2026-01-01"


class City(pydantic.BaseModel):
    """A city and its population."""

    name: str
    population: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Pair(TypedDict):
    """Two labels."""

    left: str
    right: str


def final(body: str, header: str = "final") -> str:
    return f"<|channel|>{header}<|message|>{body}<|return|>"


def agent_for(replies: list[str], output_type: Any = None, **kwargs: Any) -> Agent:
    return Agent(
        "Answer.",
        engine=ScriptedEngine(replies, **kwargs.pop("engine_kwargs", {})),
        output_type=output_type,
        conversation_start_date=DATE,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("output_type", "body", "expected", "as_json"),
    [
        (City, '{"name":"Oslo","population":709000}', City(name="Oslo", population=709000), None),
        (Point, '{"x":1,"y":2}', Point(1, 2), {"x": 1, "y": 2}),
        (Pair, '{"left":"a","right":"b"}', {"left": "a", "right": "b"}, None),
        (int, "42", 42, 42),
        (list[str], '["a","b"]', ["a", "b"], ["a", "b"]),
        (Literal["yes", "no"], '"yes"', "yes", "yes"),
        (
            {"title": "Answer", "type": "object", "properties": {"n": {"type": "integer"}}},
            '{"n": 3}',
            {"n": 3},
            {"n": 3},
        ),
    ],
    ids=["pydantic", "dataclass", "typeddict", "int", "list-str", "literal", "json-schema"],
)
def test_each_output_type_is_validated(output_type, body, expected, as_json):
    agent = agent_for([final(body)], output_type)
    result = agent.run_sync("q")
    assert result.output == expected
    assert result.final_text == body
    finished = result.events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.output == (as_json if as_json is not None else json.loads(body))


@pytest.mark.parametrize("header", ["final", "final json", "final <|constrain|>json"])
@pytest.mark.parametrize("chunk_size", [1, 3, 1000], ids=["token", "chunks", "whole"])
def test_each_final_header_form_is_the_answer(header, chunk_size):
    reply = "<|channel|>analysis<|message|>Look it up.<|end|><|start|>assistant" + final(
        '{"name":"Oslo","population":709000}', header
    )
    agent = agent_for([reply], City, engine_kwargs={"chunk_size": chunk_size})
    result = agent.run_sync("q")
    assert result.output == City(name="Oslo", population=709000)
    assert not result.tool_calls  # `json` is a content type, never a recipient
    deltas = "".join(e.delta for e in result.events if isinstance(e, TextDelta))
    assert deltas == result.final_text  # the structured answer still streams


def test_the_answer_after_a_tool_call_is_validated():
    @tool
    def population(city: str) -> int:
        "Population of a city."
        return 709000

    agent = Agent(
        tools=[population],
        engine=ScriptedEngine(
            [
                "<|channel|>commentary to=functions.population <|constrain|>json"
                '<|message|>{"city":"Oslo"}<|call|>',
                final('{"name":"Oslo","population":709000}', "final json"),
            ]
        ),
        output_type=City,
    )
    result = agent.run_sync("q")
    assert result.tool_calls[0].ok and result.output.population == 709000


def test_repair_then_success_appends_and_keeps_the_prefix():
    bad = final('{"name":"Oslo","population":"many"}', "final json")
    agent = agent_for([bad, final('{"name":"Oslo","population":709000}')], City)
    result = agent.run_sync("q")
    assert result.output == City(name="Oslo", population=709000)
    assert result.usage.turns == 2
    first, second = agent.engine.requests  # type: ignore[attr-defined]
    bad_ids = agent.encoding.encode(bad, allowed_special="all")
    # the second prompt is the first one, the sampled answer (stored with <|end|>), one user
    # message and <|start|>assistant: appended, not re-rendered
    assert second[: len(first)] == first
    assert second[len(first) : len(first) + len(bad_ids)] == [*bad_ids[:-1], END]
    assert bad_ids[-1] == RETURN
    tail = agent.encoding.decode(second[len(first) + len(bad_ids) :])
    assert tail.startswith("<|start|>user<|message|>Your final answer does not match")
    assert "$.population" in tail and "valid integer" in tail
    assert tail.endswith("<|end|><|start|>assistant")
    warnings = [e.message for e in result.events if isinstance(e, WarningEvent)]
    assert any("does not match City" in w and "(1/1)" in w for w in warnings)


def test_invalid_json_goes_to_repair_not_a_crash():
    agent = agent_for([final('{"name": "Oslo", '), final('{"name":"Oslo","population":1}')], City)
    assert agent.run_sync("q").output == City(name="Oslo", population=1)


def test_a_plain_text_answer_goes_to_repair():
    agent = agent_for([final("Oslo, about 709k."), final('{"name":"Oslo","population":1}')], City)
    result = agent.run_sync("q")
    assert result.output.name == "Oslo" and result.usage.turns == 2


def test_repair_budget_exhausted_raises_with_the_partial_result():
    replies = [final('{"name":"Oslo"}'), final('{"name":"Oslo","population":"x"}')]
    agent = agent_for(replies, City, output_retries=1)
    with pytest.raises(OutputValidationError) as caught:
        agent.run_sync("q")
    error = caught.value
    assert error.where == "$.population"
    assert error.result.final_text == '{"name":"Oslo","population":"x"}'
    assert error.result.output is None and error.result.usage.turns == 2
    assert "output_retries" in str(error)


def test_no_retries_fails_on_the_first_bad_answer():
    agent = agent_for([final("[]")], City, output_retries=0)
    with pytest.raises(OutputValidationError, match=r"at \$: Input should be"):
        agent.run_sync("q")


@pytest.mark.anyio
async def test_the_error_event_comes_before_the_raise():
    agent = agent_for([final("nope")], City, output_retries=0)
    seen = []
    with pytest.raises(OutputValidationError):
        async with aclosing(agent.stream("q")) as events:
            async for event in events:
                seen.append(event)
    assert seen[-1].type == "error" and seen[-1].error == "OutputValidationError"


def test_per_run_override():
    agent = agent_for([final('{"x":1,"y":2}'), final("7")], City)
    assert agent.run_sync("q", output_type=Point).output == Point(1, 2)
    assert agent.run_sync("q", output_type=int).output == 7
    dev = agent.encoding.decode(agent.engine.requests[0])  # type: ignore[attr-defined]
    assert "## Point" in dev and "## City" not in dev


def test_no_output_type_leaves_runs_as_they_were():
    agent = agent_for([final("hi")])
    result = agent.run_sync("q")
    assert result.output is None and result.events[-1].output is None
    assert "Response Formats" not in agent.encoding.decode(agent.engine.requests[0])  # type: ignore[attr-defined]
    assert not [e for e in result.events if isinstance(e, WarningEvent)]


def test_an_engine_that_cannot_constrain_is_warned_of_once():
    agent = agent_for([final("1"), final("[2]")], int)
    result = agent.run_sync("q", output_type=list[int])  # "1" is no list: one repair
    warnings = [e.message for e in result.events if isinstance(e, WarningEvent)]
    assert result.output == [2]
    assert sum("cannot constrain decoding" in w for w in warnings) == 1
    assert warnings[0].startswith("ScriptedEngine cannot constrain")
    assert all(r.output_schema is None for r in agent.engine.generation_requests)  # type: ignore[attr-defined]


class ConstrainingScript(ScriptedEngine):
    """A scripted engine that says it constrains decoding (it records what it was sent)."""

    constrains_output: ClassVar[bool] = True  # type: ignore[misc]


def test_an_engine_that_constrains_gets_the_schema_and_no_warning():
    engine = ConstrainingScript([final('{"name":"Oslo","population":1}')])
    agent = Agent(engine=engine, output_type=City)
    result = agent.run_sync("q")
    assert not [e for e in result.events if isinstance(e, WarningEvent)]
    (request,) = engine.generation_requests
    assert request.output_schema == City.model_json_schema()


# --- the developer message ----------------------------------------------------------------


GOLDEN_WITH_INSTRUCTIONS = (
    "<|start|>developer<|message|># Instructions\n\nAnswer.\n\n"
    "# Response Formats\n\n"
    "## City\n\n"
    "// A city and its population.\n"
    '{"properties":{"name":{"type":"string"},"population":{"type":"integer"}},'
    '"required":["name","population"],"type":"object"}<|end|>'
)


def test_golden_developer_message_follows_the_spec():
    agent = agent_for([], City)
    prompt = agent.encoding.decode(agent.first_prompt("q"))
    start = prompt.index("<|start|>developer")
    developer = prompt[start : prompt.index("<|end|>", start) + len("<|end|>")]
    assert developer == GOLDEN_WITH_INSTRUCTIONS


def test_golden_developer_message_of_a_schema_alone():
    schema = {
        "title": "Verdict",
        "description": "Whether the claim holds.",
        "type": "object",
        "properties": {"holds": {"type": "boolean"}, "why": {"type": ["string", "null"]}},
        "required": ["holds", "why"],
    }
    agent = Agent(engine=ScriptedEngine([]), output_type=schema, conversation_start_date=DATE)
    prompt = agent.encoding.decode(agent.first_prompt("q"))
    assert (
        "<|start|>developer<|message|># Response Formats\n\n## Verdict\n\n"
        "// Whether the claim holds.\n"
        '{"type":"object","properties":{"holds":{"type":"boolean"},'
        '"why":{"type":["string","null"]}},"required":["holds"]}<|end|>'
    ) in prompt


def test_nested_models_are_inlined_in_the_prompt_and_kept_for_validation():
    class Inner(pydantic.BaseModel):
        v: int

    class Outer(pydantic.BaseModel):
        inner: Inner
        maybe: Inner | None = None

    agent = agent_for([final('{"inner":{"v":1}}')], Outer)
    section = agent.encoding.decode(agent.first_prompt("q")).split("## Outer\n\n")[1]
    assert "$ref" not in section and "$defs" not in section and "anyOf" not in section
    assert '"inner":{"properties":{"v":{"type":"integer"}}' in section
    assert agent.run_sync("q").output == Outer(inner=Inner(v=1))


def test_the_prefix_is_rendered_once():
    agent = agent_for([], City)
    first = agent.first_prompt("a")
    prefix = agent._prefix
    assert agent.first_prompt("b")[: len(prefix)] == prefix and agent._prefix is prefix
    assert first[: len(prefix)] == prefix


# --- bad input ----------------------------------------------------------------------------


class Tree(pydantic.BaseModel):
    children: list[Tree]


class Opaque:
    pass


class HoldsOpaque(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    thing: Opaque


@pytest.mark.parametrize(
    ("output_type", "message"),
    [
        (Tree, r"recursive \(the field at \$\.children\[\] is a Tree again.*Bound the depth"),
        (Opaque, r"Opaque cannot become a JSON schema"),
        (HoldsOpaque, r"HoldsOpaque cannot become a JSON schema.*JSON schema dict"),
        ({"type": "objekt"}, r"not a valid JSON schema \(at type:"),
        ({"$ref": "https://example.com/s.json"}, r"outside the schema.*Inline"),
        ({"$ref": "#/$defs/missing"}, r"does not define.*\$defs"),
        (42, r"output_type must be a type"),
    ],
    ids=["recursive", "opaque", "opaque-field", "bad-schema", "remote-ref", "missing-ref", "value"],
)
def test_types_that_cannot_become_a_faithful_schema_fail_at_agent(output_type, message):
    with pytest.raises(ConfigurationError, match=message):
        Agent(engine=ScriptedEngine([]), output_type=output_type)


def test_per_run_bad_type_fails_before_the_run():
    agent = agent_for([final("1")])
    with pytest.raises(ConfigurationError, match="recursive"):
        agent.run_sync("q", output_type=Tree)
    assert agent.engine.remaining == 1  # type: ignore[attr-defined]


def test_negative_output_retries_is_refused():
    with pytest.raises(ConfigurationError, match="output_retries must be 0 or more"):
        Agent(engine=ScriptedEngine([]), output_type=int, output_retries=-1)
