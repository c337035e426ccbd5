"""httpx's exceptions and the server's error statuses, mapped to ours in one place.

:func:`map_transport_errors` wraps one HTTP attempt (as httpx maps httpcore's exceptions in
``map_httpcore_exceptions``): most specific first, each raised ``from`` the original. A
failure worth another try (nothing streamed yet: refused, reset, 5xx, 429) comes out wrapped
in :class:`Retryable`, which only the engine's retry loop sees.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from typing import TypeVar

import httpx
from harmony_agent.errors import (
    EngineError,
    EngineProtocolError,
    EngineRequestError,
    EngineTimeoutError,
    EngineUnavailableError,
    HarmonyAgentError,
)

from ._sse import SSELineTooLong

__all__ = [
    "RETRY_STATUS",
    "Retryable",
    "map_transport_errors",
    "server_message",
    "status_error",
    "with_settings",
]

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_MESSAGE_CHARS = 300
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)

E = TypeVar("E", bound=HarmonyAgentError)


class Retryable(Exception):
    """A failure before the first token: worth another try."""

    def __init__(self, error: EngineError) -> None:
        super().__init__(str(error))
        self.error = error


def with_settings(error: E, *settings: str) -> E:
    """``error`` naming the settings (Python parameter names) that fix it."""
    error.settings = settings
    return error


@contextlib.contextmanager
def map_transport_errors(url: str, sampled: Sequence[int]) -> Iterator[None]:
    """httpx's failures of a request to ``url`` as our errors; ``sampled`` is what it has
    streamed so far (a broken connection is retried only before the first token)."""
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise Retryable(
            with_settings(
                EngineTimeoutError(f"connecting to {url} timed out; is the host reachable?"),
                "base_url",
            )
        ) from exc
    except httpx.ConnectError as exc:
        raise Retryable(
            with_settings(
                EngineUnavailableError(
                    f"cannot connect to {url}: {exc}. Is the server running and the URL right? "
                    "(vLLM: `vllm serve openai/gpt-oss-20b`, then the base URL "
                    "http://HOST:8000/v1)"
                ),
                "base_url",
            )
        ) from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        error = EngineError(
            f"the connection to {url} broke after {len(sampled)} tokens "
            f"({type(exc).__name__}: {exc}); check the server's logs"
        )
        if not sampled:
            raise Retryable(error) from exc
        raise error from exc
    except httpx.TimeoutException as exc:  # write or pool: the read deadlines are ours
        raise EngineTimeoutError(
            f"the request to {url} timed out ({type(exc).__name__}: {exc})"
        ) from exc
    except httpx.DecodingError as exc:
        raise EngineProtocolError(
            f"{url} sent a body that cannot be decoded ({exc}); is it an OpenAI-compatible server?"
        ) from exc
    except httpx.HTTPError as exc:
        raise EngineError(f"the request to {url} failed: {type(exc).__name__}: {exc}") from exc
    except SSELineTooLong as exc:
        raise EngineProtocolError(
            f"{url} sent an event-stream line over {exc.max_line} bytes after "
            f"{len(sampled)} tokens; that is no completion stream (raise max_line_bytes if "
            "the server really sends such lines)"
        ) from exc


def server_message(body: bytes, content_type: str = "") -> str:
    """One short line saying what an error body said: its JSON message, the title of an
    HTML page (never the page), or the start of its text."""
    text = body.decode("utf-8", errors="replace")
    if "html" in content_type.lower() or text.lstrip()[:1] == "<":
        title = _TITLE.search(body)
        name = _one_line(title.group(1).decode("utf-8", errors="replace")) if title else ""
        return f"an HTML page titled {name!r}" if name else "an HTML page"
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return _one_line(text) or "an empty body"
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    return _one_line(str(error))


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 1] + "…"


def status_error(
    url: str,
    status: int,
    body: bytes,
    content_type: str,
    model: str | None,
    adapter: tuple[str, str] | None = None,
) -> EngineError:
    """The error for a non-200 answer, with what to check first. ``adapter``: the LoRA
    adapter the request named and what to check when the server does not know it."""
    message = server_message(body, content_type)
    # a 404 of the route itself (a wrong base URL: "Not Found", a web server's page) is not
    # about the adapter
    route_missing = message in ("Not Found", "an empty body") or message.startswith("an HTML")
    if adapter is not None and (
        (status == 404 and not route_missing)
        or (status == 400 and "does not exist" in message.lower())
    ):
        name, hint = adapter
        return with_settings(
            EngineRequestError(
                f"{url} does not serve the LoRA adapter {name!r} ({status}: {message}); {hint}"
            ),
            "adapter",
        )
    if status in (401, 403):
        return with_settings(
            EngineRequestError(
                f"{url} refused the credentials ({status}: {message}); check the API key "
                "(api_key or api_key_env)"
            ),
            "api_key_env",
        )
    if status == 404:
        named = f" {model!r}" if model else ""
        return with_settings(
            EngineRequestError(
                f"{url} answered 404 ({message}); check the base URL (it ends in /v1) and "
                f"the model name{named}"
            ),
            "base_url",
            "model",
        )
    if status in RETRY_STATUS:
        return EngineUnavailableError(f"{url} failed with {status}: {message}")
    return EngineRequestError(f"{url} rejected the request ({status}): {message}")
