"""httpx's exceptions and error statuses mapped to ours in one place; the flavors as data."""

from __future__ import annotations

import httpx
import pytest
from harmony_agent.engine._errors import (
    Retryable,
    map_transport_errors,
    server_message,
    status_error,
)
from harmony_agent.engine._flavor import FIREWORKS, FLAVORS, VLLM, Flavor
from harmony_agent.engine._sse import SSELineTooLong
from harmony_agent.engine._wire import check_token_ids
from harmony_agent.engine.base import GenerationRequest
from harmony_agent.errors import (
    EngineError,
    EngineProtocolError,
    EngineRequestError,
    EngineTimeoutError,
    EngineUnavailableError,
)

URL = "http://127.0.0.1:9/v1/completions"
REQ = httpx.Request("POST", URL)


def mapped(exc, sampled=()):
    with pytest.raises(BaseException) as caught, map_transport_errors(URL, list(sampled)):
        raise exc
    return caught.value


@pytest.mark.parametrize(
    ("exc", "retried", "kind", "text"),
    [
        (
            httpx.ConnectError("refused", request=REQ),
            True,
            EngineUnavailableError,
            "cannot connect",
        ),
        (httpx.ConnectTimeout("slow", request=REQ), True, EngineTimeoutError, "connecting"),
        (httpx.ReadError("reset", request=REQ), True, EngineError, "broke after 0 tokens"),
        (httpx.RemoteProtocolError("eof", request=REQ), True, EngineError, "RemoteProtocolError"),
        (httpx.WriteTimeout("w", request=REQ), False, EngineTimeoutError, "WriteTimeout"),
        (httpx.PoolTimeout("p", request=REQ), False, EngineTimeoutError, "PoolTimeout"),
        (httpx.DecodingError("gzip", request=REQ), False, EngineProtocolError, "decoded"),
        (httpx.TooManyRedirects("loop", request=REQ), False, EngineError, "TooManyRedirects"),
        (SSELineTooLong(1024), False, EngineProtocolError, "over 1024 bytes"),
    ],
)
def test_transport_errors_map_to_ours(exc, retried, kind, text):
    raised = mapped(exc)
    assert raised.__cause__ is exc  # raised from the original, for the traceback
    assert isinstance(raised, Retryable) is retried
    error = raised.error if isinstance(raised, Retryable) else raised
    assert type(error) is kind and text in str(error)


def test_a_broken_connection_after_tokens_is_not_retried():
    error = mapped(httpx.ReadError("reset", request=REQ), sampled=[1, 2, 3])
    assert type(error) is EngineError and "broke after 3 tokens" in str(error)


def test_our_errors_pass_through():
    error = EngineRequestError("mine")
    assert mapped(error) is error


def test_server_message_forms():
    assert server_message(b'{"error": {"message": "bad  model\\n name"}}') == "bad model name"
    assert server_message(b'{"detail": "nope"}', "application/json") == "nope"
    assert server_message(b"") == "an empty body"
    assert server_message(b"plain\ntext") == "plain text"
    html = b"<html><head><title>\n 502 Bad\n Gateway </title></head><body>x</body></html>"
    assert server_message(html, "text/html") == "an HTML page titled '502 Bad Gateway'"
    assert server_message(b"<html><body>no title</body></html>") == "an HTML page"
    assert len(server_message(b"x" * 10_000)) == 300


def test_status_errors_say_what_to_check():
    e401 = status_error(URL, 401, b'{"error": "no key"}', "application/json", None)
    assert isinstance(e401, EngineRequestError) and "check the API key" in str(e401)
    assert e401.settings == ("api_key_env",) and "--" not in str(e401)
    e404 = status_error(URL, 404, b"<h1>x</h1>", "text/html", "m")
    assert "check the base URL" in str(e404) and "'m'" in str(e404)
    assert isinstance(status_error(URL, 503, b"", "", None), EngineUnavailableError)
    assert isinstance(status_error(URL, 422, b"", "", None), EngineRequestError)


def test_token_ids_are_checked():
    assert check_token_ids([0, 200002, 201087], "s") == [0, 200002, 201087]
    for bad in (1.7, 200002.0, -1, 201088, True, "5", None):
        with pytest.raises(EngineProtocolError, match="ids must be integers"):
            check_token_ids([1, bad], "s")


def test_flavors_are_data():
    request = GenerationRequest(
        prompt_ids=[1, 2], max_tokens=5, session_id="s", request_id="r", constraint={"json": {}}
    )
    vllm = VLLM.body(request, "m", stream=True)
    assert vllm["stop_token_ids"] == [200002, 200012] and vllm["request_id"] == "r"
    assert vllm["stream_options"] == {"include_usage": True} and vllm["structured_outputs"]
    assert "stream_options" not in VLLM.body(request, "m", stream=False)
    fireworks = FIREWORKS.body(request, "m", stream=True)
    assert fireworks["stop"] == ["<|return|>", "<|call|>"] and fireworks["raw_output"] is True
    assert fireworks["prompt_cache_key"] == "s" and "request_id" not in fireworks
    assert FIREWORKS.headers(request) == {"x-session-affinity": "s"}
    assert set(FLAVORS) == {"vllm", "fireworks", "sglang"}
    # a new server is a value, not a branch
    other = Flavor(name="other", stop="ids", fixed={"return_token_ids": True})
    assert other.body(request, "m", stream=True)["return_token_ids"] is True
