"""Long browsing runs inside the context window: compaction versus none versus compacting a
little every turn.

A generated local site (200 pages) is served on 127.0.0.1; the real ``BrowserTool`` (Chromium)
opens its pages. A ``FunctionEngine`` plays the model: each turn it reasons ~300 tokens and
opens the next page (every 20th turn it scrolls an early cursor again, whose output was long
removed, to check that cursors stay valid), and after ``TURNS`` pages it answers. Three runs:

* ``compaction``: the default policy (compact at ~85% of the 131,072-token window, down to half);
* ``none``: no compaction (the run ends in ``ContextOverflowError``);
* ``every turn``: a policy whose target is its trigger, so once full it compacts a little on
  every turn — the re-render-every-turn approach a sliding window takes.

Reported per run: turns completed, compactions, the largest prompt, and the share of prompt
tokens that were a prefix of the previous prompt (what a server's prefix cache can reuse).
Run: ``python bench/bench_long_run.py [--quick]``.
"""

from __future__ import annotations

import http.server
import sys
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _report import Figure, main_cli
from harmony_agent import Agent, Compaction
from harmony_agent.engine import Chunk, FunctionEngine, GenerationRequest
from harmony_agent.errors import ContextOverflowError
from harmony_agent.tools import BrowserTool

PAGES = 200
WORDS = (
    "river harbour bridge market tower garden museum library station square castle forest "
    "valley meadow lantern chapel orchard quarry mill ferry"
).split()


def page(i: int) -> bytes:
    lines = [
        f"<p>Section {k} of page {i}: "
        + " ".join(WORDS[(i * 7 + k * 3 + j) % len(WORDS)] for j in range(14))
        + f". See also <a href='/p{(i + k + 1) % PAGES}.html'>page {(i + k + 1) % PAGES}</a>.</p>"
        for k in range(40)
    ]
    body = "".join(lines)
    return (
        f"<html><head><meta charset=utf-8><title>Page {i}</title></head>"
        f"<body><h1>Page {i}</h1>{body}</body></html>"
    ).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.split("?")[0].strip("/").removeprefix("p").removesuffix(".html")
        body = page(int(name) % PAGES if name.isdigit() else 0)
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Measured(FunctionEngine):
    """A FunctionEngine that measures the prefix each prompt shares with the one before
    (against that one only, so a long run costs what it appends) and keeps no history."""

    def __init__(self, fn, **kw) -> None:
        super().__init__(fn, **kw)
        self.previous: list[int] = []
        self.shared = 0
        self.total = 0
        self.largest = 0
        self.turns = 0
        self._prefix = 0

    def _cached(self, prompt: list[int]) -> int:
        return self._prefix  # the double's own count compares with every earlier prompt

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        prompt = list(request.prompt_ids)
        n = 0
        for a, b in zip(self.previous, prompt, strict=False):
            if a != b:
                break
            n += 1
        if self.turns:  # the first prompt has no previous one
            self.shared += n
            self.total += len(prompt)
        self.previous = prompt
        self.largest = max(self.largest, len(prompt))
        self.turns += 1
        self._prefix = n
        if self.requests:  # keep the count (the policy's turn number), not every prompt
            self.requests[-1] = []
        async for chunk in super().generate(request):
            yield chunk


def policy(base: str, turns: int):
    def reply(request: GenerationRequest, turn: int) -> str:
        if turn >= turns:
            return f"<|channel|>final<|message|>Read {turns} pages.<|return|>"
        thought = " ".join(WORDS[(turn + j) % len(WORDS)] for j in range(290))
        if turn and turn % 20 == 0:  # an early cursor, long compacted away: scroll it again
            args = '{"cursor": 2, "loc": 10}'
        else:
            args = f'{{"id": "{base}/p{turn % PAGES}.html"}}'
        return (
            f"<|channel|>analysis<|message|>{thought}<|end|><|start|>assistant"
            f"<|channel|>commentary to=browser.open <|constrain|>json<|message|>{args}<|call|>"
        )

    return reply


async def one_run(base: str, turns: int, compaction: Compaction | bool) -> dict[str, float]:
    engine = Measured(policy(base, turns), chunk_size=64)
    agent = Agent(
        "Read the site's pages in order.",
        tools=[BrowserTool(allow_private_network=["127.0.0.1"])],
        engine=engine,
        max_turns=turns + 5,
        compaction=compaction,
        conversation_start_date="2026-01-01",
    )
    compactions, failed, outcome = 0, 0, "answered"
    started = time.perf_counter()
    try:
        async for event in agent.stream("Read the pages."):
            if event.type == "compacted":
                compactions += 1
            elif event.type == "tool_result" and not event.ok:
                failed += 1
    except ContextOverflowError:
        outcome = "overflow"
    return {
        "turns": engine.turns,
        "compactions": compactions,
        "largest": engine.largest,
        "share": engine.shared / engine.total if engine.total else 0.0,
        "failed_calls": failed,
        "answered": outcome == "answered",
        "seconds": time.perf_counter() - started,
    }


def run(quick: bool = False) -> list[Figure]:
    turns = 150 if quick else 160
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        runs = {
            "compaction": anyio.run(one_run, base, turns, True),
            "none": anyio.run(one_run, base, turns, False),
            "every turn": anyio.run(one_run, base, turns, Compaction(trigger=0.85, target=0.85)),
        }
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    figures = []
    for kind, r in runs.items():
        name = f"long run ({kind})"
        note = "answered" if r["answered"] else "ContextOverflowError"
        figures += [
            Figure(name, "turns completed", r["turns"], "turns", f"{turns + 1} (answer)", note),
            Figure(name, "compactions", r["compactions"], "", "", ""),
            Figure(name, "largest prompt", r["largest"], "tokens", "<= 131,072", ""),
            Figure(
                name,
                "prompt tokens that were a prefix of the previous prompt",
                r["share"] * 100,
                "%",
                ">= 95" if kind == "compaction" else "",
                "what a prefix cache can reuse",
            ),
            Figure(name, "failed tool calls", r["failed_calls"], "", "0", ""),
            Figure(name, "wall time", r["seconds"], "s", "", "real Chromium, 2 shared cores"),
        ]
    return figures


if __name__ == "__main__":
    main_cli(run, "long browsing run in a 131,072-token window")
