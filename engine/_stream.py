"""One HTTP attempt's answer, read under deadlines: headers, error bodies, the event stream.

:class:`Clock` holds the deadlines of one attempt — the first id, the next id, the whole
turn — and the count of ids against the request's ``max_tokens``. Every wait on the network
here runs in a cancel scope whose deadline the clock gives, so no server can hold a turn
longer than the settings say, whatever it sends (nothing, keep-alive comments, an endless
body, a token now and then).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import anyio
from harmony_agent.errors import EngineProtocolError, EngineRequestError, EngineTimeoutError

from ._errors import with_settings
from ._http import Answer, HttpClient
from ._sse import SSEFramer
from ._wire import Delta, parse_json, token_ids, token_logprobs

__all__ = ["ERROR_BODY_BYTES", "Clock", "error_body", "send", "stream_deltas", "whole_delta"]

#: the most of an error body that is read (it is only quoted, in one line)
ERROR_BODY_BYTES = 64 * 1024


class Clock:
    """The deadlines and the id count of one attempt."""

    def __init__(
        self,
        where: str,
        *,
        first_token_timeout: float,
        token_timeout: float,
        turn_timeout: float | None,
        turn_deadline: float,
        max_ids: int,
        max_tokens: int,
    ) -> None:
        self.where = where
        self.first_token_timeout = first_token_timeout
        self.token_timeout = token_timeout
        self.turn_timeout = turn_timeout
        self.turn_deadline = turn_deadline
        self.max_ids = max_ids
        self.max_tokens = max_tokens
        self.token_deadline = anyio.current_time() + first_token_timeout
        self.tokens = 0

    def deadline(self) -> float:
        return min(self.token_deadline, self.turn_deadline)

    def sampled(self, count: int) -> None:
        """``count`` new ids arrived: the next one has ``token_timeout``; past ``max_ids``
        the server is cut off (it does not honour ``max_tokens``)."""
        if count:
            self.count(count)
            self.progress()

    def count(self, count: int) -> None:
        """:meth:`sampled` without restarting the timer (the caller does it once for all
        the events of one network read: they arrived at the same moment)."""
        self.tokens += count
        if self.tokens > self.max_ids:
            raise EngineProtocolError(
                f"{self.where} streamed {self.tokens} tokens for a request of "
                f"max_tokens={self.max_tokens}: the server does not honour max_tokens; "
                "cut off"
            )

    def progress(self) -> None:
        """The server moved on (ids, or the end of the completion): restart the token timer."""
        self.token_deadline = anyio.current_time() + self.token_timeout

    def expired(self, waiting_for: str | None = None) -> EngineTimeoutError:
        """The error for the deadline that passed."""
        if self.turn_deadline <= self.token_deadline:
            return with_settings(
                EngineTimeoutError(
                    f"{self.where} did not finish the turn within turn_timeout="
                    f"{self.turn_timeout:g} s ({self.tokens} tokens so far); raise "
                    "turn_timeout if the server is just slow"
                ),
                "turn_timeout",
            )
        if self.tokens:
            what, limit, name = "the next token", self.token_timeout, "token_timeout"
        else:
            what = waiting_for or "the first token"
            limit, name = self.first_token_timeout, "first_token_timeout"
        return with_settings(
            EngineTimeoutError(
                f"{self.where} sent nothing for {limit:g} s while waiting for {what}; the "
                f"server is stalled or overloaded (raise {name} if it is just slow)"
            ),
            name,
        )


async def send(
    client: HttpClient, url: str, body: dict[str, Any], headers: dict[str, str], clock: Clock
) -> Answer:
    """Send the request; the wait for the response headers is under the first-token deadline
    (a server that accepts and never answers must not hang the run)."""
    with anyio.CancelScope(deadline=clock.deadline()):
        return await client.post(url, body, headers)
    # only the deadline ends the block without a return
    raise clock.expired("the response headers")


async def error_body(response: Answer, clock: Clock) -> bytes:
    """The start of a body that is only quoted, read under the same deadline (a 500 whose
    body never ends must not hang either); what arrived in time is enough to quote."""
    body = bytearray()
    with anyio.CancelScope(deadline=clock.deadline()):
        while data := await response.read():
            body += data
            if len(body) >= ERROR_BODY_BYTES:
                break
    return bytes(body[:ERROR_BODY_BYTES])


def _not_an_event_stream(response: Answer) -> str | None:
    """Why a 200 answer to a streaming request is no event stream, if it is not one."""
    kind = (response.header("content-type") or "").split(";")[0].strip().lower()
    if not kind or kind == "text/event-stream":
        return None
    if kind == "application/json":
        return (
            "answered the streaming request with plain JSON, not an event stream: the "
            "server (or a proxy before it) does not stream /completions; use stream=False"
        )
    if "html" in kind:
        return "answered with an HTML page, not an event stream; check the base URL"
    return f"answered with {kind}, not an event stream (text/event-stream)"


def _choices(event: dict[str, Any], where: str) -> list[dict[str, Any]]:
    choices = event.get("choices") or []
    if type(choices) is not list:
        raise EngineProtocolError(f"{where} sent choices that are not a list of objects")
    for choice in choices:
        if type(choice) is not dict:
            raise EngineProtocolError(f"{where} sent choices that are not a list of objects")
    return choices


class _Events:
    """What the payloads of an event stream said so far (pure: no I/O)."""

    def __init__(self, clock: Clock, logprobs: bool, stop_field: str = "stop_reason") -> None:
        self.clock = clock
        self.stop_field = stop_field  # the choice field naming what stopped it
        self.finish: Delta | None = None
        self.tail: list[int] = []  # ids that came with or after the finish reason
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.logprobs = logprobs
        self.lps: list[float | None] = []  # the logprobs of the ids taken, when asked for
        self.tail_lps: list[float | None] = []

    def take(self, payloads: list[str], ids: list[int]) -> None:
        """Add the ids of ``payloads`` (before the finish) to ``ids`` (their logprobs, when
        asked for, to ``lps``)."""
        clock, where = self.clock, self.clock.where
        before = clock.tokens
        self._take(payloads, ids, clock, where)
        if clock.tokens != before:
            clock.progress()  # once per read, not once per event

    def _take(self, payloads: list[str], ids: list[int], clock: Clock, where: str) -> None:
        for payload in payloads:
            if payload == "[DONE]":
                self.done = True
                return
            event = parse_json(payload, where)
            if "error" in event and not event.get("choices"):
                raise EngineRequestError(
                    f"{where} reported an error mid-stream: {event['error']!s:.300}"
                )
            if isinstance(event.get("usage"), dict):
                self.usage = event["usage"]
            for choice in _choices(event, where):
                new = token_ids(choice, where)
                clock.count(len(new))
                if choice.get("finish_reason"):
                    self.finish = Delta([], choice["finish_reason"], choice.get(self.stop_field))
                    clock.progress()  # the end came in time: the usage may follow
                if self.finish is None:
                    ids.extend(new)
                    if self.logprobs:
                        self.lps.extend(token_logprobs(choice, len(new)))
                else:
                    self.tail.extend(new)
                    if self.logprobs:
                        self.tail_lps.extend(token_logprobs(choice, len(new)))

    def delta(self, ids: list[int]) -> Delta:
        """The ids taken since the last delta (and their logprobs)."""
        if not self.logprobs:
            return Delta(ids)
        lps, self.lps = self.lps, []
        return Delta(ids, logprobs=lps)


async def _next_read(response: Answer, clock: Clock) -> bytes:
    """The next piece of the body: what already arrived without a wait (and without the
    cost of a cancel scope), else a wait under the clock's deadline."""
    data = response.read_nowait()
    if data:
        return data
    with anyio.CancelScope(deadline=clock.deadline()) as scope:
        return await response.read()
    if scope.cancelled_caught:
        raise clock.expired()
    raise AssertionError("unreachable: only the deadline ends the scope without a return")


