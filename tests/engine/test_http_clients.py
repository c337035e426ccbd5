"""Both HTTP clients of the engine keep the same guarantees: aiohttp (the default on asyncio)
and httpx (with an httpx transport). Events that arrived together come out as one chunk."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import GenerationRequest, OpenAICompatibleEngine
from harmony_agent.engine._http import AiohttpClient, HttpxClient
from harmony_agent.errors import EngineError, EngineTimeoutError, EngineUnavailableError

from .fake_openai import serve

pytestmark = pytest.mark.anyio
ENC = load_encoding()
REPLY = ENC.encode("<|channel|>final<|message|>Hello there<|return|>", allowed_special="all")
REQUEST = GenerationRequest(prompt_ids=[200006, 1428, 200008, 12194, 200007], max_tokens=100)
CLIENTS = {"aiohttp": lambda: None, "httpx": httpx.AsyncHTTPTransport}


async def collect(engine, request=REQUEST):
    with anyio.fail_after(20):
        return [chunk async for chunk in engine.generate(request)]


def engine_for(server, client: str, **options) -> OpenAICompatibleEngine:
    return OpenAICompatibleEngine(
        server.url, model="m", retry_backoff=0.01, transport=CLIENTS[client](), **options
    )


@pytest.mark.parametrize("client", CLIENTS)
async def test_each_client_streams_the_ids_and_is_the_one_chosen(client):
    async with serve(REPLY) as server:
        async with engine_for(server, client) as engine:
            chunks = await collect(engine)
            chosen = type(engine._client)
    assert [t for c in chunks for t in c.token_ids] == REPLY
    assert chunks[-1].stop_token_id == 200002 and chunks[-1].usage is not None
    assert chosen is (AiohttpClient if client == "aiohttp" else HttpxClient)


@pytest.mark.parametrize("client", CLIENTS)
async def test_each_client_retries_a_reset_before_the_first_token(client):
    async with serve(REPLY, ["reset_first", "ok"]) as server:
        async with engine_for(server, client) as engine:
            chunks = await collect(engine)
    assert chunks[-1].finish_reason == "stop" and len(server.requests) == 2


@pytest.mark.parametrize("client", CLIENTS)
async def test_each_client_fails_a_reset_mid_stream(client):
    async with serve(REPLY, ["reset", "ok"]) as server:
        async with engine_for(server, client) as engine:
            with pytest.raises(EngineError, match=r"broke after 2 tokens|without a finish"):
                await collect(engine)
    assert len(server.requests) == 1


@pytest.mark.parametrize("client", CLIENTS)
async def test_each_client_keeps_the_token_timeout(client):
    async with serve(REPLY, ["keepalive_mid"]) as server:
        server.interval = 0.05
        async with engine_for(server, client, token_timeout=0.5) as engine:
            with pytest.raises(EngineTimeoutError, match="next token") as caught:
                await collect(engine)
    assert caught.value.settings == ("token_timeout",)


@pytest.mark.parametrize("client", CLIENTS)
async def test_each_client_says_when_nothing_listens(client):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = OpenAICompatibleEngine(
        f"http://127.0.0.1:{port}/v1",
        model="m",
        max_retries=1,
        retry_backoff=0.01,
        transport=CLIENTS[client](),
    )
    async with engine:
        with pytest.raises(EngineUnavailableError, match=r"cannot connect to .* Is the server"):
            await collect(engine)


async def test_events_that_arrived_together_are_one_chunk():
    def event(i: int, token: int) -> bytes:
        last = i == len(REPLY) - 1
        choice = {"token_ids": [token], "finish_reason": "stop" if last else None}
        return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"

    body = b"".join(event(i, t) for i, t in enumerate(REPLY)) + b"data: [DONE]\n\n"
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body
        )
    )
    engine = OpenAICompatibleEngine(
        "http://127.0.0.1:9/v1", model="m", context_window=4096, transport=transport
    )
    async with engine:
        chunks = await collect(engine)
    # one network read held every event: the ids before the finish are one chunk
    assert [list(c.token_ids) for c in chunks] == [REPLY[:-1], REPLY[-1:]]
