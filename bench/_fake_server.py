"""A local OpenAI-compatible completions server that streams token ids at a realistic pace.

``python bench/_fake_server.py PORT [--tok-s 80] [--first-token 0.2]``. Each request is
answered like a vLLM server with ``return_token_ids``: a function call when the prompt holds
no tool result yet, else a final answer; SSE chunks of one token id at ``tok-s`` per stream,
after ``first-token`` seconds. Plain anyio sockets (HTTP/1.1, chunked), so hundreds of
streams cost the server little.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio
from anyio.abc import SocketStream

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from harmony_agent._encoding import load_encoding

ENC = load_encoding()
CALL = ENC.encode(
    "<|channel|>analysis<|message|>I need to look this up first.<|end|><|start|>assistant"
    '<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{"key":"alpha"}<|call|>',
    allowed_special="all",
)
FINAL = ENC.encode(
    "<|channel|>final<|message|>"
    + "The value of alpha is known and this answer is long enough to stream for a while. " * 4
    + "<|return|>",
    allowed_special="all",
)
TOOL_MARK = ENC.encode("<|start|>functions.lookup", allowed_special="all")


def _contains(seq: list[int], sub: list[int]) -> bool:
    n = len(sub)
    return any(seq[i : i + n] == sub for i in range(len(seq) - n, -1, -1))


async def _read_request(stream: SocketStream) -> dict | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive(65536)
    path = head.split(b" ")[1].decode()
    return {"path": path, "body": json.loads(body) if body else {}}


async def _send_chunk(stream: SocketStream, data: bytes) -> None:
    await stream.send(b"%x\r\n%s\r\n" % (len(data), data))


async def handle(stream: SocketStream, tok_s: float, first: float) -> None:
    try:
        await _serve_connection(stream, tok_s, first)
    except (
        anyio.BrokenResourceError,
        anyio.ClosedResourceError,
        anyio.EndOfStream,
        ConnectionError,
    ):
        pass  # the client went away


async def _serve_connection(stream: SocketStream, tok_s: float, first: float) -> None:
    async with stream:
        while True:
            try:
                request = await _read_request(stream)
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                return
            if request is None:
                return
            if request["path"].endswith("/models"):
                body = json.dumps({"data": [{"id": "fake-gpt-oss"}]}).encode()
                await stream.send(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                continue
            prompt = request["body"].get("prompt", [])
            reply = FINAL if _contains(prompt, TOOL_MARK) else CALL
            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            await anyio.sleep(first)
            for i, token in enumerate(reply):
                last = i == len(reply) - 1
                choice = {
                    "index": 0,
                    "text": "",
                    "token_ids": [token],
                    "finish_reason": "stop" if last else None,
                    "stop_reason": token if last else None,
                }
                event: dict = {
                    "id": "cmpl-fake",
                    "object": "text_completion",
                    "model": "fake-gpt-oss",
                    "choices": [choice],
                }
                if i == 0:
                    event["prompt_token_ids"] = prompt
                if last:
                    event["usage"] = {
                        "prompt_tokens": len(prompt),
                        "completion_tokens": len(reply),
                        "total_tokens": 0,
                        "prompt_tokens_details": {"cached_tokens": 0},
                    }
                await _send_chunk(stream, b"data: " + json.dumps(event).encode() + b"\n\n")
                if not last:
                    await anyio.sleep(1 / tok_s)
            await _send_chunk(stream, b"data: [DONE]\n\n")
            await stream.send(b"0\r\n\r\n")


async def serve(port: int, tok_s: float, first: float) -> None:
    listener = await anyio.create_tcp_listener(
        local_host="127.0.0.1", local_port=port, backlog=1024
    )
    print("ready", flush=True)
    await listener.serve(lambda s: handle(s, tok_s, first))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--tok-s", type=float, default=80.0)
    parser.add_argument("--first-token", type=float, default=0.2)
    args = parser.parse_args()
    anyio.run(serve, args.port, args.tok_s, args.first_token)
