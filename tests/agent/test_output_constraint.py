"""The decode-side constraint: the final-channel structural tag, how each engine carries it,
and which engines say they cannot. The grammar itself runs in tests/engine/test_structured_vllm.py
(real vLLM); here the request an agent sends, over real HTTP to a local fake server."""

from __future__ import annotations

import json

import pydantic
import pytest
from harmony_agent import Agent
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import (
    FunctionEngine,
    GenerationRequest,
    OpenAICompatibleEngine,
    ScriptedEngine,
)
from harmony_agent.engine._flavor import FIREWORKS, VLLM
from harmony_agent.engine._structured import (
    FINAL_HEADERS,
    constraint_for,
    final_channel_tag,
    prompt_in_final,
)
from harmony_agent.errors import ConfigurationError

from tests.engine.fake_openai import serve

ENC = load_encoding()
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
ANSWER = ENC.encode('<|channel|>final json<|message|>{"n":1}<|return|>', allowed_special="all")


def ids(text: str) -> list[int]:
    return ENC.encode(text, allowed_special="all")


def test_the_tag_triggers_on_the_final_header_in_each_form():
    tag = final_channel_tag(SCHEMA)
    assert tag["type"] == "structural_tag"
    fmt = tag["format"]
    assert fmt["type"] == "triggered_tags" and fmt["triggers"] == ["<|channel|>final"]
    assert [t["begin"] for t in fmt["tags"]] == list(FINAL_HEADERS)
    assert FINAL_HEADERS == (
        "<|channel|>final<|message|>",
        "<|channel|>final json<|message|>",
        "<|channel|>final <|constrain|>json<|message|>",
    )
    for t in fmt["tags"]:
        assert t["content"]["json_schema"] == SCHEMA and t["end"] == ""
        assert t["begin"].startswith(fmt["triggers"][0])
    assert fmt["stop_after_first"] is True and fmt["at_least_one"] is False


@pytest.mark.parametrize(
    ("prompt", "inside"),
    [
        ("<|start|>user<|message|>q<|end|><|start|>assistant", False),
        ("<|start|>user<|message|>q<|end|><|start|>assistant<|channel|>final<|message|>", True),
        ("<|start|>assistant<|channel|>final json<|message|>", True),
        ("<|start|>assistant<|channel|>final <|constrain|>json<|message|>", True),
        ("<|start|>assistant<|channel|>analysis<|message|>", False),
        ("<|start|>assistant<|channel|>commentary to=functions.f<|message|>", False),
        ("<|start|>user<|message|>", False),
    ],
)
def test_a_prompt_inside_the_final_header_is_constrained_from_the_first_token(prompt, inside):
    assert prompt_in_final(ids(prompt)) is inside
    fmt = constraint_for(SCHEMA, ids(prompt))["format"]
    assert fmt["type"] == ("json_schema" if inside else "triggered_tags")


def test_vllm_flavor_sends_the_tag_as_structured_outputs():
    prompt = ids("<|start|>assistant")
    request = GenerationRequest(prompt_ids=prompt, max_tokens=8, output_schema=SCHEMA)
    body = VLLM.body(request, "m", stream=True)
    tag = json.loads(body["structured_outputs"]["structural_tag"])
    assert tag == final_channel_tag(SCHEMA)
    assert not any(key.startswith("guided_") for key in body)  # ignored by vLLM since 0.12


def test_fireworks_sends_its_response_format_only_inside_the_final_message():
    inside = ids("<|start|>assistant<|channel|>final<|message|>")
    request = GenerationRequest(prompt_ids=inside, max_tokens=8, output_schema=SCHEMA)
    body = FIREWORKS.body(request, "m", stream=True)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "result", "schema": SCHEMA},
    }
    outside = GenerationRequest(
        prompt_ids=ids("<|start|>assistant"), max_tokens=8, output_schema=SCHEMA
    )
    with pytest.raises(ConfigurationError, match="whole output, not only the final channel"):
        FIREWORKS.body(outside, "m", stream=True)


def test_a_constraint_and_an_output_schema_together_are_refused():
    request = GenerationRequest(
        prompt_ids=[1], max_tokens=8, output_schema=SCHEMA, constraint={"json": SCHEMA}
    )
    with pytest.raises(ConfigurationError, match="not both"):
        VLLM.body(request, "m", stream=True)


def test_capability_flags():
    assert not ScriptedEngine([]).constrains_output
    assert not FunctionEngine(lambda request: "x").constrains_output
    assert OpenAICompatibleEngine("http://127.0.0.1:1/v1").constrains_output
    assert not OpenAICompatibleEngine("http://127.0.0.1:1/v1", flavor="fireworks").constrains_output


def test_vllm_engine_constrains_only_with_a_tokenizer():
    from harmony_agent.engine.vllm import VLLMEngine

    assert not VLLMEngine("m").constrains_output  # the default skips the tokenizer
    assert VLLMEngine("m", skip_tokenizer_init=False).constrains_output


class City(pydantic.BaseModel):
    name: str
    population: int


@pytest.mark.anyio
async def test_an_agent_on_a_vllm_server_sends_the_tag_on_every_turn():
    async with serve(ANSWER) as server:
        async with OpenAICompatibleEngine(server.url) as engine:
            agent = Agent(engine=engine, output_type=SCHEMA)
            result = await agent.run("q")
    assert result.output == {"n": 1}
    assert not [e for e in result.events if e.type == "warning"]
    (body,) = server.requests
    tag = json.loads(body["structured_outputs"]["structural_tag"])
    assert tag["format"]["type"] == "triggered_tags"
    assert tag["format"]["tags"][0]["content"]["json_schema"] == SCHEMA


@pytest.mark.anyio
async def test_an_agent_on_fireworks_relies_on_validation_and_says_so():
    async with serve(ANSWER, plan=["fireworks"]) as server:
        async with OpenAICompatibleEngine(server.url, flavor="fireworks", model="m") as engine:
            agent = Agent(engine=engine, output_type=SCHEMA)
            result = await agent.run("q")
    assert result.output == {"n": 1}
    (body,) = server.requests
    assert "response_format" not in body
    warnings = [e.message for e in result.events if e.type == "warning"]
    assert warnings == [
        "OpenAICompatibleEngine cannot constrain decoding to the output type; the answer is "
        "held to it by the prompt's response format and validation only"
    ]
