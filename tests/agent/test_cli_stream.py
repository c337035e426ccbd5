"""The final answer streams: on stdout as it is sampled (plain when piped), in ``run`` and
``chat``; on a terminal as Markdown, with the usage line after it."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from harmony_agent._console import EventView
from harmony_agent._encoding import load_encoding
from harmony_agent.events import RunFinished, TextDelta, ToolCallStarted, TurnFinished
from rich.console import Console

ANSWER = "Hello, streaming world."
CHAT = [sys.executable, "-m", "harmony_agent", "chat", "--engine", "scripted:chat.json"]


class GatedServer:
    """An OpenAI-compatible completions server on 127.0.0.1 that streams every token of the
    reply but the stop token, then waits for ``gate`` before it ends the stream."""

    def __init__(self, reply: list[int]) -> None:
        self.reply = reply
        self.gate = anyio.Event()
        self.port = 0

    async def _send_json(self, stream: SocketStream, payload: dict) -> None:
        body = json.dumps(payload).encode()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        await stream.send(head % len(body) + body)

    async def _event(self, stream: SocketStream, data: str) -> None:
        chunk = f"data: {data}\n\n".encode()
        await stream.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    async def handle(self, stream: SocketStream) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            async with stream:
                while True:
                    buf = b""
                    while b"\r\n\r\n" not in buf:
                        buf += await stream.receive()
                    head, _, body = buf.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.decode().split("\r\n")[1:]:
                        key, _, value = line.partition(":")
                        if key.strip().lower() == "content-length":
                            length = int(value)
                    while len(body) < length:
                        body += await stream.receive()
                    if head.split(b" ")[1].endswith(b"/models"):
                        await self._send_json(stream, {"data": [{"id": "fake"}]})
                        continue
                    await self._stream_reply(stream, json.loads(body))

    async def _stream_reply(self, stream: SocketStream, body: dict) -> None:
        await stream.send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        *head, stop = self.reply
        for token in head:
            choice = {"index": 0, "text": "", "token_ids": [token], "finish_reason": None}
            await self._event(stream, json.dumps({"choices": [choice]}))
        await self.gate.wait()
        last = {"index": 0, "text": "", "token_ids": [stop], "finish_reason": "stop"}
        last["stop_reason"] = stop
        await self._event(stream, json.dumps({"choices": [last]}))
        usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": len(self.reply)}
        await self._event(stream, json.dumps({"choices": [], "usage": usage}))
        await self._event(stream, "[DONE]")
        await stream.send(b"0\r\n\r\n")


@pytest.mark.anyio
async def test_run_prints_the_answer_while_it_is_sampled(tmp_path):
    enc = load_encoding()
    reply = enc.encode(f"<|channel|>final<|message|>{ANSWER}<|return|>", allowed_special="all")
    server = GatedServer(reply)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(SocketAttribute.local_port)
    command = [sys.executable, "-m", "harmony_agent", "run", "x", "--no-browser", "--no-python"]
    command += ["--engine", f"http://127.0.0.1:{server.port}/v1", "--model", "fake"]
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        async with await anyio.open_process(command, cwd=tmp_path) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            seen = b""
            with anyio.fail_after(60):
                while b"streaming world" not in seen:
                    seen += await proc.stdout.receive()
            # the engine still holds the last token: the run has not finished yet
            assert proc.returncode is None and not server.gate.is_set()
            server.gate.set()
            with anyio.fail_after(60):
                rest, errors = b"", b""
                async for data in proc.stdout:
                    rest += data
                async for data in proc.stderr:
                    errors += data
                await proc.wait()
        tg.cancel_scope.cancel()
    assert proc.returncode == 0, errors.decode()
    assert (seen + rest).decode() == ANSWER + "\n"
    assert "1 turns" in errors.decode()


def test_chat_prints_each_answer_once_in_order(tmp_path):
    replies = [
        "<|channel|>final<|message|>Hello!<|return|>",
        "<|channel|>analysis<|message|>recall<|end|><|start|>assistant"
        "<|channel|>final<|message|>You said hi.<|return|>",
    ]
    (tmp_path / "chat.json").write_text(json.dumps(replies))
    proc = subprocess.run(
        [*CHAT, "--no-browser", "--no-python"],
        cwd=tmp_path,
        input="hi\nwhat did I say?\n\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Hello!\nYou said hi.\n"


def events(turn: int, text: str, *, final: str | None = None) -> list:
    ids = {"run_id": "r", "turn": turn}
    deltas = [TextDelta(**ids, delta=text[i : i + 4]) for i in range(0, len(text), 4)]
    done = TurnFinished(
        **ids,
        prompt_tokens=10,
        cached_prompt_tokens=0,
        output_tokens=5,
        finish_reason="stop",
        duration_s=0.1,
    )
    finished = RunFinished(
        **ids,
        final_text=text if final is None else final,
        turns=turn + 1,
        prompt_tokens=10,
        cached_prompt_tokens=0,
        output_tokens=5,
    )
    return [*deltas, done, finished]


def test_a_pipe_gets_the_deltas_as_they_come_and_one_newline():
    out, err = io.StringIO(), io.StringIO()
    view = EventView(Console(file=err), out=Console(file=out))
    stream = events(0, "Five is **5**.")
    view.handle(stream[0])
    assert out.getvalue() == "Five"  # before the turn has finished
    for event in stream[1:]:
        view.handle(event)
    view.stop()
    assert out.getvalue() == "Five is **5**.\n"
    assert "1 turns" in err.getvalue()


def test_a_pipe_ends_with_the_answer_when_the_streamed_text_was_not_it():
    out = io.StringIO()
    view = EventView(Console(file=io.StringIO()), out=Console(file=out))
    # turn 0 wrote to the user and then called a tool; turn 1 answered differently
    view.handle(TextDelta(run_id="r", turn=0, delta="Let me check"))
    view.handle(
        ToolCallStarted(
            run_id="r", turn=0, call_id="c", recipient="functions.f", channel="commentary"
        )
    )
    for event in events(1, "It is 5.", final="The answer: 5."):
        view.handle(event)
    view.stop()
    assert out.getvalue() == "Let me check\nIt is 5.\nThe answer: 5.\n"


def test_a_terminal_renders_markdown_live_then_the_usage_line():
    screen = io.StringIO()
    out = Console(file=screen, force_terminal=True, color_system=None, width=80)
    err = Console(file=screen, force_terminal=True, color_system=None, width=80)
    view = EventView(err, out=out)
    for event in events(0, "The sum is **5**, as asked."):
        view.handle(event)
    view.stop()
    text = screen.getvalue()
    answer_at = text.rfind("The sum is 5, as asked.")  # Markdown: the stars are rendered
    assert answer_at >= 0 and "**" not in text
    assert text.index("1 turns") > answer_at  # the usage line comes after the answer
