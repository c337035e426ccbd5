"""VLLMEngine (in-process) and OpenAICompatibleEngine against a real vLLM server, on a tiny
random gpt-oss with planted chains. Runs in the vLLM environment: ``make test-vllm``."""

from __future__ import annotations

from contextlib import aclosing
from typing import ClassVar

import anyio
import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import GenerationRequest
from harmony_agent.errors import MaxTurnsError

from .tiny_gptoss import CALL_TEXT, CHAIN_STOP_CALL, CHAIN_STOP_RETURN
from .vllm_server import CPU_ARGS
from .vllm_server import vllm_server as serve_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ENC = load_encoding()
HEADER = [200006, 1428, 200008, 12194, 200007]  # <|start|>user<|message|>hi<|end|>


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
async def engine(tiny_model):
    from harmony_agent.engine.vllm import VLLMEngine

    class Recording(VLLMEngine):
        prompts: ClassVar[list[list[int]]] = []

        async def generate(self, request):
            self.prompts.append(list(request.prompt_ids))
            async with aclosing(super().generate(request)) as chunks:
                async for chunk in chunks:
                    yield chunk

    eng = Recording(str(tiny_model), **CPU_ARGS)
    await eng.start()
    yield eng
    await eng.aclose()


async def collect(engine, prompt, max_tokens=40):
    chunks = []
    async for chunk in engine.generate(
        GenerationRequest(prompt_ids=prompt, max_tokens=max_tokens, temperature=0.0)
    ):
        chunks.append(chunk)
    return chunks


@pytest.mark.anyio
async def test_streams_and_stops_on_call(engine):
    chunks = await collect(engine, [*HEADER, 1000])
    ids = [t for c in chunks for t in c.token_ids]
    assert ids == CHAIN_STOP_CALL[1:]  # 1001..1009, <|call|> included
    assert len(chunks) > 1 and all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert (last.finish_reason, last.stop_token_id) == ("stop", 200012)
    assert last.usage.prompt_tokens == 6 and last.usage.output_tokens == 10


@pytest.mark.anyio
async def test_stops_on_return(engine):
    chunks = await collect(engine, [*HEADER, 2000])
    assert [t for c in chunks for t in c.token_ids] == CHAIN_STOP_RETURN[1:]
    assert chunks[-1].stop_token_id == 200002


@pytest.mark.anyio
async def test_length_finish(engine):
    chunks = await collect(engine, [*HEADER, 1000], max_tokens=4)
    assert [t for c in chunks for t in c.token_ids] == [1001, 1002, 1003, 1004]
    assert chunks[-1].finish_reason == "length" and chunks[-1].stop_token_id is None


@pytest.mark.anyio
async def test_abort_mid_stream(engine):
    request = GenerationRequest(
        prompt_ids=[*HEADER, 17, 18, 19], max_tokens=1000, temperature=1.0, seed=1
    )
    seen = 0
    async with aclosing(engine.generate(request)) as chunks:
        async for chunk in chunks:
            seen += len(chunk.token_ids)
            if seen >= 3:
                break
    processor = engine._llm.output_processor
    with anyio.fail_after(10):
        while processor.get_num_unfinished_requests():
            await anyio.sleep(0.05)
    assert 3 <= seen < 1000


@pytest.mark.anyio
async def test_two_concurrent_requests(engine):
    results = {}

    async def one(name, prompt):
        results[name] = [t for c in await collect(engine, prompt) for t in c.token_ids]

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "call", [*HEADER, 1000])
        tg.start_soon(one, "return", [*HEADER, 2000])
    assert results == {"call": CHAIN_STOP_CALL[1:], "return": CHAIN_STOP_RETURN[1:]}


calls = []
# long enough that the first prompt fills whole KV blocks (128 tokens on vLLM's CPU backend)
INSTRUCTIONS = "You answer questions about cities. " + " ".join(
    f"Rule {i}: be precise, cite the tool, and keep the answer short." for i in range(20)
)


