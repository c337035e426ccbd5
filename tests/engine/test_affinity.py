"""Router affinity over HTTP, asserted on what loopback stand-ins received: the session
headers per flavor and as named, llm-d's echoed session token, and cache_salt."""

from __future__ import annotations

import base64

import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import GenerationRequest, OpenAICompatibleEngine
from harmony_agent.engine._affinity import LLM_D_SESSION_HEADER, SessionTokens
from harmony_agent.errors import ConfigurationError

from .fake_openai import serve
from .fake_sglang import serve_sglang

pytestmark = pytest.mark.anyio
ENC = load_encoding()
REPLY = ENC.encode("<|channel|>final<|message|>ok<|return|>", allowed_special="all")
# a tool call, then (after its output) the answer: two requests per run
CALL = ENC.encode(
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":1,"b":2}<|call|>',
    allowed_special="all",
)


@tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


REQUEST = GenerationRequest(
    prompt_ids=[200006, 1428, 200008, 12194], max_tokens=64, session_id="s1"
)
SESSION_HEADERS = ("x-session-id", "x-smg-routing-key", "x-session-affinity", "x-user-id")


async def send(engine, request=REQUEST):
    async with engine:
        async for _ in engine.generate(request):
            pass


def sent(headers):
    return {name: headers[name] for name in SESSION_HEADERS if name in headers}


async def test_default_affinity_header_per_flavor():
    async with serve(REPLY) as server:
        await send(OpenAICompatibleEngine(server.url, model="m"))  # vLLM: vllm-router
        await send(OpenAICompatibleEngine(server.url, model="m", flavor="fireworks"))
    assert sent(server.headers[0]) == {"x-session-id": "s1"}
    assert "cache_salt" not in server.requests[0] and "prompt_cache_key" not in server.requests[0]
    # Fireworks keeps its header and its body field
    assert sent(server.headers[1]) == {"x-session-affinity": "s1"}
    assert server.requests[1]["prompt_cache_key"] == "s1"
    async with serve_sglang([REPLY]) as sglang:
        await send(OpenAICompatibleEngine(sglang.url, flavor="sglang"))  # SGLang's gateway
    assert sent(sglang.headers[0]) == {"x-smg-routing-key": "s1"}


async def test_named_affinity_headers_replace_the_flavors():
    async with serve(REPLY) as server:
        # production-stack with --session-key x-user-id
        await send(OpenAICompatibleEngine(server.url, model="m", affinity_headers=["x-user-id"]))
        # several routers in a row (a gateway before vllm-router)
        both = ("X-Session-ID", "X-SMG-Routing-Key")
        await send(OpenAICompatibleEngine(server.url, model="m", affinity_headers=both))
        # none at all
        await send(OpenAICompatibleEngine(server.url, model="m", affinity_headers=()))
        # a request without a session id carries no session header
        no_session = GenerationRequest(prompt_ids=[1, 2], max_tokens=8)
        await send(OpenAICompatibleEngine(server.url, model="m"), no_session)
    assert sent(server.headers[0]) == {"x-user-id": "s1"}
    assert sent(server.headers[1]) == {"x-session-id": "s1", "x-smg-routing-key": "s1"}
    assert sent(server.headers[2]) == {} and sent(server.headers[3]) == {}
    assert len(server.requests) == 4


def test_bad_affinity_settings_say_what_is_wrong():
    with pytest.raises(ConfigurationError, match="must be a list of header names"):
        OpenAICompatibleEngine("http://127.0.0.1:9/v1", affinity_headers="X-Session-ID")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="'x user', which is not an HTTP header name"):
        OpenAICompatibleEngine("http://127.0.0.1:9/v1", affinity_headers=["x user"])
    with pytest.raises(ConfigurationError, match="not an HTTP header name"):
        OpenAICompatibleEngine("http://127.0.0.1:9/v1", affinity_echo="x-token\r\n")


async def test_llm_d_session_token_is_echoed_within_a_run_not_across_runs():
    # llm-d's scheduler before three pods (the stand-in's chunks carry token_ids, as vLLM's
    # do, so the default vLLM flavor reads them)
    async with serve_sglang([CALL, REPLY, CALL, REPLY], pods=3, llm_d=True) as router:
        engine = OpenAICompatibleEngine(router.url, affinity_echo=LLM_D_SESSION_HEADER)
        async with engine:
            agent = Agent(tools=[add], engine=engine)
            first = await agent.run("one")
            second = await agent.run("two")
    assert first.final_text == second.final_text == "ok"
    assert len(router.requests) == 4 and first.run_id != second.run_id
    tokens = [h.get("x-session-token") for h in router.headers]
    # each run's first request carries no token; its second echoes what the router named
    assert tokens[0] is None and tokens[2] is None
    assert base64.b64decode(tokens[1]).decode() == router.served_by[0]
    assert base64.b64decode(tokens[3]).decode() == router.served_by[2]
    # so both turns of a run land on one pod, and the second run was placed afresh
    assert router.served_by[1] == router.served_by[0]
    assert router.served_by[3] == router.served_by[2] != router.served_by[0]
    # the session id still goes along for any router that hashes it
    assert [h["x-session-id"] for h in router.headers] == [first.run_id] * 2 + [second.run_id] * 2


async def test_without_affinity_echo_no_token_goes_back():
    async with serve_sglang([CALL, REPLY], pods=3, llm_d=True) as router:
        async with OpenAICompatibleEngine(router.url) as engine:
            await Agent(tools=[add], engine=engine).run("one")
    assert all("x-session-token" not in h for h in router.headers)
    assert router.served_by[0] != router.served_by[1]  # nothing kept the run on its pod


def test_session_tokens_are_a_bounded_lru():
    tokens = SessionTokens(LLM_D_SESSION_HEADER, limit=2)
    tokens.remember("a", "ta")
    tokens.remember("b", "tb")
    assert tokens.headers("a") == {"x-session-token": "ta"}  # a is now the most recent
    tokens.remember("c", "tc")  # b, the least recently used, is forgotten
    assert len(tokens) == 2 and tokens.headers("b") == {}
    assert tokens.headers("c") == {"x-session-token": "tc"}
    tokens.remember("a", "ta2")  # the router moved the session: the latest token wins
    assert tokens.headers("a") == {"x-session-token": "ta2"}
    tokens.remember(None, "t")
    tokens.remember("d", None)
    assert tokens.headers(None) == {} and tokens.headers("d") == {} and len(tokens) == 2


async def test_cache_salt_is_sent_where_the_server_takes_it():
    async with serve(REPLY) as server:
        await send(OpenAICompatibleEngine(server.url, model="m", cache_salt="tenant-a"))
    assert server.requests[0]["cache_salt"] == "tenant-a"
    async with serve_sglang([REPLY]) as sglang:
        await send(OpenAICompatibleEngine(sglang.url, flavor="sglang", cache_salt="tenant-b"))
    assert sglang.requests[0]["cache_salt"] == "tenant-b"
    with pytest.raises(ConfigurationError, match="fireworks server takes no cache_salt"):
        OpenAICompatibleEngine(server.url, flavor="fireworks", cache_salt="tenant-a")
    with pytest.raises(ConfigurationError, match="non-empty string"):
        OpenAICompatibleEngine(server.url, cache_salt="")
