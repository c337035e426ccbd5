"""Fuzz the agent loop: mutated and truncated completions through ``Agent.run``.

Each case is a short script of model replies (token ids) built from valid Harmony completions
and then mutated: truncated, tokens dropped, doubled or swapped, special tokens inserted,
out-of-range ids, hostile argument JSON (huge integers, deep nesting, lone surrogates). The
replies are played by a ``FunctionEngine`` (a plain final answer once the script is used up)
through the real encoding, parser, tools and trace writer. A case passes when:

* the run ends with a result or an exception from ``harmony_agent.errors`` (anything else is
  counted as *unhandled*),
* it ends within a time limit (else a *hang*),
* every prompt the engine saw is a prefix of the next one (the transcript is append-only),
* every event serialises to JSON and encodes as UTF-8.

Run: ``python bench/fuzz.py [--cases N] [--seed S]`` (``make fuzz``); prints cases / unhandled /
hangs / violations and the first failures. ``tests/test_fuzz.py`` runs a smaller fixed-seed
batch of the same cases in ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import random
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent._tokens import CALL, CHANNEL, CONSTRAIN, END, MESSAGE, RETURN, START
from harmony_agent.engine import FunctionEngine, GenerationRequest
from harmony_agent.errors import HarmonyAgentError
from harmony_agent.events import event_to_dict
from harmony_agent.trace import _dump as trace_line

ENC = load_encoding()
SPECIALS = (CALL, CHANNEL, CONSTRAIN, END, MESSAGE, RETURN, START)
FINAL = "<|channel|>final<|message|>done<|return|>"

SEEDS = [
    '<|channel|>commentary to=functions.echo <|constrain|>json<|message|>{"text":"hi"}<|call|>',
    '<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":1,"b":2}<|call|>',
    "<|channel|>analysis<|message|>easy<|end|><|start|>assistant<|channel|>final<|message|>The answer.<|return|>",
    "<|channel|>final<|message|>Plain answer.<|return|>",
    '<|channel|>final json<|message|>{"answer": 1}<|return|>',
    '<|channel|>final <|constrain|>json<|message|>{"answer": 1}<|return|>',
    "<|channel|>commentary<|message|>Let me check.<|end|><|start|>assistant<|channel|>commentary to=functions.echo<|message|>{}<|call|>",
    '<|channel|>analysis to=functions.add code<|message|>{"a":5,"b":5}<|call|>',
    "Just text, no header.<|return|>",
    '<|start|>assistant to=functions.echo<|channel|>commentary json<|message|>{"text":"x"}<|call|>',
    '<|channel|>commentary to=functions.nope <|constrain|>json<|message|>{"x":1}<|call|>',
    '<|channel|>final {"answer": 1}<|return|>',
]

HOSTILE_ARGS = [
    '{"text": ' + "9" * 5000 + "}",
    '{"text": ' + "[" * 1200 + "]" * 1200 + "}",
    '{"text": "\\ud83d"}',
    '{"text": "\\udc00 and \\ud83d\\ude00"}',
    '{"a": 1e999, "b": -1e999}',
    '{"a": ' + "1" * 400 + ', "b": 2}',
    '{"text": ' + '{"k":' * 900 + "1" + "}" * 900 + "}",
    '{"text": "' + "界" * 300 + '"}',
    "[1, 2, 3]",
    '"just a string"',
    "{not json",
    "",
]


@tool
def echo(text: Any = None) -> str:
    """Echo the text back."""
    return json.dumps(text)[:200] if not isinstance(text, str) else text[:200]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _ids(text: str) -> list[int]:
    return ENC.encode(text, allowed_special="all")


FINAL_IDS = _ids(FINAL)


def mutate(rng: random.Random, ids: list[int]) -> list[int]:
    """One to three token-level mutations of a reply."""
    ids = list(ids)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        n = len(ids)
        at = rng.randrange(n + 1) if n else 0
        if op == 0 and n:  # truncate
            ids = ids[:at]
        elif op == 1 and n:  # drop a token
            del ids[min(at, n - 1)]
        elif op == 2:  # insert a special token
            ids.insert(at, rng.choice(SPECIALS))
        elif op == 3 and n:  # double a span
            end = min(n, at + rng.randint(1, 8))
            ids[at:at] = ids[at:end]
        elif op == 4 and n > 1:  # swap two tokens
            i, j = rng.randrange(n), rng.randrange(n)
            ids[i], ids[j] = ids[j], ids[i]
        elif op == 5:  # an id outside the vocabulary, or a reserved one
            ids.insert(at, rng.choice([201_088, 250_000, 2**31, 2**40, 200_013, 200_017]))
        elif op == 6:  # stray text or a header fragment
            piece = rng.choice(
                ["assistant", "assistantassistant", "to=functions.echo", " json", "final", "x"]
            )
            ids[at:at] = _ids(piece)
        elif op == 7:  # hostile argument JSON in place of the content
            hostile = _ids(rng.choice(HOSTILE_ARGS))
            if MESSAGE in ids:
                m = ids.index(MESSAGE) + 1
                stop = next((k for k in range(m, len(ids)) if ids[k] in SPECIALS), len(ids))
                ids[m:stop] = hostile
            else:
                ids[at:at] = hostile
        else:  # glue two seeds
            ids[at:at] = _ids(rng.choice(SEEDS))
    return ids


@dataclass
class Case:
    replies: list[list[int]]
    chunk_size: int
    trace: bool
    long_task: bool = False


def make_case(rng: random.Random) -> Case:
    replies = []
    for _ in range(rng.randint(1, 3)):
        ids = _ids(rng.choice(SEEDS))
        replies.append(mutate(rng, ids) if rng.random() < 0.85 else ids)
    chunk = rng.choice([1, 2, 3, 7, 64])
    return Case(replies, chunk, trace=rng.random() < 0.02, long_task=rng.random() < 0.005)


@dataclass
class Outcome:
    cases: int = 0
    answered: int = 0
    typed_errors: collections.Counter = field(default_factory=collections.Counter)
    unhandled: collections.Counter = field(default_factory=collections.Counter)
    hangs: int = 0
    salvaged: int = 0  # turns kept (in part) that could not be parsed whole
    resampled: int = 0  # turns thrown away and sampled again
    violations: collections.Counter = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(self.unhandled.values()) + self.hangs + sum(self.violations.values())

    def note(self, kind: str, detail: str, case: Case) -> None:
        if len(self.examples) < 8:
            texts = [
                ENC.decode(r)[:300] if max(r, default=0) < 201_088 else r for r in case.replies
            ]
            self.examples.append(f"{kind}: {detail}\n    replies: {texts!r}")


def _check_events(events: list[Any], out: Outcome, case: Case) -> None:
    for event in events:
        if event.type == "warning":
            out.salvaged += event.message.startswith("salvaged:")
            out.resampled += "sampling the turn again" in event.message
        try:
            json.dumps(event_to_dict(event), ensure_ascii=False).encode("utf-8")
            # what a trace writes for it (every case; only some write a real, fsynced file)
            trace_line({"record": "event", "event": event_to_dict(event)}).encode("utf-8")
        except Exception as exc:
            out.violations["event not JSON/UTF-8"] += 1
            out.note("event", f"{event.type}: {type(exc).__name__}: {exc}", case)
            return


def _check_prefix(requests: list[list[int]], out: Outcome, case: Case) -> None:
    for before, after in itertools.pairwise(requests):
        if after[: len(before)] != before:
            out.violations["prompt not a prefix of the next"] += 1
            out.note("prefix", f"{len(before)} -> {len(after)} ids", case)
            return


class Harness:
    """One agent and engine for every case (the per-agent prefix is rendered once)."""

    def __init__(self, trace_dir: Path) -> None:
        self.trace_dir = trace_dir
        self.script: list[list[int]] = []
        self.engine = FunctionEngine(self._model)
        self.agent = Agent(
            tools=[echo, add],
            engine=self.engine,
            conversation_start_date="2026-01-01",
            max_turns=6,
            max_tool_errors=3,
            max_tokens_per_turn=4096,
            files_dir=trace_dir / "files",  # one shared folder: no temporary folder per run
        )

    def _model(self, request: GenerationRequest, turn: int) -> list[int]:
        return self.script[turn] if turn < len(self.script) else FINAL_IDS

    async def run_case(self, case: Case, out: Outcome, index: int, limit_s: float = 10.0) -> None:
        self.script = list(case.replies)
        self.engine.requests = []
        self.engine.chunk_size = case.chunk_size
        events: list[Any] = []
        trace = self.trace_dir / f"case-{index}.jsonl" if case.trace else None
        # a long task of one repeated character: the tokenizer's slow (and panicking) case
        task = "界" * 60_000 if case.long_task else "fuzz"
        out.cases += 1
        try:
            with anyio.fail_after(limit_s):
                await self.agent.run(task, trace=trace, on_event=events.append)
            out.answered += 1
        except TimeoutError:
            out.hangs += 1
            out.note("hang", f"no end within {limit_s} s", case)
        except HarmonyAgentError as exc:
            out.typed_errors[type(exc).__name__] += 1
        except BaseException as exc:  # counting what escapes is the point
            if isinstance(exc, KeyboardInterrupt | SystemExit | anyio.get_cancelled_exc_class()):
                raise
            where = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
            out.unhandled[key] += 1
            out.note("unhandled", f"{key}: {str(exc)[:200]}", case)
        _check_events(events, out, case)
        _check_prefix(self.engine.requests, out, case)


async def fuzz(cases: int, seed: int, trace_dir: Path) -> Outcome:
    """Run ``cases`` cases drawn from ``seed``; the same seed gives the same cases."""
    rng = random.Random(seed)
    out = Outcome()
    harness = Harness(trace_dir)
    for i in range(cases):
        await harness.run_case(make_case(rng), out, i)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz the agent loop with mutated completions.")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ha-fuzz-") as tmp:
        out = anyio.run(fuzz, args.cases, args.seed, Path(tmp))
    seconds = time.perf_counter() - started
    print(f"cases       {out.cases}")
    print(f"answered    {out.answered}")
    print(f"typed       {sum(out.typed_errors.values())}  {dict(out.typed_errors.most_common())}")
    print(f"unhandled   {sum(out.unhandled.values())}  {dict(out.unhandled.most_common())}")
    print(f"hangs       {out.hangs}")
    print(f"turns       {out.salvaged} salvaged, {out.resampled} sampled again")
    print(f"violations  {sum(out.violations.values())}  {dict(out.violations)}")
    print(f"seconds     {seconds:.1f}")
    for example in out.examples:
        print(example, file=sys.stderr)
    return 1 if out.failures else 0


if __name__ == "__main__":
    sys.exit(main())