@tool
def lookup(city: str) -> dict:
    """Population of a city."""
    calls.append(city)
    return {"city": city, "population": 717_710}


@pytest.mark.anyio
async def test_agent_loop_on_real_vllm_output(engine):
    engine.prompts.clear()
    agent = Agent(
        INSTRUCTIONS,
        tools=[lookup],
        engine=engine,
        reasoning_effort="low",
        temperature=0.0,
        max_turns=2,
        conversation_start_date="2026-01-01",
    )
    events = []
    with pytest.raises(MaxTurnsError):  # the planted chain calls again on every turn
        async for event in agent.stream("How many people live in Oslo?"):
            events.append(event)
    assert calls[:2] == ["Oslo", "Oslo"]
    call = next(e for e in events if e.type == "tool_call")
    assert (call.recipient, call.arguments) == ("functions.lookup", {"city": "Oslo"})
    result = next(e for e in events if e.type == "tool_result")
    assert result.ok and result.output == '{"city":"Oslo","population":717710}'
    first, second = engine.prompts
    sampled = ENC.encode(CALL_TEXT, allowed_special="all")
    assert second[: len(first) + len(sampled)] == first + sampled  # token for token
    assert ENC.decode(second[len(first) + len(sampled) :]).startswith(
        '<|start|>functions.lookup to=assistant<|channel|>commentary<|message|>{"city":"Oslo"'
    )
    turns = [e for e in events if e.type == "turn_finished"]
    print(
        f"cached prompt tokens per turn: {[t.cached_prompt_tokens for t in turns]} "
        f"of {[t.prompt_tokens for t in turns]}"
    )
    assert turns[1].cached_prompt_tokens is not None
    # vLLM caches whole blocks (128 tokens on CPU): every full block of turn 1 is reused
    assert len(first) >= 256 and turns[1].cached_prompt_tokens >= (len(first) // 128) * 128


@pytest.fixture(scope="module")
def vllm_server(tiny_model, engine):  # after the in-process tests: one vLLM at a time is enough
    with serve_vllm(str(tiny_model)) as url:
        yield url


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False])
async def test_server_through_the_http_engine(vllm_server, stream):
    from harmony_agent.engine import OpenAICompatibleEngine

    async with OpenAICompatibleEngine(vllm_server, stream=stream) as http:
        chunks = await collect(http, [*HEADER, 1000])
        assert [t for c in chunks for t in c.token_ids] == CHAIN_STOP_CALL[1:]
        assert (chunks[-1].finish_reason, chunks[-1].stop_token_id) == ("stop", 200012)
        if stream:
            assert len(chunks) > 1
        length = await collect(http, [*HEADER, 1000], max_tokens=3)
        assert length[-1].finish_reason == "length"
        assert [t for c in length for t in c.token_ids] == [1001, 1002, 1003]


@pytest.mark.anyio
async def test_agent_through_the_server_reports_cached_tokens(vllm_server):
    from harmony_agent.engine import OpenAICompatibleEngine

    calls.clear()
    async with OpenAICompatibleEngine(vllm_server) as http:
        agent = Agent(
            INSTRUCTIONS,
            tools=[lookup],
            engine=http,
            temperature=0.0,
            max_turns=2,
            conversation_start_date="2026-01-01",
        )
        events = []
        with pytest.raises(MaxTurnsError):
            async for event in agent.stream("How many people live in Oslo?"):
                events.append(event)
    assert calls == ["Oslo", "Oslo"]
    turns = [e for e in events if e.type == "turn_finished"]
    print(
        f"server: cached prompt tokens per turn: {[t.cached_prompt_tokens for t in turns]} "
        f"of {[t.prompt_tokens for t in turns]}"
    )
    assert turns[1].cached_prompt_tokens is not None and turns[1].cached_prompt_tokens > 0
