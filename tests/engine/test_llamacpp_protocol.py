"""LlamaServerEngine against a stand-in that answers in llama-server's documented shapes.

The real llama-server runs in ``test_llamacpp.py`` (``make test-llamacpp``); this file covers the
protocol edges a live tiny model cannot be steered into cheaply (ambiguous UTF-8 gaps, odd
stop types, error bodies), and runs with the core suite.
"""

from __future__ import annotations

import json

import httpx
import pytest
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import GenerationRequest, LlamaServerEngine
from harmony_agent.engine._spec import engine_from_spec
from harmony_agent.errors import (
    ConfigurationError,
    ContextOverflowError,
    EngineError,
    EngineRequestError,
)

ENC = load_encoding()
PROMPT = [200006, 1428, 200008, 12194, 200007, 200006, 173781]
PROPS = {
    "total_slots": 4,
    "default_generation_settings": {"n_ctx": 4096, "params": {}},
    "model_path": "gpt-oss-20b-mxfp4.gguf",
    "build_info": "b0-test",
}


class StandIn:
    """Answers /props, /tokenize and /completion; ``chunks`` are the SSE payloads to send."""

    def __init__(
        self, chunks=None, *, status=200, body=None, vocab_ok=True, props=PROPS, whole=None
    ):
        self.chunks = chunks or []
        self.whole = whole  # the answer to a non-streaming request
        self.status = status
        self.body = body
        self.vocab_ok = vocab_ok
        self.props = props
        self.requests: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/props":
            return httpx.Response(200, json=self.props)
        if path == "/tokenize":
            content = json.loads(request.content)["content"]
            ids = ENC.encode(content, allowed_special="all")
            return httpx.Response(200, json={"tokens": ids if self.vocab_ok else ids[1:]})
        if path != "/completion":
            return httpx.Response(404, json={"error": {"code": 404, "message": "File Not Found"}})
        self.requests.append(json.loads(request.content))
        if self.status != 200:
            return httpx.Response(self.status, json=self.body)
        if self.requests[-1]["stream"] is False:
            return httpx.Response(200, json=self.whole)
        stream = "".join(f"data: {json.dumps(c)}\n\n" for c in self.chunks)
        return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})


def partial(tokens, content, predicted, slot=-1):
    return {
        "content": content,
        "tokens": tokens,
        "stop": False,
        "id_slot": slot,
        "tokens_predicted": predicted,
        "tokens_evaluated": len(PROMPT),
    }


def final(predicted, stop_type="eos", slot=2, cache_n=3):
    return {
        "content": "",
        "tokens": [],
        "stop": True,
        "id_slot": slot,
        "stop_type": stop_type,
        "stopping_word": "",
        "tokens_predicted": predicted,
        "tokens_evaluated": len(PROMPT),
        "tokens_cached": 99,  # the slot's whole KV size: not what was reused
        "timings": {
            "cache_n": cache_n,
            "prompt_n": len(PROMPT) - cache_n,
            "predicted_n": predicted,
        },
    }


def piece(token: int) -> str:
    return ENC.decode([token])


def engine_for(stand_in: StandIn, **kwargs) -> LlamaServerEngine:
    return LlamaServerEngine(
        "http://llama.test:8080", transport=httpx.MockTransport(stand_in), **kwargs
    )


async def collect(engine, **kwargs):
    request = GenerationRequest(
        prompt_ids=PROMPT, max_tokens=kwargs.pop("max_tokens", 50), **kwargs
    )
    return [c async for c in engine.generate(request)]


def ids_of(chunks):
    return [t for c in chunks for t in c.token_ids]


@pytest.fixture
def anyio_backend():
    return "asyncio"


HI = ENC.encode("Hi")  # one token
CHUNKS = [
    partial([200005], "<|channel|>", 1),
    partial(HI, "Hi", 2),
    partial([200002], "", 3),
    final(3),
]


@pytest.mark.anyio
async def test_body_sampling_stop_and_usage():
    stand_in = StandIn(CHUNKS)
    async with engine_for(stand_in) as engine:
        chunks = await collect(engine, temperature=0.0, seed=7)
    assert ids_of(chunks) == [200005, *HI, 200002]
    last = chunks[-1]
    assert (last.finish_reason, last.stop_token_id) == ("stop", 200002)
    assert (last.usage.prompt_tokens, last.usage.output_tokens) == (len(PROMPT), 3)
    assert last.usage.cached_prompt_tokens == 3  # timings.cache_n, not tokens_cached
    body = stand_in.requests[0]
    assert body["prompt"] == PROMPT and body["n_predict"] == 50
    assert body["stream"] and body["return_tokens"] and body["cache_prompt"]
    assert (body["temperature"], body["seed"]) == (0.0, 7)
    # llama-server's own defaults (top_k 40, min_p 0.05, ...) are never left in place
    assert (body["top_p"], body["top_k"], body["min_p"], body["repeat_penalty"]) == (1.0, 0, 0, 1)
    assert engine.context_window == 4096  # the slot's n_ctx from /props


