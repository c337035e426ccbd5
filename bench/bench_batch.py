"""Batch throughput (tasks/s) on the same tasks: one process, two worker processes, and two
actors on a local Ray (2 CPUs), against the local streaming server (bench/_fake_server.py;
each task is a tool call then an answer, ~110 streamed tokens). The same total concurrency
everywhere. Run: ``python bench/bench_batch.py [--quick]``."""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import Figure, main_cli
from bench_concurrency import lookup, start_server
from harmony_agent import Agent
from harmony_agent.batch import run_batch_sync
from harmony_agent.engine import OpenAICompatibleEngine

TOK_S = 400  # a fast server: the client side is what is measured
CONCURRENCY = 32


def make_agent(url: str) -> Agent:
    """Module-level, so worker processes and Ray actors can build it by name."""
    engine = OpenAICompatibleEngine(url, model="fake-gpt-oss", max_retries=0)
    return Agent(tools=[lookup], engine=engine, reasoning_effort="low")


def one(url: str, tasks: list[dict], label: str, **options) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = run_batch_sync(
            tasks, functools.partial(make_agent, url), Path(tmp) / "results.jsonl", **options
        )
        seconds = time.perf_counter() - started
    assert summary.failed == 0 and summary.ok == len(tasks), (label, summary)
    return len(tasks) / seconds, summary.ok


def run(quick: bool = False) -> list[Figure]:
    count = 64 if quick else 256
    tasks = [{"id": f"t{i}", "task": f"What is alpha? ({i})"} for i in range(count)]
    server, url = start_server(0.05, tok_s=TOK_S)  # serves every configuration
    figures = []
    try:
        configs = [
            ("1 process", {"concurrency": CONCURRENCY}),
            ("2 worker processes", {"concurrency": CONCURRENCY // 2, "workers": 2}),
        ]
        try:
            import ray

            ray.init(
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
                runtime_env={"env_vars": {"PYTHONPATH": ":".join(p for p in sys.path if p)}},
            )
            configs.append(
                ("local Ray, 2 actors", {"concurrency": CONCURRENCY // 2, "workers": 2,
                                         "ray_address": None})
            )  # fmt: skip
        except ImportError:
            ray = None
        for label, options in configs:
            rate, ok = one(url, tasks, label, **options)
            figures.append(
                Figure(
                    "batch",
                    f"throughput, {label}",
                    rate,
                    "tasks/s",
                    "",
                    f"{ok} tasks, {CONCURRENCY} at once in all, 2 turns each",
                )
            )
        if ray is not None:
            ray.shutdown()
    finally:
        server.terminate()
        server.wait()
    return figures


if __name__ == "__main__":
    main_cli(run, "batch benchmark")
