"""The sglang flavor of OpenAICompatibleEngine against a stand-in that speaks SGLang 0.5.23's
/v1/completions (tests/engine/fake_sglang.py): ids, stops, usage, constraints, errors, and the
fields SGLang would drop refused before they are sent."""

from __future__ import annotations

import json

import aiohttp
import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent._tokens import CALL, RETURN
from harmony_agent.engine import GenerationRequest, OpenAICompatibleEngine
from harmony_agent.engine._flavor import SGLANG, Flavor
from harmony_agent.engine._structured import final_channel_tag, json_only_tag
from harmony_agent.errors import (
    ConfigurationError,
    ContextOverflowError,
    EngineRequestError,
    EngineUnavailableError,
)

from .fake_sglang import serve_sglang

pytestmark = pytest.mark.anyio
ENC = load_encoding()
CALL_REPLY = ENC.encode(
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
    allowed_special="all",
)
FINAL = ENC.encode("<|channel|>final<|message|>5<|return|>", allowed_special="all")
PROMPT = ENC.encode("<|start|>user<|message|>2+3<|end|><|start|>assistant", allowed_special="all")
IN_FINAL = ENC.encode(
    "<|start|>user<|message|>2+3<|end|><|start|>assistant<|channel|>final<|message|>",
    allowed_special="all",
)
SCHEMA = {"type": "object", "properties": {"sum": {"type": "integer"}}, "required": ["sum"]}


@tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


async def collect(engine, request):
    chunks = [chunk async for chunk in engine.generate(request)]
    return chunks, [t for c in chunks for t in c.token_ids]


async def test_agent_loop_over_sglang():
    async with serve_sglang([CALL_REPLY, FINAL], context_len=4096) as server:
        async with OpenAICompatibleEngine(server.url, flavor="sglang") as engine:
            result = await Agent(tools=[add], engine=engine).run("2+3")
            assert engine.context_window == 4096  # from the /v1/models card's max_model_len
    assert result.final_text == "5" and result.tool_calls[0].output == "5"
    first, second = server.requests
    # the second prompt extends the first, token for token: the call as sampled, then its output
    assert (
        second["prompt"][: len(first["prompt"]) + len(CALL_REPLY)] == first["prompt"] + CALL_REPLY
    )
    assert result.token_ids[-len(FINAL) :] == FINAL
    for body, headers in zip(server.requests, server.headers, strict=True):
        assert body["model"] == "openai/gpt-oss-20b"  # the server's only model
        assert sorted(body["stop_token_ids"]) == [RETURN, CALL] and "stop" not in body
        assert body["return_token_ids"] is True and body["skip_special_tokens"] is False
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["rid"].startswith(result.run_id) and "request_id" not in body
        assert headers["x-smg-routing-key"] == result.run_id
    assert first["rid"] != second["rid"]
    # the stand-in's radix cache held the first prompt and the sampled call
    assert result.usage.cache_reported
    assert result.usage.cached_prompt_tokens == len(first["prompt"]) + len(CALL_REPLY)


@pytest.mark.parametrize("stream", [True, False])
async def test_stop_ids_from_the_ids_or_from_matched_stop(stream):
    request = GenerationRequest(prompt_ids=PROMPT, max_tokens=100, session_id="s")
    for trim_stop in (False, True):
        async with serve_sglang([CALL_REPLY], trim_stop=trim_stop) as server:
            async with OpenAICompatibleEngine(server.url, flavor="sglang", stream=stream) as engine:
                chunks, ids = await collect(engine, request)
        # whether the server returns the stop id or leaves it out (and names it only in
        # matched_stop), the transcript holds exactly what the model sampled
        assert ids == CALL_REPLY
        assert (chunks[-1].finish_reason, chunks[-1].stop_token_id) == ("stop", CALL)
        assert chunks[-1].usage.prompt_tokens == len(PROMPT)
        assert chunks[-1].usage.output_tokens == len(CALL_REPLY)
        assert chunks[-1].usage.cached_prompt_tokens == 0


async def test_a_long_prompt_echoed_on_the_first_chunk_fits_the_line_limit():
    # SGLang echoes the prompt's ids on the first event: one line of about 1 MB here
    prompt = [*PROMPT, *([12194] * 131_000)]
    async with serve_sglang([CALL_REPLY], context_len=132_000) as server:
        async with OpenAICompatibleEngine(server.url, flavor="sglang") as engine:
            _, ids = await collect(engine, GenerationRequest(prompt_ids=prompt, max_tokens=100))
    assert ids == CALL_REPLY and server.requests[0]["prompt"] == prompt


