"""llama.cpp both ways on the same tiny model: ``LlamaServerEngine`` (llama-server over HTTP)
and ``LlamaCppEngine`` (llama-cpp-python in process) — request cost, time per token, time to
first token, streams at once and the cached share of each agent turn's prompt.

Runs in the llama.cpp environment (``make setup-llamacpp``)::

    .venv-llamacpp/bin/python bench/bench_llamacpp.py
    .venv-llamacpp/bin/python bench/bench_llamacpp.py --model gpt-oss-20b-mxfp4.gguf --gpu

Without ``--model`` it makes the tests' tiny random gpt-oss GGUF in a temporary directory
(bf16, the weights ``bench_engines.py`` gives vLLM, with the same prompts), so ``make bench``
prints these rows beside vLLM's. The streams run on a copy whose end-of-generation ids are
never sampled (llama.cpp cannot be told not to stop on them, vLLM can), the agent run on the
tests' model, whose planted chain makes every agent turn a function call.
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _report import Figure, print_table, write_json
from bench_engines import Stream, cached_ratio, prompt
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import Engine, GenerationRequest

from tests.engine.tiny_gguf import build_gguf, llama_server


def _common(a: list[int], b: list[int]) -> int:
    """How many leading ids two streams share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


async def one(engine: Engine, ids: list[int], max_tokens: int) -> Stream:
    s = Stream()
    # llama.cpp cannot drop its end-of-generation stops; the random prompts seldom reach one
    request = GenerationRequest(prompt_ids=ids, max_tokens=max_tokens, temperature=0.0)
    start = time.perf_counter()
    async for chunk in engine.generate(request):
        if not s.ids and chunk.token_ids:
            s.ttft = time.perf_counter() - start
        s.ids += chunk.token_ids
    s.total = time.perf_counter() - start
    return s


async def concurrent(engine: Engine, n: int, max_tokens: int) -> float:
    streams: list[Stream] = []

    async def run(i: int) -> None:
        streams.append(await one(engine, prompt(1000 + i, 64), max_tokens))

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(run, i)
    return sum(len(s.ids) for s in streams) / (time.perf_counter() - start)


async def measure(
    engine: Engine, agent_engine: Engine, repeat: int, out_tokens: int, conc: int
) -> dict[str, Any]:
    await one(engine, prompt(10_000, 512), 8)  # warm up
    rtt = [(await one(engine, prompt(2000 + i, 16), 1)).total for i in range(repeat * 6)]
    streams = [await one(engine, prompt(i, 512), out_tokens) for i in range(repeat)]
    per_token = [(s.total - s.ttft) / max(1, len(s.ids) - 1) for s in streams]
    return {
        "ids": [s.ids for s in streams],
        "rtt": statistics.median(rtt),
        "ttft": statistics.median(s.ttft for s in streams),
        "per_token": statistics.median(per_token),
        # a random model sometimes samples an end-of-generation id early (llama.cpp always
        # stops there): one stream's rate counts the streams that ran their full length
        "single_tps": statistics.median(
            len(s.ids) / s.total
            for s in ([s for s in streams if len(s.ids) == out_tokens] or streams)
        ),
        "full": sum(len(s.ids) == out_tokens for s in streams),
        "n": len(streams),
        "conc_tps": await concurrent(engine, conc, out_tokens),
        "cached": await cached_ratio(agent_engine),
    }


async def bench(gguf: Path, agent_gguf: Path, gpu: bool, quick: bool) -> list[Figure]:
    from harmony_agent.engine import LlamaCppEngine, LlamaServerEngine

    repeat = 5 if quick else 20
    out_tokens = 256 if gpu else 64
    conc = 4
    # one thread on the CPU for both: the tiny model gains nothing from a second one
    layers = {"n_gpu_layers": -1} if gpu else {"n_threads": 1}
    async with (
        LlamaCppEngine(gguf, n_ctx=4096, **layers) as engine,
        LlamaCppEngine(agent_gguf, n_ctx=4096, **layers) as agent_engine,
    ):
        local = await measure(engine, agent_engine, repeat, out_tokens, conc)
    gpu_args = ("-ngl", "99", "-fa", "on") if gpu else ()
    threads = (os.cpu_count() or 1) if gpu else 1
    with (
        llama_server(
            gguf, slots=conc, ctx=4096 * conc, threads=threads, args=gpu_args, timeout=900
        ) as url,
        llama_server(agent_gguf, slots=1, ctx=4096, threads=threads, args=gpu_args) as agent_url,
    ):
        async with LlamaServerEngine(url) as server, LlamaServerEngine(agent_url) as agent:
            remote = await measure(server, agent, repeat, out_tokens, conc)
    where = "GPU" if gpu else "CPU, tiny random gpt-oss"
    g = f"llama.cpp, {where}"
    # greedy on random weights meets near-ties, where two batch layouts may round apart
    agree = [_common(a, b) for a, b in zip(local["ids"], remote["ids"], strict=True)]
    figures = [
        Figure(
            g,
            "greedy streams identical in-process and llama-server",
            sum(n == out_tokens for n in agree),
            "streams",
            "",
            f"of {len(agree)}",
        ),
        Figure(
            g,
            "greedy tokens in common before the first difference",
            statistics.median(agree),
            "tokens",
            "",
            f"median, of {out_tokens}",
        ),
    ]
    for name, r in (("in-process", local), ("llama-server", remote)):
        figures += [
            Figure(g, f"{name}: request, 1 output token", r["rtt"] * 1e3, "ms", "", "median"),
            Figure(
                g, f"{name}: time to first token", r["ttft"] * 1e3, "ms", "", "512-token prompt"
            ),
            Figure(g, f"{name}: time per output token", r["per_token"] * 1e3, "ms"),
            Figure(
                g,
                f"{name}: one stream",
                r["single_tps"],
                "tok/s",
                "",
                f"{out_tokens} tokens ({r['full']}/{r['n']} ran full length)",
            ),
            Figure(
                g,
                f"{name}: {conc} streams at once",
                r["conc_tps"],
                "tok/s",
                "",
                "queued one at a time" if name == "in-process" else f"-np {conc}",
            ),
            Figure(
                g,
                f"{name}: cached share of prompt, turns 2+",
                r["cached"] * 100,
                "%",
                "",
                "agent run",
            ),
        ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--model", type=Path, help="a gpt-oss GGUF (default: the tiny one)")
    parser.add_argument("--gpu", action="store_true", help="offload every layer (-ngl 99)")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = agent_gguf = args.model
        if gguf is None:
            enc = load_encoding()
            encode = lambda s: enc.encode(s, allowed_special="all")  # noqa: E731
            # streams on a model that never stops; the agent run on the tests' model
            _, gguf = build_gguf(Path(tmp) / "endless", encode, endless=True)
            _, agent_gguf = build_gguf(Path(tmp) / "agent", encode)
        figures = anyio.run(bench, gguf, agent_gguf, args.gpu, args.quick)
    print_table(figures, f"llama.cpp engine benchmarks ({time.perf_counter() - start:.0f} s)")
    if args.json:
        write_json(figures, args.json, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
