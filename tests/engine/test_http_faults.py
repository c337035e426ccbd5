"""Engine faults end in bounded time, bad answers in typed errors: a local fake server on
127.0.0.1 plays each fault. Every test is itself bounded (``fail_after``), so a hang fails it
instead of stalling the suite."""

from __future__ import annotations

import anyio
import pytest
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import GenerationRequest, OpenAICompatibleEngine
from harmony_agent.errors import (
    EngineProtocolError,
    EngineRequestError,
    EngineTimeoutError,
    EngineUnavailableError,
)

from .fake_openai import serve

pytestmark = pytest.mark.anyio
ENC = load_encoding()
REPLY = ENC.encode("<|channel|>final<|message|>Hello there<|return|>", allowed_special="all")
REQUEST = GenerationRequest(prompt_ids=[200006, 1428, 200008, 12194, 200007], max_tokens=100)
BOUND = 20  # seconds: far above every deadline below, far below a hang


async def collect(engine, request=REQUEST):
    with anyio.fail_after(BOUND):
        return [chunk async for chunk in engine.generate(request)]


def engine_for(server, **options):
    options.setdefault("model", "m")
    options.setdefault("retry_backoff", 0.01)
    return OpenAICompatibleEngine(server.url, **options)


async def test_no_response_headers_ends_at_the_first_token_timeout():
    async with serve(REPLY, ["no_headers"]) as server:
        async with engine_for(server, first_token_timeout=0.5) as engine:
            with pytest.raises(EngineTimeoutError, match="response headers") as caught:
                await collect(engine)
    assert caught.value.settings == ("first_token_timeout",)


async def test_an_error_body_that_never_ends_is_cut_at_the_deadline():
    async with serve(REPLY, ["slow_error:500"]) as server:
        async with engine_for(server, first_token_timeout=0.5, max_retries=1) as engine:
            with pytest.raises(EngineUnavailableError, match="failed with 500: error error"):
                await collect(engine)
    assert len(server.requests) == 2  # a 5xx is still retried, each try bounded


async def test_keep_alive_comments_do_not_count_as_tokens():
    async with serve(REPLY, ["keepalive"]) as server:
        server.interval = 0.05
        async with engine_for(server, first_token_timeout=0.5) as engine:
            with pytest.raises(EngineTimeoutError, match="first token"):
                await collect(engine)


async def test_keep_alive_comments_do_not_reset_the_token_timer():
    async with serve(REPLY, ["keepalive_mid"]) as server:
        server.interval = 0.05
        async with engine_for(server, token_timeout=0.5) as engine:
            with pytest.raises(EngineTimeoutError, match="next token") as caught:
                await collect(engine)
    assert caught.value.settings == ("token_timeout",)


async def test_a_token_every_interval_forever_ends_at_the_turn_deadline():
    async with serve(REPLY, ["drip"]) as server:
        server.interval = 0.1  # each token well within token_timeout
        async with engine_for(server, token_timeout=2, turn_timeout=1.0) as engine:
            with pytest.raises(EngineTimeoutError, match="turn_timeout=1 s"):
                await collect(engine)


async def test_a_stream_that_never_stops_is_cut_past_max_tokens():
    request = GenerationRequest(prompt_ids=[1, 2, 3], max_tokens=30)
    async with serve(REPLY, ["endless"]) as server:
        async with engine_for(server) as engine:
            received = []
            with pytest.raises(EngineProtocolError, match=r"max_tokens=30") as caught:
                with anyio.fail_after(BOUND):
                    async for chunk in engine.generate(request):
                        received += chunk.token_ids
    assert 30 <= len(received) <= 30 + 16
    assert "does not honour max_tokens" in str(caught.value)


async def test_float_token_ids_are_a_typed_error():
    async with serve(REPLY, ["float_ids"]) as server:
        async with engine_for(server) as engine:
            with pytest.raises(EngineProtocolError, match=r"token id 1\.7: ids must be integers"):
                await collect(engine)


async def test_404_html_keeps_the_hint_and_drops_the_page():
    async with serve(REPLY, ["html:404"]) as server:
        async with engine_for(server, model="gpt-oss") as engine:
            with pytest.raises(EngineRequestError) as caught:
                await collect(engine)
    message = str(caught.value)
    assert "\n" not in message and "<" not in message
    assert "an HTML page titled 'Not Found'" in message
    assert "check the base URL" in message and "'gpt-oss'" in message
    assert caught.value.settings == ("base_url", "model")


async def test_plain_json_to_a_streaming_request_says_so():
    async with serve(REPLY, ["json"]) as server:
        async with engine_for(server) as engine:  # stream=True
            with pytest.raises(EngineProtocolError, match="plain JSON, not an event stream"):
                await collect(engine)


async def test_an_overlong_event_line_is_a_clear_error():
    async with serve(REPLY, ["long_line"]) as server:
        server.line_bytes = 64 * 1024
        async with engine_for(server, max_line_bytes=16 * 1024) as engine:
            with pytest.raises(EngineProtocolError, match="line over 16384 bytes"):
                await collect(engine)


async def test_backoff_that_would_pass_the_turn_deadline_is_not_slept():
    async with serve(REPLY, ["status:503"]) as server:
        engine = OpenAICompatibleEngine(
            server.url, model="m", retry_backoff=5.0, max_retries=3, turn_timeout=1.0
        )
        async with engine:
            with pytest.raises(EngineUnavailableError, match="failed with 503"):
                await collect(engine)
    assert len(server.requests) == 1
