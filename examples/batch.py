"""Many tasks at once: runs concurrently in one process, a progress bar, results as JSON lines.

    python examples/batch.py                                             # sample tasks, offline
    python examples/batch.py tasks.txt -o results.jsonl                  # offline demo model
    python examples/batch.py tasks.txt -o results.jsonl --engine http://localhost:8000/v1 -j 32

One task per line in the input (without one, a few sample tasks). Each run is independent
(its own tools' state); a failed run is recorded with its error and the batch goes on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import anyio
from harmony_agent import Agent, tool
from harmony_agent.cli import make_engine
from harmony_agent.engine import Engine, FunctionEngine, GenerationRequest
from harmony_agent.errors import HarmonyAgentError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

SAMPLE_TASKS = [
    "Count the words of this sentence, please.",
    "How many words are in: the quick brown fox jumps over the lazy dog",
    "Word count of: to be or not to be",
    "Count: one two three",
]


@tool
def word_count(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


def offline_model(request: GenerationRequest, turn: int) -> str:
    """Stands in for gpt-oss offline: calls word_count on the task, then reports the count."""
    from harmony_agent._encoding import load_encoding

    prompt = load_encoding().decode(list(request.prompt_ids))
    if "<|start|>functions.word_count" not in prompt:
        task = prompt.rsplit("<|start|>user<|message|>", 1)[1].split("<|end|>", 1)[0]
        return (
            "<|channel|>commentary to=functions.word_count <|constrain|>json<|message|>"
            + json.dumps({"text": task})
            + "<|call|>"
        )
    count = prompt.rsplit("<|message|>", 1)[1].split("<|end|>", 1)[0]
    return f"<|channel|>final<|message|>{count} words.<|return|>"


async def run_batch(tasks: list[str], engine: Engine, output: Path, concurrency: int) -> dict:
    agent = Agent(
        "Answer with the tools.", tools=[word_count], engine=engine, reasoning_effort="low"
    )
    limiter = anyio.CapacityLimiter(concurrency)
    results: list[dict | None] = [None] * len(tasks)
    started = time.perf_counter()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        bar = progress.add_task("runs", total=len(tasks))

        async def one(i: int, task: str) -> None:
            async with limiter:
                try:
                    result = await agent.run(task)
                    results[i] = {
                        "task": task,
                        "ok": True,
                        "answer": result.final_text,
                        "tool_calls": len(result.tool_calls),
                        "prompt_tokens": result.usage.prompt_tokens,
                        "cached_tokens": result.usage.cached_prompt_tokens,
                        "output_tokens": result.usage.output_tokens,
                    }
                except HarmonyAgentError as exc:
                    results[i] = {
                        "task": task,
                        "ok": False,
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                progress.advance(bar)

        async with anyio.create_task_group() as tg:
            for i, task in enumerate(tasks):
                tg.start_soon(one, i, task)
    with output.open("w", encoding="utf-8") as f:
        for row in results:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    ok = sum(1 for r in results if r and r["ok"])
    return {"runs": len(tasks), "ok": ok, "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "tasks", type=Path, nargs="?", help="a text file, one task per line (default: samples)"
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("results.jsonl"))
    parser.add_argument("-j", "--concurrency", type=int, default=16)
    parser.add_argument("--engine", help="vllm[:MODEL], http://HOST:PORT/v1 (default: offline)")
    args = parser.parse_args(argv)
    if args.tasks is None:
        tasks = SAMPLE_TASKS
    else:
        try:
            lines = args.tasks.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            parser.error(f"cannot read the tasks file: {exc}")
        tasks = [t.strip() for t in lines if t.strip()]
    engine = make_engine(args.engine) if args.engine else FunctionEngine(offline_model)
    summary = anyio.run(run_batch, tasks, engine, args.output, args.concurrency)
    print(
        f"{summary['ok']}/{summary['runs']} runs answered in {summary['seconds']:.2f} s "
        f"-> {args.output}",
        file=sys.stderr,
    )
    return 0 if summary["ok"] == summary["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
