"""OpenAICompatibleEngine against local fake servers: streaming, faults, error mapping."""

from __future__ import annotations

import socket
import time

import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import GenerationRequest, OpenAICompatibleEngine
from harmony_agent.errors import (
    ConfigurationError,
    EngineError,
    EngineRequestError,
    EngineTimeoutError,
    EngineUnavailableError,
)

from .fake_openai import serve

pytestmark = pytest.mark.anyio
ENC = load_encoding()
CALL_REPLY = ENC.encode(
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
    allowed_special="all",
)
REQUEST = GenerationRequest(
    prompt_ids=[200006, 1428, 200008, 12194, 200007, 200006, 173781],
    max_tokens=100,
    session_id="s1",
)


async def collect(engine, request=REQUEST):
    chunks = []
    async for chunk in engine.generate(request):
        chunks.append(chunk)
    return chunks


async def test_streaming_ids_stop_and_usage():
    async with serve(CALL_REPLY) as server:
        async with OpenAICompatibleEngine(server.url) as engine:
            chunks = await collect(engine)
    ids = [t for c in chunks for t in c.token_ids]
    assert ids == CALL_REPLY and ids[-1] == 200012
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.stop_token_id == 200012
    assert last.usage.cached_prompt_tokens == 7 and last.usage.prompt_tokens == 7
    assert all(c.finish_reason is None for c in chunks[:-1])
    body = server.requests[0]
    assert body["model"] == "fake-model"  # asked /models for the only model
    assert body["prompt"] == list(REQUEST.prompt_ids) and body["stream"] is True
    assert body["return_token_ids"] is True and body["stop_token_ids"] == [200002, 200012]
    assert body["max_tokens"] == 100 and body["skip_special_tokens"] is False
    assert server.headers[0]["x-session-id"] == "s1"


