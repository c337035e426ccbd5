"""A scriptable OpenAI-compatible completions server on 127.0.0.1 for engine tests.

Each request takes the next behaviour from ``server.plan`` (the last one repeats):
``ok`` (SSE stream of ``server.reply`` token ids), ``json`` (non-streaming), ``status:CODE``,
``reset`` (close after two chunks), ``reset_first`` (close before any chunk), ``stall_first``
(headers, then nothing), ``stall_mid`` (two chunks, then nothing), ``text_only`` (no token ids),
``fireworks`` (raw_output ids, stop token left out, string stop_reason), ``fireworks_bare``
(the same without a stop_reason), ``eos_apart`` (the
stop token in its own chunk, then an empty chunk with the finish reason and no stop_reason, as
vLLM does when the model's end-of-sequence id ends it).

Faults that must end in bounded time: ``no_headers`` (reads the request, never answers),
``slow_error:CODE`` (an error status whose body never ends), ``keepalive`` (headers, then
only ``: keep-alive`` comments), ``keepalive_mid`` (two chunks, then only comments), ``drip``
(a token every ``interval`` seconds, forever), ``endless`` (tokens as fast as it can, never a
finish reason). Bad answers: ``float_ids`` (ids as floats), ``html:CODE`` (an HTML page),
``long_line`` (one data line of ``line_bytes`` bytes), ``json`` also answers a streaming
request with plain JSON.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from anyio.abc import SocketAttribute, SocketStream


@dataclass
class FakeServer:
    reply: list[int]
    plan: list[str] = field(default_factory=lambda: ["ok"])
    port: int = 0
    requests: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    cached: int | None = 7
    then: list[list[int]] = field(default_factory=list)  # replies for the next requests
    interval: float = 0.1  # seconds between the pieces of the slow modes
    line_bytes: int = 4096

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _next(self) -> str:
        return self.plan.pop(0) if len(self.plan) > 1 else self.plan[0]

    async def _read(self, stream: SocketStream) -> tuple[str, dict[str, str], dict] | None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await stream.receive()
            buf += data
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            body += await stream.receive()
        return lines[0].split(" ")[1], headers, json.loads(body) if body else {}

    async def _chunk(self, stream: SocketStream, event: dict | str) -> None:
        data = (
            b"data: " + (event if isinstance(event, str) else json.dumps(event)).encode() + b"\n\n"
        )
        await stream.send(b"%x\r\n%s\r\n" % (len(data), data))

    async def handle(self, stream: SocketStream) -> None:
        with contextlib.suppress(
            anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError
        ):
            async with stream:
                while True:
                    path, headers, body = await self._read(stream)
                    if path.endswith("/models"):
                        payload = json.dumps({"data": [{"id": m} for m in self.models]}).encode()
                        await stream.send(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                            % (len(payload), payload)
                        )
                        continue
                    self.requests.append(body)
                    self.headers.append(headers)
                    mode = self._next()
                    await self.respond(stream, mode, body)
                    if mode.startswith(("reset", "stall", "no_headers", "slow", "keepalive")):
                        return
                    if mode in ("drip", "endless", "long_line"):
                        return

    async def respond(self, stream: SocketStream, mode: str, body: dict) -> None:
        if self.then:
            self.reply = self.then.pop(0)
        reply = self.reply[: body.get("max_tokens", 10**9)]
        finish = "stop" if len(reply) == len(self.reply) else "length"
        usage = {"prompt_tokens": len(body.get("prompt", [])), "completion_tokens": len(reply)}
        if self.cached is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached}
        if mode.startswith("status:"):
            code = int(mode.split(":")[1])
            payload = json.dumps({"error": {"message": f"fake failure {code}"}}).encode()
            await stream.send(
                b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (code, len(payload), payload)
            )
            return
        if mode == "reset_first":
            return
        if mode == "no_headers":
            await anyio.sleep(3600)
        if mode.startswith("slow_error:"):
            code = int(mode.split(":")[1])
            await stream.send(
                b"HTTP/1.1 %d X\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                % code
            )
            while True:
                await stream.send(b"6\r\nerror \r\n")
                await anyio.sleep(self.interval)
        if mode.startswith("html:"):
            code = int(mode.split(":")[1])
            page = (
                b"<!DOCTYPE html>\n<html>\n<head><title>Not Found</title></head>\n<body>\n"
                b"<h1>Not Found</h1>\n<p>The requested URL was not found on this server.</p>\n"
                b"</body>\n</html>\n"
            )
            await stream.send(
                b"HTTP/1.1 %d X\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n%s"
                % (code, len(page), page)
            )
            return
        if mode == "json":
            payload = json.dumps(
                {
                    "choices": [
                        {
                            "index": 0,
                            "text": "",
                            "token_ids": reply,
                            "finish_reason": finish,
                            "stop_reason": reply[-1] if finish == "stop" else None,
                        }
                    ],
                    "usage": usage,
                }
            ).encode()
            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(payload), payload)
            )
            return
        await stream.send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        if mode == "stall_first":
            await anyio.sleep(3600)
        if mode == "keepalive":
            while True:
                await stream.send(b"e\r\n: keep-alive\n\n\r\n")
                await anyio.sleep(self.interval)
        if mode in ("drip", "endless"):
            while True:
                choice = {"index": 0, "text": "x", "token_ids": [1000], "finish_reason": None}
                await self._chunk(stream, {"choices": [choice]})
                await anyio.sleep(self.interval if mode == "drip" else 0)
        if mode == "long_line":
            await self._chunk(stream, "x" * self.line_bytes)
            await anyio.sleep(3600)
        if mode == "float_ids":
            choice = {
                "index": 0,
                "text": "x",
                "token_ids": [1.7, 200002.0],
                "finish_reason": "stop",
            }
            await self._chunk(stream, {"choices": [choice]})
            await self._chunk(stream, "[DONE]")
            await stream.send(b"0\r\n\r\n")
            return
        if mode.startswith("fireworks"):
            reply = reply[:-1] if finish == "stop" else reply
        for i, token in enumerate(reply):
            last = i == len(reply) - 1
            if mode in ("reset", "stall_mid", "keepalive_mid") and i == 2:
                if mode == "stall_mid":
                    await anyio.sleep(3600)
                while mode == "keepalive_mid":
                    await stream.send(b"e\r\n: keep-alive\n\n\r\n")
                    await anyio.sleep(self.interval)
                return
            choice: dict = {"index": 0, "text": "x", "finish_reason": finish if last else None}
            if mode.startswith("fireworks"):
                choice["raw_output"] = {"completion_token_ids": [token]}
                named = mode == "fireworks" and last and finish == "stop"
                choice["stop_reason"] = "<|call|>" if named else None
            elif mode != "text_only":
                choice["token_ids"] = [token]
                choice["stop_reason"] = token if last and finish == "stop" else None
            if mode == "eos_apart" and last:
                choice.update(finish_reason=None, stop_reason=None)
                await self._chunk(stream, {"choices": [choice]})
                choice = {"index": 0, "text": "", "token_ids": [], "finish_reason": finish}
            await self._chunk(stream, {"choices": [choice]})
        await self._chunk(stream, {"choices": [], "usage": usage})
        await self._chunk(stream, "[DONE]")
        await stream.send(b"0\r\n\r\n")


@contextlib.asynccontextmanager
async def serve(reply: list[int], plan: list[str] | None = None) -> AsyncIterator[FakeServer]:
    server = FakeServer(reply, plan or ["ok"])
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()