async def stream_deltas(
    response: Answer,
    clock: Clock,
    max_line: int,
    logprobs: bool = False,
    stop_field: str = "stop_reason",
) -> AsyncGenerator[Delta, None]:
    """The sampled ids of an event stream as deltas; the last one carries the finish.

    One delta per network read, holding the ids of every event that read completed: when
    the loop is busy and several events have arrived, they cost one chunk downstream, not
    one each. A read that must wait does so under the clock's deadline.
    """
    where = clock.where
    wrong = _not_an_event_stream(response)
    if wrong is not None:
        body = await error_body(response, clock)
        raise with_settings(
            EngineProtocolError(f"{where} {wrong} (it sent {body[:120]!r})"), "base_url"
        )
    framer = SSEFramer(max_line)
    events = _Events(clock, logprobs, stop_field)
    ended = False
    while not (ended or events.done or events.finish is not None):
        ids: list[int] = []
        data = await _next_read(response, clock)
        ended = not data
        try:
            events.take(framer.close() if ended else framer.feed(data), ids)
        except EngineProtocolError:
            if ids:  # what arrived before the fault still reaches the caller
                yield events.delta(ids)
            raise
        if ids:
            yield events.delta(ids)
    # the usage (and [DONE]) may follow the finish: read them under the same deadlines
    while not (ended or events.done):
        data = await _next_read(response, clock)
        ended = not data
        events.take(framer.close() if ended else framer.feed(data), events.tail)
    if events.finish is None:
        raise EngineProtocolError(
            f"{where} closed the stream without a finish reason after {clock.tokens} tokens; "
            "check its logs"
        )
    yield events.finish._replace(
        ids=events.tail,
        usage=events.usage,
        logprobs=events.tail_lps if logprobs else None,
    )


async def whole_delta(
    response: Answer,
    clock: Clock,
    max_bytes: int,
    logprobs: bool = False,
    stop_field: str = "stop_reason",
) -> AsyncGenerator[Delta, None]:
    """The one delta of a non-streamed answer, read whole under the clock."""
    where = clock.where
    body = bytearray()
    with anyio.CancelScope(deadline=clock.deadline()) as scope:
        while data := await response.read():
            body += data
            if len(body) > max_bytes:
                raise EngineProtocolError(
                    f"{where} sent a response over {max_bytes} bytes; that is no completion "
                    "(raise max_line_bytes if it really is one)"
                )
    if scope.cancelled_caught:
        raise clock.expired("the response")
    data = parse_json(body.decode("utf-8", errors="replace"), where)
    choices = _choices(data, where)
    choice = choices[0] if choices else {}
    ids = token_ids(choice, where)
    clock.sampled(len(ids))
    usage = data.get("usage")
    yield Delta(
        ids,
        choice.get("finish_reason") or "stop",
        choice.get(stop_field),
        usage if isinstance(usage, dict) else None,
        token_logprobs(choice, len(ids)) if logprobs else None,
    )