async def test_non_streaming_and_length():
    async with serve(CALL_REPLY, ["json"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m", stream=False)
        chunks = await collect(engine, GenerationRequest(prompt_ids=[1, 2], max_tokens=5))
        await engine.aclose()
    assert len(chunks) == 1 and chunks[0].token_ids == tuple(CALL_REPLY[:5])
    assert chunks[0].finish_reason == "length" and chunks[0].stop_token_id is None


async def test_stop_token_in_an_earlier_chunk_is_not_added_twice():
    # the model's own end-of-sequence id ended it (no stop ids asked for), and the chunk with
    # the finish reason carries no tokens: the stop token is the one already streamed
    request = GenerationRequest(prompt_ids=[1, 2], max_tokens=100, stop_token_ids=())
    async with serve(CALL_REPLY, ["eos_apart"]) as server:
        async with OpenAICompatibleEngine(server.url) as engine:
            chunks = await collect(engine, request)
    assert [t for c in chunks for t in c.token_ids] == CALL_REPLY
    assert (chunks[-1].finish_reason, chunks[-1].stop_token_id) == ("stop", 200012)
    assert chunks[-1].token_ids == ()


async def test_fireworks_flavour_puts_the_stop_token_back(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sekret")
    async with serve(CALL_REPLY, ["fireworks"]) as server:
        engine = OpenAICompatibleEngine(
            server.url, model="accounts/x/gpt-oss-20b", api_key_env="FAKE_KEY", flavor="fireworks"
        )
        chunks = await collect(engine)
        await engine.aclose()
    ids = [t for c in chunks for t in c.token_ids]
    assert ids == CALL_REPLY and chunks[-1].stop_token_id == 200012
    body, headers = server.requests[0], server.headers[0]
    assert body["stop"] == ["<|return|>", "<|call|>"] and body["raw_output"] is True
    assert body["prompt_cache_key"] == "s1" and headers["x-session-affinity"] == "s1"
    assert headers["authorization"] == "Bearer sekret"


async def test_missing_stop_is_inferred_from_the_whole_completion():
    # no stop token and no stop_reason: a completion whose last message addresses a tool
    # ended on <|call|>; its header streamed chunks before the finish reason did
    async with serve(CALL_REPLY, ["fireworks_bare"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m", flavor="fireworks")
        chunks = await collect(engine)
        await engine.aclose()
    assert [t for c in chunks for t in c.token_ids] == CALL_REPLY
    assert chunks[-1].stop_token_id == 200012


async def test_retries_5xx_before_the_first_token():
    async with serve(CALL_REPLY, ["status:503", "status:502", "ok"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m", retry_backoff=0.01)
        chunks = await collect(engine)
        await engine.aclose()
    assert len(server.requests) == 3 and chunks[-1].stop_token_id == 200012


async def test_gives_up_after_max_retries():
    async with serve(CALL_REPLY, ["status:500"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m", max_retries=2, retry_backoff=0.01)
        with pytest.raises(EngineUnavailableError, match="failed with 500: fake failure 500"):
            await collect(engine)
        await engine.aclose()
    assert len(server.requests) == 3


async def test_4xx_is_not_retried_and_names_the_cause():
    async with serve(CALL_REPLY, ["status:400"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m", retry_backoff=0.01)
        with pytest.raises(
            EngineRequestError, match=r"rejected the request \(400\): fake failure 400"
        ):
            await collect(engine)
        await engine.aclose()
    assert len(server.requests) == 1


async def test_404_hints_at_the_model_name():
    async with serve(CALL_REPLY, ["status:404"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="wrong-model")
        with pytest.raises(EngineRequestError, match="model name 'wrong-model'"):
            await collect(engine)
        await engine.aclose()


async def test_reset_before_the_first_token_is_retried():
    async with serve(CALL_REPLY, ["reset_first", "ok"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m", retry_backoff=0.01)
        chunks = await collect(engine)
        await engine.aclose()
    assert chunks[-1].finish_reason == "stop" and len(server.requests) == 2


async def test_reset_mid_stream_is_an_error_not_a_retry():
    async with serve(CALL_REPLY, ["reset", "ok"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m", retry_backoff=0.01)
        with pytest.raises(EngineError, match=r"broke after 2 tokens|without a finish reason"):
            await collect(engine)
        await engine.aclose()
    assert len(server.requests) == 1


async def test_refused_connection():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = OpenAICompatibleEngine(
        f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, retry_backoff=0.01
    )
    with pytest.raises(EngineUnavailableError, match="cannot connect"):
        await collect(engine)
    await engine.aclose()


async def test_stall_before_the_first_token_times_out():
    async with serve(CALL_REPLY, ["stall_first"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m", first_token_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(EngineTimeoutError, match="first token"):
            await collect(engine)
        assert time.monotonic() - started < 5
        await engine.aclose()


async def test_stall_between_tokens_times_out():
    async with serve(CALL_REPLY, ["stall_mid"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m", token_timeout=0.5)
        with pytest.raises(EngineTimeoutError, match="next token"):
            await collect(engine)
        await engine.aclose()


async def test_server_without_token_ids():
    async with serve(CALL_REPLY, ["text_only"]) as server:
        engine = OpenAICompatibleEngine(server.url, model="m")
        with pytest.raises(EngineRequestError, match="return_token_ids"):
            await collect(engine)
        await engine.aclose()


async def test_several_models_need_a_choice():
    async with serve(CALL_REPLY) as server:
        server.models = ["a", "b"]
        engine = OpenAICompatibleEngine(server.url)
        with pytest.raises(ConfigurationError, match="serves 2 models"):
            await collect(engine)
        await engine.aclose()


async def test_bad_configuration():
    with pytest.raises(ConfigurationError, match="http://"):
        OpenAICompatibleEngine("localhost:8000")
    with pytest.raises(ConfigurationError, match="NOT_SET_ANYWHERE is not set"):
        OpenAICompatibleEngine("http://x/v1", api_key_env="NOT_SET_ANYWHERE")


async def test_closing_early_closes_the_connection():
    async with serve(CALL_REPLY) as server:
        engine = OpenAICompatibleEngine(server.url, model="m")
        async for chunk in engine.generate(REQUEST):  # noqa: B007
            break
        await engine.aclose()
    assert chunk.token_ids


@tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


async def test_agent_over_http():
    final = ENC.encode("<|channel|>final<|message|>5<|return|>", allowed_special="all")
    async with serve(CALL_REPLY) as server:
        async with OpenAICompatibleEngine(server.url) as engine:
            server.then = [CALL_REPLY, final]  # the call, then the answer
            result = await Agent(tools=[add], engine=engine).run("2+3")
    assert result.final_text == "5" and result.tool_calls[0].output == "5"
    first, second = server.requests[0]["prompt"], server.requests[1]["prompt"]
    assert second[: len(first) + len(CALL_REPLY)] == first + CALL_REPLY
    assert result.usage.cache_reported and result.usage.cached_prompt_tokens == 14