async def test_length_and_no_cache_report():
    request = GenerationRequest(prompt_ids=PROMPT, max_tokens=5)
    async with serve_sglang([CALL_REPLY], cache_report=False) as server:
        async with OpenAICompatibleEngine(server.url, model="m", flavor="sglang") as engine:
            chunks, ids = await collect(engine, request)
    assert ids == CALL_REPLY[:5]
    assert (chunks[-1].finish_reason, chunks[-1].stop_token_id) == ("length", None)
    # without --enable-cache-report SGLang says nothing about its cache: unknown, not 0
    assert chunks[-1].usage.cached_prompt_tokens is None
    assert server.requests[0]["max_tokens"] == 5


async def test_output_schema_is_sent_as_sglangs_structural_tag():
    reply = ENC.encode('<|channel|>final<|message|>{"sum": 5}<|return|>', allowed_special="all")
    async with serve_sglang([reply]) as server:
        async with OpenAICompatibleEngine(server.url, flavor="sglang") as engine:
            assert engine.constrains_output  # the tag holds only final-channel messages
            for prompt in (PROMPT, IN_FINAL):
                request = GenerationRequest(prompt_ids=prompt, max_tokens=50, output_schema=SCHEMA)
                _, ids = await collect(engine, request)
                assert ids == reply
    turn, answer = (body["response_format"] for body in server.requests)
    # a turn that may still reason or call tools: triggered by the final header only
    assert turn == final_channel_tag(SCHEMA)
    assert turn["type"] == "structural_tag" and turn["format"]["type"] == "triggered_tags"
    assert turn["format"]["triggers"] == ["<|channel|>final"]
    # a prompt that already opened the final message: the whole output is the JSON
    assert answer == json_only_tag(SCHEMA)
    assert all("structured_outputs" not in body for body in server.requests)


async def test_agent_with_an_output_type_over_sglang():
    reply = ENC.encode('<|channel|>final<|message|>{"sum": 5}<|return|>', allowed_special="all")
    async with serve_sglang([reply]) as server:
        async with OpenAICompatibleEngine(server.url, flavor="sglang") as engine:
            result = await Agent(engine=engine).run("2+3", output_type=SCHEMA)
    assert result.output == {"sum": 5}
    assert server.requests[0]["response_format"] == final_channel_tag(SCHEMA)


async def test_a_caller_constraint_goes_in_response_format():
    constraint = {"type": "json_schema", "json_schema": {"name": "sum", "schema": SCHEMA}}
    request = GenerationRequest(prompt_ids=IN_FINAL, max_tokens=20, constraint=constraint)
    async with serve_sglang([ENC.encode('{"sum": 5}'), [RETURN]]) as server:
        async with OpenAICompatibleEngine(server.url, model="m", flavor="sglang") as engine:
            await collect(engine, request)
    assert server.requests[0]["response_format"] == constraint


async def test_fields_sglang_would_drop_are_refused():
    # the stand-in, like SGLang, ignores a field it does not know: a vLLM-flavored request
    # with vLLM's constraint field is answered as if it had no constraint at all...
    request = GenerationRequest(prompt_ids=PROMPT, max_tokens=100)
    vllm_constraint = {"structured_outputs": {"json": SCHEMA}}
    async with serve_sglang([CALL_REPLY]) as server:
        async with OpenAICompatibleEngine(server.url, extra_body=vllm_constraint) as engine:
            chunks, _ = await collect(engine, request)
        assert chunks[-1].finish_reason == "stop"  # ...silently unconstrained
        # ...so the sglang flavor refuses it before anything is sent
        with pytest.raises(ConfigurationError) as caught:
            OpenAICompatibleEngine(server.url, flavor="sglang", extra_body=vllm_constraint)
        message = str(caught.value)
        assert "'structured_outputs'" in message and "ignore it silently" in message
        assert "response_format" in message  # what to send instead
        with pytest.raises(
            ConfigurationError, match=r"'request_id'.*SGLang's request id field is rid"
        ):
            OpenAICompatibleEngine(server.url, flavor="sglang", extra_body={"request_id": "x"})
        # fields SGLang takes pass through, and so do request features it takes
        engine = OpenAICompatibleEngine(
            server.url, flavor="sglang", extra_body={"top_k": 20, "min_p": 0.0}, logprobs=True
        )
        async with engine:
            await collect(engine, request)
    body = server.requests[-1]
    assert body["top_k"] == 20 and body["min_p"] == 0.0 and body["logprobs"] == 0
    assert "return_tokens_as_token_ids" not in body  # vLLM's, which SGLang would drop
    assert set(body) <= SGLANG.accepted_fields
    assert len(server.requests) == 2  # the refused engines sent nothing


async def test_a_flavor_feature_outside_the_list_is_refused_at_the_request():
    # a custom flavor whose own fixed fields the server would drop: refused per request too
    odd = Flavor(
        name="odd",
        stop="ids",
        fixed={"return_token_ids": True, "guided_regex": ".*"},
        accepted_fields=SGLANG.accepted_fields,
    )
    async with serve_sglang([CALL_REPLY]) as server:
        async with OpenAICompatibleEngine(server.url, model="m", flavor=odd) as engine:
            with pytest.raises(ConfigurationError, match=r"'guided_regex'.*does not take"):
                await collect(engine, GenerationRequest(prompt_ids=PROMPT, max_tokens=9))
    assert server.requests == []


