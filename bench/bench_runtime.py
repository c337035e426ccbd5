"""Runtime cost of the agent loop itself: per token, per turn against context length, and
prefix reuse against the re-render approach. Run: ``python bench/bench_runtime.py``."""

from __future__ import annotations

import statistics
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from openai_harmony import (
    Conversation,
    Message,
    Role,
    StreamableParser,
)

sys.path.insert(0, str(Path(__file__).parent))
from _report import Figure, main_cli, median_time
from harmony_agent import Agent, tool
from harmony_agent import _harmony as hm
from harmony_agent._encoding import load_encoding
from harmony_agent._transcript import Transcript
from harmony_agent.engine import Chunk, Engine, GenerationRequest, TokenUsage
from harmony_agent.engine.testing import ScriptedEngine

ENC = load_encoding()


class Firehose(Engine):
    """Yields precomputed chunks as fast as the consumer takes them."""

    def __init__(self, ids: list[int], chunk: int) -> None:
        pieces = [tuple(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
        self.chunks = [Chunk(piece) for piece in pieces[:-1]]
        self.last = pieces[-1]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        for chunk in self.chunks:
            yield chunk
        last = self.last
        yield Chunk(last, "stop", last[-1], TokenUsage(len(request.prompt_ids), len(last), None))


def per_token(tokens: int, chunk: int) -> float:
    words = "The quick brown fox jumps over the lazy dog. " * (tokens // 10 + 1)
    reasoning = ENC.encode("<|channel|>analysis<|message|>", allowed_special="all")
    body = ENC.encode(words)[: tokens // 2]
    final = ENC.encode(
        "<|end|><|start|>assistant<|channel|>final<|message|>", allowed_special="all"
    )
    ids = reasoning + body + final + body + [200002]
    engine = Firehose(ids, chunk)
    agent = Agent(engine=engine, max_tokens_per_turn=len(ids) + 10)

    async def one() -> None:
        async for _ in agent.stream("go"):
            pass

    def run() -> None:
        anyio.run(one)

    # subtract the fixed cost of a run (prompt render, setup) measured on a 1-token reply
    tiny = Agent(
        engine=Firehose(
            ENC.encode("<|channel|>final<|message|>x<|return|>", allowed_special="all"), chunk
        )
    )
    fixed = median_time(lambda: anyio.run(lambda: tiny.run("go")), 9)
    total = median_time(run, 5)
    return (total - fixed) / len(ids) * 1e6


def parser_only(tokens: int) -> float:
    ids = (
        ENC.encode("<|channel|>final<|message|>", allowed_special="all")
        + ENC.encode("hello world " * tokens)[:tokens]
        + [200002]
    )

    def run() -> None:
        p = StreamableParser(ENC, Role.ASSISTANT, strict=False)
        for t in ids:
            p.process(t)
            _ = p.last_content_delta

    return median_time(run, 5) / len(ids) * 1e6


def build_history(target_tokens: int) -> tuple[list[Message], list[int], list[int]]:
    """A tool-loop conversation of about ``target_tokens``; its messages, prompt, last output."""
    messages = [
        hm.build_system_message(hm.PromptSettings(conversation_start_date="2026-01-01"), []),
        Message.from_role_and_content(Role.USER, "Research the topic."),
    ]
    page = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40  # ~500 tokens
    call_text = (
        "<|channel|>analysis<|message|>Look further.<|end|><|start|>assistant"
        "<|channel|>commentary to=functions.fetch <|constrain|>json<|message|>"
        '{"page": 1}<|call|>'
    )
    output = ENC.encode(call_text, allowed_special="all")
    transcript = Transcript(hm.render_prompt(ENC, messages))
    while len(transcript) < target_tokens:
        p = StreamableParser(ENC, Role.ASSISTANT, strict=False)
        for t in output:
            p.process(t)
        messages.extend(p.messages)
        result = hm.tool_result_message("functions.fetch", "commentary", page)
        messages.append(result)
        transcript.extend(output)
        transcript.extend(hm.render_tool_result(ENC, result))
    return messages, transcript.view().tolist(), output


def per_turn(context: int) -> tuple[float, float]:
    messages, prompt, output = build_history(context)
    result = hm.tool_result_message("functions.fetch", "commentary", "short result")

    def ours() -> None:
        transcript = Transcript(prompt)  # not timed: setup below is O(n) once per run
        return transcript

    transcript = Transcript(prompt)

    def append() -> None:
        transcript.extend(output)
        transcript.extend(hm.render_tool_result(ENC, result))
        transcript.view()

    def rerender() -> None:
        ENC.render_conversation_for_completion(
            Conversation.from_messages([*messages, result]), Role.ASSISTANT
        )

    ours_s = median_time(append, 50)
    theirs_s = median_time(rerender, 7 if context > 20_000 else 21)
    return ours_s, theirs_s


def prefix_reuse(turns: int = 20) -> tuple[float, float]:
    """Share of each prompt that continues the sampled history: ours vs re-rendering."""
    replies = []
    for i in range(turns - 1):
        replies.append(
            f"<|channel|>analysis<|message|>Step {i}: check more.<|end|><|start|>assistant"
            f'<|channel|>commentary to=functions.fetch <|constrain|>json<|message|>{{"page":{i}}}<|call|>'
        )
    replies.append("<|channel|>final<|message|>Done.<|return|>")

    @tool
    def fetch(page: int) -> str:
        """Fetch a page."""
        return f"content of page {page} " * 20

    engine = ScriptedEngine(replies)
    result = Agent(tools=[fetch], engine=engine).run_sync("research")
    ours, theirs = [], []
    outputs = [ENC.encode(r, allowed_special="all") for r in replies]
    # messages as a chat-completions server would hold them, re-rendered every turn
    convo: list[Message] = []
    msgs = result.messages
    n_prefix = 2 if msgs[1].author.role == Role.DEVELOPER else 1
    convo = list(msgs[: n_prefix + 1])
    i = n_prefix + 1
    for turn in range(1, turns):
        history = engine.requests[turn - 1] + outputs[turn - 1]
        prompt = engine.requests[turn]
        ours.append(_lcp(prompt, history) / len(history))
        # re-render approach: messages so far (assistant turn + tool result), rendered whole
        while i < len(msgs) and not (msgs[i].author.role == Role.TOOL):
            convo.append(msgs[i])
            i += 1
        convo.append(msgs[i])
        i += 1
        rendered = ENC.render_conversation_for_completion(
            Conversation.from_messages(convo), Role.ASSISTANT
        )
        theirs.append(_lcp(rendered, history) / len(history))
    return statistics.mean(ours) * 100, statistics.mean(theirs) * 100


def _lcp(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def run(quick: bool = False) -> list[Figure]:
    figures = []
    tokens = 4_000 if quick else 20_000
    for chunk in (1, 16):
        us = per_token(tokens, chunk)
        figures.append(
            Figure(
                "runtime",
                f"full loop, {chunk}-token chunks",
                us,
                "µs/token",
                "≤ 5",
                f"{1e6 / us:,.0f} tok/s on one core",
            )
        )
    figures.append(
        Figure(
            "runtime",
            "harmony parser alone",
            parser_only(tokens),
            "µs/token",
            "",
            "StreamableParser.process + delta",
        )
    )
    for context in (1_000, 10_000, 50_000, 100_000) if not quick else (1_000, 10_000):
        ours, theirs = per_turn(context)
        figures.append(
            Figure(
                "per-turn", f"append next turn at {context // 1000}k ctx", ours * 1e3, "ms", "flat"
            )
        )
        figures.append(
            Figure(
                "per-turn",
                f"re-render next turn at {context // 1000}k ctx",
                theirs * 1e3,
                "ms",
                "",
                f"ratio {theirs / ours:,.0f}×" + (" (target ≥ 50×)" if context == 100_000 else ""),
            )
        )
    ours, theirs = prefix_reuse()
    figures.append(Figure("prefix", "prompt continues sampled history (ours)", ours, "%", "100"))
    figures.append(
        Figure(
            "prefix",
            "prompt continues sampled history (re-render)",
            theirs,
            "%",
            "",
            "harmony re-render, auto-drop on",
        )
    )
    return figures


if __name__ == "__main__":
    main_cli(run, "runtime benchmarks")
