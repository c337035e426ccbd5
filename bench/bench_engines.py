"""vLLM in-process (``VLLMEngine``) versus the vLLM server through ``OpenAICompatibleEngine``,
on the same prompts and the same sampled tokens: what the HTTP hop costs per request and per
token, streams at once, and the cached share of each agent turn's prompt.

Runs in the vLLM environment (``make setup-vllm``)::

    .venv-vllm/bin/python bench/bench_engines.py            # tiny random gpt-oss on the CPU
    .venv-vllm/bin/python bench/bench_engines.py --model openai/gpt-oss-20b --gpu

Without ``--model`` it builds the tests' tiny random gpt-oss (never saved beyond a temporary
directory), whose planted chain makes every agent turn a complete function call. With
``--gpu`` the engines use their GPU defaults instead of the CPU settings, and the figures are
the ones BENCHMARKS.md asks for on a GPU: tokens/s for one stream and at concurrency 32, time
to first token, cached-token ratio per turn.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "engine"))
from _report import Figure, print_table, write_json
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import Engine, GenerationRequest
from harmony_agent.errors import MaxTurnsError
from vllm_server import CPU_ARGS, vllm_server

HEADER = [200006, 1428, 200008]  # <|start|>user<|message|>


def prompt(i: int, length: int) -> list[int]:
    """A distinct prompt per request (no cross-request cache hits), same length for all."""
    body = [(7919 * (i + 1) + 31 * k) % 150_000 + 3000 for k in range(length)]
    return [*HEADER, *body]  # no <|start|>assistant: the planted call chain stays out


class Stream:
    def __init__(self) -> None:
        self.ids: list[int] = []
        self.ttft = 0.0
        self.total = 0.0


async def one(engine: Engine, ids: list[int], max_tokens: int) -> Stream:
    s = Stream()
    # no stop tokens: every request samples exactly max_tokens, so both engines do the same work
    request = GenerationRequest(
        prompt_ids=ids, max_tokens=max_tokens, temperature=0.0, stop_token_ids=()
    )
    start = time.perf_counter()
    async for chunk in engine.generate(request):
        if not s.ids and chunk.token_ids:
            s.ttft = time.perf_counter() - start
        s.ids += chunk.token_ids
    s.total = time.perf_counter() - start
    return s


async def concurrent(engine: Engine, n: int, max_tokens: int, offset: int) -> float:
    streams: list[Stream] = []

    async def run(i: int) -> None:
        streams.append(await one(engine, prompt(offset + i, 64), max_tokens))

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(run, i)
    return sum(len(s.ids) for s in streams) / (time.perf_counter() - start)


calls: list[str] = []


@tool
def lookup(city: str) -> dict:
    """Population of a city."""
    calls.append(city)
    return {"city": city, "population": 717_710}


INSTRUCTIONS = "You answer questions about cities with the lookup tool. " + " ".join(
    f"Rule {i}: be precise, cite the tool, and keep the answer short." for i in range(20)
)


async def cached_ratio(engine: Engine) -> float:
    """Mean cached share of the prompt over turns 2 and later of one agent run."""
    agent = Agent(INSTRUCTIONS, tools=[lookup], engine=engine, temperature=0.0, max_turns=4)
    turns = []
    try:
        async for event in agent.stream("How many people live in Oslo? Then in Bergen."):
            if event.type == "turn_finished":
                turns.append(event)
    except MaxTurnsError:
        pass  # the tiny model's planted chain calls the tool on every turn
    later = [t.cached_prompt_tokens / t.prompt_tokens for t in turns[1:] if t.prompt_tokens]
    return statistics.mean(later) if later else float("nan")


async def measure(engine: Engine, repeat: int, out_tokens: int, conc: int) -> dict[str, Any]:
    await one(engine, prompt(10_000, 512), 8)  # warm up (compilation, first allocation)
    # the fixed cost of a request: a short prompt, one output token
    rtt = [(await one(engine, prompt(2000 + i, 16), 1)).total for i in range(repeat * 6)]
    streams = [await one(engine, prompt(i, 512), out_tokens) for i in range(repeat)]
    per_token = [(s.total - s.ttft) / max(1, len(s.ids) - 1) for s in streams]
    return {
        "ids": [s.ids for s in streams],
        "rtt": statistics.median(rtt),
        "total": statistics.median(s.total for s in streams),
        "ttft": statistics.median(s.ttft for s in streams),
        "per_token": statistics.median(per_token),
        "single_tps": statistics.median(len(s.ids) / s.total for s in streams),
        "conc_tps": await concurrent(engine, conc, out_tokens, offset=1000),
        "cached": await cached_ratio(engine),
    }


async def bench(model: str, gpu: bool, quick: bool) -> list[Figure]:
    from harmony_agent.engine import OpenAICompatibleEngine
    from harmony_agent.engine.vllm import VLLMEngine

    repeat = 5 if quick else 20
    out_tokens = 64 if not gpu else 256
    conc = 8 if not gpu and quick else 32
    engine = VLLMEngine(model, **({} if gpu else CPU_ARGS))
    async with engine:
        local = await measure(engine, repeat, out_tokens, conc)
    with vllm_server(model, gpu=gpu, timeout=900) as url:
        async with OpenAICompatibleEngine(url) as http_engine:
            remote = await measure(http_engine, repeat, out_tokens, conc)
    same = local["ids"] == remote["ids"]
    where = "GPU" if gpu else "CPU, tiny random gpt-oss"
    g = f"vLLM, {where}"
    figures = [
        Figure(g, "same sampled tokens in-process and over HTTP", float(same), "bool", "1"),
    ]
    for name, r in (("in-process", local), ("HTTP", remote)):
        figures += [
            Figure(g, f"{name}: request, 1 output token", r["rtt"] * 1e3, "ms", "", "median"),
            Figure(
                g, f"{name}: time to first token", r["ttft"] * 1e3, "ms", "", "512-token prompt"
            ),
            Figure(g, f"{name}: time per output token", r["per_token"] * 1e3, "ms"),
            Figure(g, f"{name}: one stream", r["single_tps"], "tok/s", "", f"{out_tokens} tokens"),
            Figure(g, f"{name}: {conc} streams at once", r["conc_tps"], "tok/s", "", "aggregate"),
            Figure(
                g,
                f"{name}: cached share of prompt, turns 2+",
                r["cached"] * 100,
                "%",
                "",
                "agent run",
            ),
        ]
    figures += [
        Figure(
            g,
            "HTTP hop per request",
            (remote["rtt"] - local["rtt"]) * 1e3,
            "ms",
            "",
            "HTTP minus in-process",
        ),
        Figure(
            g,
            "HTTP hop per token",
            (remote["per_token"] - local["per_token"]) * 1e3,
            "ms",
            "",
            "HTTP minus in-process",
        ),
    ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--model", help="model name or path (default: the tiny random gpt-oss)")
    parser.add_argument("--gpu", action="store_true", help="GPU defaults instead of CPU settings")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tiny_gptoss import build, chains

            enc = load_encoding()
            planted = chains(lambda s: enc.encode(s, allowed_special="all"))
            # end-of-sequence only on <|endoftext|>: requests without stop ids run full length
            model = str(build(Path(tmp), planted, eos=(199999,)))
        figures = anyio.run(bench, model, args.gpu, args.quick)
    print_table(figures, f"vLLM engine benchmarks ({time.perf_counter() - start:.0f} s)")
    if args.json:
        write_json(figures, args.json, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