async def test_errors_are_mapped():
    request = GenerationRequest(prompt_ids=PROMPT, max_tokens=100)
    long = GenerationRequest(prompt_ids=[*PROMPT] * 10, max_tokens=100)
    async with serve_sglang([CALL_REPLY], context_len=len(PROMPT) * 5) as server:
        # the window from /v1/models: a prompt that cannot fit is not even sent
        async with OpenAICompatibleEngine(server.url, flavor="sglang") as engine:
            with pytest.raises(ContextOverflowError, match="start a new run"):
                await collect(engine, long)
        assert server.requests == []
        # a window set too large by hand: SGLang's own 400 says so, read as an overflow
        engine = OpenAICompatibleEngine(
            server.url, model="m", flavor="sglang", context_window=10**6
        )
        async with engine:
            window = rf"is longer than the model's context length \({len(PROMPT) * 5} tokens"
            with pytest.raises(ContextOverflowError, match=window):
                await collect(engine, long)
            assert len(server.requests) == 1  # a 400 is not retried
            server.plan = ["status:503", "ok"]
            _, ids = await collect(engine, request)  # retried, then streamed
            assert ids == CALL_REPLY and len(server.requests) == 3
            server.plan = ["status:500"]
            engine.max_retries, engine.retry_backoff = 1, 0.01
            with pytest.raises(EngineUnavailableError, match="failed with 500: stand-in failure"):
                await collect(engine, request)
            server.plan = ["error_mid"]
            with pytest.raises(EngineRequestError, match=r"error mid-stream.*out of memory"):
                await collect(engine, request)
            server.plan = ["ok"]
            bad = GenerationRequest(
                prompt_ids=PROMPT,
                max_tokens=9,
                constraint={"type": "json_schema", "json_schema": {"name": "x"}},
            )
            with pytest.raises(EngineRequestError, match=r"\(400\): schema_ is required"):
                await collect(engine, bad)


async def test_the_stand_in_speaks_sglangs_shapes():
    # the stand-in itself: what the flavor reads is what SGLang's protocol models write
    async with serve_sglang([CALL_REPLY]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m", flavor="sglang", stream=False)
        async with engine:
            await collect(engine, GenerationRequest(prompt_ids=PROMPT, max_tokens=100))
        body = dict(server.requests[0], stream=True, stream_options={"include_usage": True})
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.url}/completions", json=body) as response:
                text = await response.text()
            async with session.get(f"{server.url}/models") as response:
                card = (await response.json())["data"][0]
    events = [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]
    assert events[0]["choices"][0]["prompt_token_ids"] == PROMPT
    assert events[-2]["choices"][0]["matched_stop"] == CALL
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert (
        events[-1]["choices"] == []
        and "cached_tokens" in events[-1]["usage"]["prompt_tokens_details"]
    )
    assert text.rstrip().endswith("data: [DONE]")
    assert card["owned_by"] == "sglang" and card["max_model_len"] == 131072


@pytest.mark.vllm
async def test_the_tags_sent_parse_as_xgrammars_structural_tag():
    # SGLang's CompletionRequest reads a structural-tag response_format as xgrammar's
    # StructuralTag (sglang 0.5.23 pins xgrammar 0.2.7); xgrammar comes with vLLM
    from xgrammar import StructuralTag

    turn = StructuralTag.model_validate(SGLANG.output_constraint(SCHEMA, PROMPT)[1])
    assert type(turn.format).__name__ == "TriggeredTagsFormat"
    assert turn.format.triggers == ["<|channel|>final"] and turn.format.stop_after_first
    answer = StructuralTag.model_validate(SGLANG.output_constraint(SCHEMA, IN_FINAL)[1])
    assert type(answer.format).__name__ == "JSONSchemaFormat"
    assert answer.format.max_whitespace_cnt == 1


async def test_an_adapter_goes_as_lora_path_and_the_model_stays_the_base():
    # SGLang serves adapters loaded with --lora-paths NAME=PATH by name in lora_path; the
    # model field keeps naming the base model
    request = GenerationRequest(prompt_ids=PROMPT, max_tokens=100, adapter="support-v2")
    async with serve_sglang([CALL_REPLY]) as server:
        async with OpenAICompatibleEngine(server.url, flavor="sglang") as engine:
            _, ids = await collect(engine, request)
    assert ids == CALL_REPLY
    body = server.requests[0]
    assert body["lora_path"] == "support-v2" and body["model"] == "openai/gpt-oss-20b"
