"""What constraining the final answer costs on vLLM: time per output token with no constraint,
with the final-channel structural tag armed but not yet triggered (reasoning, tool calls), and
inside a JSON answer held to a schema; and the first request with a new schema (the grammar
is compiled) beside a repeat (cached).

Runs in the vLLM environment (``make setup-vllm``)::

    .venv-vllm/bin/python bench/bench_structured.py          # tiny random gpt-oss on the CPU
    .venv-vllm/bin/python bench/bench_structured.py --model openai/gpt-oss-20b --gpu

Without ``--model`` it builds the tests' tiny random gpt-oss with a tokenizer (grammars need
one) and no planted chains, in a temporary directory. Random weights rarely close a JSON
string or write a stop token, so every request samples close to ``max_tokens`` and the
figures compare the same amount of work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "engine"))
from _report import Figure, print_table, write_json
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import GenerationRequest
from vllm_server import CPU_ARGS

ENC = load_encoding()
USER = "<|start|>user<|message|>Describe it.<|end|><|start|>assistant"
#: a long free-text field: the grammar is at work on every token and rarely ends the answer
SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}


def ids(text: str) -> list[int]:
    return ENC.encode(text, allowed_special="all")


async def timed(engine, prompt: list[int], max_tokens: int, seed: int, schema) -> tuple[float, int]:
    request = GenerationRequest(
        prompt_ids=prompt, max_tokens=max_tokens, temperature=1.0, seed=seed, output_schema=schema
    )
    start = time.perf_counter()
    n = 0
    async for chunk in engine.generate(request):
        n += len(chunk.token_ids)
    return time.perf_counter() - start, n


async def bench(model: str, gpu: bool, quick: bool) -> list[Figure]:
    from harmony_agent.engine.vllm import VLLMEngine

    settings = {} if gpu else dict(CPU_ARGS)
    engine = VLLMEngine(model, **settings, skip_tokenizer_init=False)
    await engine.start()
    repeat, max_tokens = (4, 32) if quick else (12, 96)
    in_final = ids(USER + "<|channel|>final<|message|>")
    free = ids(USER)
    g = "structured output"
    try:
        await timed(engine, free, 8, 0, None)  # warm-up
        first, _ = await timed(engine, in_final, 4, 0, SCHEMA)  # compiles the grammar
        again, _ = await timed(engine, in_final, 4, 0, SCHEMA)
        per_token: dict[str, float] = {}
        lengths: dict[str, float] = {}
        cases = {
            "no constraint": (free, None),
            "tag armed, not triggered": (free, SCHEMA),
            "inside the JSON answer": (in_final, SCHEMA),
        }
        for name, (prompt, schema) in cases.items():
            samples = [await timed(engine, prompt, max_tokens, s, schema) for s in range(repeat)]
            per_token[name] = statistics.median(t / max(n, 1) for t, n in samples)
            lengths[name] = statistics.median(n for _, n in samples)
    finally:
        await engine.aclose()
    base = per_token["no constraint"]
    figures = [
        Figure(
            g,
            f"{name}: time per output token",
            value * 1e3,
            "ms",
            "",
            f"{lengths[name]:.0f} tokens",
        )
        for name, value in per_token.items()
    ]
    figures += [
        Figure(g, f"{name}: added per token", (value - base) * 1e3, "ms", "", "minus no constraint")
        for name, value in per_token.items()
        if name != "no constraint"
    ]
    figures += [
        Figure(g, "first request with a new schema", first * 1e3, "ms", "", "grammar compiled"),
        Figure(g, "the same schema again", again * 1e3, "ms", "", "4 tokens, cached grammar"),
    ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter requests")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--model", help="model name or path (default: the tiny random gpt-oss)")
    parser.add_argument("--gpu", action="store_true", help="GPU defaults instead of CPU settings")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tiny_gptoss import build, write_tokenizer

            model = str(write_tokenizer(build(Path(tmp), [])))
        figures = anyio.run(bench, model, args.gpu, args.quick)
    print_table(figures, f"structured output on vLLM ({time.perf_counter() - start:.0f} s)")
    if args.json:
        write_json(figures, args.json, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