@pytest.mark.anyio
async def test_default_temperature_is_gpt_oss_s():
    stand_in = StandIn(CHUNKS)
    async with engine_for(stand_in) as engine:
        await collect(engine)
    assert stand_in.requests[0]["temperature"] == 1.0 and "seed" not in stand_in.requests[0]


@pytest.mark.anyio
async def test_limit_maps_to_length():
    stand_in = StandIn([partial(HI, "Hi", 1), final(1, stop_type="limit")])
    async with engine_for(stand_in) as engine:
        chunks = await collect(engine, max_tokens=1)
    assert (chunks[-1].finish_reason, chunks[-1].stop_token_id) == ("length", None)


@pytest.mark.anyio
async def test_stop_set_outside_the_gguf_eog_set_is_refused():
    async with engine_for(StandIn(CHUNKS)) as engine:
        with pytest.raises(EngineRequestError, match=r"cannot stop on token ids \[200007\]"):
            await collect(engine, stop_token_ids=(200002, 200007))


@pytest.mark.anyio
async def test_constraint_is_refused_clearly():
    async with engine_for(StandIn(CHUNKS)) as engine:
        with pytest.raises(EngineRequestError, match="not supported by LlamaServerEngine"):
            await collect(engine, constraint={"json": {"type": "object"}})


@pytest.mark.anyio
async def test_one_skipped_id_is_rebuilt_from_the_text():
    first, second = ENC.encode("龘")  # the first alone is an incomplete UTF-8 sequence
    stand_in = StandIn(
        [
            partial(HI, "Hi", 1),
            partial([second], "龘", 3),  # llama-server never streamed `first`
            partial([200002], "", 4),
            final(4),
        ]
    )
    async with engine_for(stand_in) as engine:
        chunks = await collect(engine)
    assert ids_of(chunks) == [*HI, first, second, 200002]


@pytest.mark.anyio
async def test_two_skipped_ids_with_a_unique_split_are_rebuilt():
    ids = ENC.encode("𓀀")  # four byte tokens: three are skipped, one split of 3 bytes exists
    assert len(ids) == 4
    stand_in = StandIn([partial([ids[-1]], "𓀀", 4), partial([200002], "", 5), final(5)])
    async with engine_for(stand_in) as engine:
        chunks = await collect(engine)
    assert ids_of(chunks) == [*ids, 200002]


# 🁀 is f0 9f 81 80: when the model sampled two tokens for f0 9f 81 and then 80, the text
# cannot tell (f0)(9f 81) from (f0 9f)(81): both are vocabulary tokens
AMBIGUOUS = [partial(HI, "Hi", 1), partial([222], "🁀", 4), partial([200002], "", 5), final(5)]


def test_the_ambiguous_split_is_real():
    from harmony_agent.engine.llama_server import _repair, _vocabulary

    by_bytes = _vocabulary()[1]
    assert {b"\xf0", b"\x9f\x81", b"\xf0\x9f", b"\x81"} <= set(by_bytes)
    assert by_bytes[b"\x80"] == 222 and _repair("🁀", [222], 2) is None


@pytest.mark.anyio
async def test_an_ambiguous_gap_is_sampled_again_without_streaming():
    tail = [*ENC.encode("🁀"), 200002]  # what the non-streaming request returns: every id
    stand_in = StandIn(AMBIGUOUS, whole={**final(len(tail), cache_n=8), "tokens": tail})
    async with engine_for(stand_in) as engine:
        chunks = await collect(engine, session_id="s")
    assert ids_of(chunks) == [*HI, *tail]  # the ids before the gap, then the new ones
    streamed, again = stand_in.requests
    assert streamed["stream"] is True and streamed["prompt"] == PROMPT
    assert again["stream"] is False and again["prompt"] == [*PROMPT, *HI]
    assert again["n_predict"] == 50 - 1
    last = chunks[-1]
    assert (last.finish_reason, last.stop_token_id) == ("stop", 200002)
    usage = last.usage  # counted against the original request
    assert (usage.prompt_tokens, usage.output_tokens) == (len(PROMPT), 1 + len(tail))
    assert usage.cached_prompt_tokens == len(PROMPT)  # capped: the rest were sampled ids


@pytest.mark.anyio
async def test_without_the_fallback_a_gap_fails_the_turn():
    async with engine_for(StandIn(AMBIGUOUS), gap_fallback=False) as engine:
        with pytest.raises(EngineError, match=r"did not stream 2 sampled token id\(s\)"):
            await collect(engine)


@pytest.mark.anyio
async def test_ids_lost_at_the_end_are_sampled_again():
    # the second token sampled was an incomplete character and the limit came right after it
    first = ENC.encode("龘")[0]
    stand_in = StandIn(
        [partial(HI, "Hi", 1), final(2, stop_type="limit")],
        whole={**final(1, stop_type="limit"), "tokens": [first]},
    )
    async with engine_for(stand_in) as engine:
        chunks = await collect(engine, max_tokens=2)
    assert ids_of(chunks) == [*HI, first] and chunks[-1].finish_reason == "length"
    assert stand_in.requests[1]["n_predict"] == 1


@pytest.mark.anyio
async def test_non_streaming_gets_every_id():
    whole = {**final(3), "tokens": [200005, *HI, 200002], "content": "<|channel|>Hi"}
    stand_in = StandIn()
    stand_in.chunks = None

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/completion":
            stand_in.requests.append(json.loads(request.content))
            return httpx.Response(200, json=whole)
        return stand_in(request)

    engine = LlamaServerEngine(
        "http://llama.test:8080/v1", stream=False, transport=httpx.MockTransport(handler)
    )
    async with engine:
        chunks = await collect(engine)
    assert engine.base_url == "http://llama.test:8080"  # /v1 (no token ids there) dropped
    assert ids_of(chunks) == [200005, *HI, 200002] and chunks[-1].stop_token_id == 200002
    assert stand_in.requests[0]["stream"] is False


@pytest.mark.anyio
async def test_slot_affinity_sends_back_the_first_id_slot():
    stand_in = StandIn(CHUNKS)  # the final chunk reports id_slot 2
    async with engine_for(stand_in) as engine:
        await collect(engine, session_id="run-a")
        await collect(engine, session_id="run-a")
        await collect(engine, session_id="run-b")
    first, second, other = stand_in.requests
    assert "id_slot" not in first and second["id_slot"] == 2 and "id_slot" not in other
    assert engine.slot_of("run-a") == 2


@pytest.mark.anyio
async def test_chunks_without_token_ids_are_not_llama_server():
    stand_in = StandIn([{"content": "Hi", "stop": False}, final(1)])
    async with engine_for(stand_in) as engine:
        with pytest.raises(EngineRequestError, match="without token ids"):
            await collect(engine)


@pytest.mark.anyio
async def test_a_server_without_props_is_not_llama_server():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    engine = LlamaServerEngine("http://vllm.test:8000", transport=httpx.MockTransport(handler))
    async with engine:
        with pytest.raises(EngineRequestError, match="is not a llama-server"):
            await collect(engine)


@pytest.mark.anyio
async def test_a_gguf_that_is_not_gpt_oss_is_named():
    async with engine_for(StandIn(CHUNKS, vocab_ok=False)) as engine:
        with pytest.raises(EngineRequestError, match=r"gpt-oss-20b-mxfp4.gguf\) is not gpt-oss"):
            await collect(engine)


@pytest.mark.anyio
async def test_context_overflow_error_body():
    body = {
        "error": {
            "code": 400,
            "message": "request exceeds the context",
            "type": "exceed_context_size_error",
        }
    }
    async with engine_for(StandIn(status=400, body=body)) as engine:
        with pytest.raises(ContextOverflowError, match="larger -c"):
            await collect(engine)


@pytest.mark.anyio
async def test_prompt_longer_than_the_slot_is_refused_before_sending():
    stand_in = StandIn(CHUNKS, props={**PROPS, "default_generation_settings": {"n_ctx": 4}})
    async with engine_for(stand_in) as engine:
        with pytest.raises(ContextOverflowError, match="slots hold 4"):
            await collect(engine)
    assert stand_in.requests == []


def test_bad_settings_are_named():
    with pytest.raises(ConfigurationError, match="must start with http"):
        LlamaServerEngine("127.0.0.1:8080")
    with pytest.raises(ConfigurationError, match=r"unknown sampling settings \['top_a'\]"):
        LlamaServerEngine(sampling={"top_a": 1.0})


def test_spec_forms():
    from harmony_agent.engine.llamacpp import LlamaCppEngine

    server = engine_from_spec("llama-server:http://127.0.0.1:8081")
    assert isinstance(server, LlamaServerEngine) and server.base_url == "http://127.0.0.1:8081"
    local = engine_from_spec("llamacpp:/models/gpt-oss-20b-mxfp4.gguf")
    assert isinstance(local, LlamaCppEngine) and str(local.model_path).endswith("mxfp4.gguf")
    with pytest.raises(ConfigurationError, match="llamacpp: needs the path"):
        engine_from_spec("llamacpp:")
    with pytest.raises(ConfigurationError, match=r"llama-server:http://HOST:PORT, llamacpp:PATH"):
        engine_from_spec("ollama:gpt-oss")


@pytest.mark.anyio
@pytest.mark.parametrize("plan", ["status:404", "ok"])
async def test_an_openai_server_on_loopback_is_not_taken_for_llama_server(plan):
    """A real HTTP server on 127.0.0.1 that speaks OpenAI completions (404 or an SSE stream
    where llama-server has /props)."""
    from .fake_openai import serve

    async with serve([1, 2, 200002], [plan]) as fake:
        root = fake.url.removesuffix("/v1")
        async with LlamaServerEngine(root, max_retries=0) as engine:
            with pytest.raises(EngineRequestError, match="is not a llama-server"):
                await collect(engine)
