"""256 agent runs in one process against a local streaming server (80 tok/s per stream, first
token after 200 ms) through OpenAICompatibleEngine: event-loop lag, CPU, memory per session.
Targets: p99 lag ≤ 20 ms, ≤ 2 MB per idle session. Run: ``python bench/bench_concurrency.py``."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _report import Figure, main_cli
from harmony_agent import Agent, tool
from harmony_agent.engine import OpenAICompatibleEngine

HERE = Path(__file__).parent


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"{key} = 42"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(first_token: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_fake_server.py"),
            str(port),
            "--tok-s",
            "80",
            "--first-token",
            str(first_token),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, f"http://127.0.0.1:{port}/v1"


async def scenario(url: str, runs: int, idle_probe_at: float | None) -> dict[str, float]:
    engine = OpenAICompatibleEngine(url, model="fake-gpt-oss", max_retries=0)
    agent = Agent(tools=[lookup], engine=engine, reasoning_effort="low")
    lags: list[float] = []
    done = anyio.Event()
    idle_rss: list[float] = []

    async def probe() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await anyio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    ok = tokens = 0

    async def one() -> None:
        nonlocal ok, tokens
        result = await agent.run("What is alpha?")
        ok += result.final_text.startswith("The value")
        tokens += result.usage.output_tokens

    base_rss, base_cpu, started = rss_mb(), cpu_s(), time.perf_counter()
    async with anyio.create_task_group() as outer:
        outer.start_soon(probe)
        async with anyio.create_task_group() as tg:
            for _ in range(runs):
                tg.start_soon(one)
            if idle_probe_at is not None:
                await anyio.sleep(idle_probe_at)
                idle_rss.append(rss_mb())
        done.set()
    wall = time.perf_counter() - started
    cpu = cpu_s() - base_cpu
    await engine.aclose()
    lags.sort()
    return {
        "ok": ok,
        "wall": wall,
        "cpu_pct": 100 * cpu / wall,
        "lag_p50": lags[len(lags) // 2] * 1e3,
        "lag_p99": lags[int(len(lags) * 0.99)] * 1e3,
        "idle_mb_per_session": ((idle_rss[0] - base_rss) / runs) if idle_rss else 0.0,
        "peak_rss": rss_mb(),
        "cpu_us_per_token": cpu / max(1, tokens) * 1e6,
    }


def measure(first_token: float, runs: int, idle_probe_at: float | None = None) -> dict:
    """One scenario against its own fresh server."""
    server, url = start_server(first_token)
    try:
        return anyio.run(scenario, url, runs, idle_probe_at)
    finally:
        server.terminate()
        server.wait()


def run(quick: bool = False) -> list[Figure]:
    runs = 64 if quick else 256
    # 1. idle sessions, every run waiting on its first token (first, so that no earlier
    # scenario has left freed memory for the sessions to reuse)
    idle = measure(6.0, runs, idle_probe_at=3.0)
    # 2. the realistic pace: lag and CPU while every stream is busy; fewer runs first, to
    # show how many streams one event loop carries within the lag target on this machine
    lighter = [(n, measure(0.2, n)) for n in ((32, 64) if runs > 64 else (16,))]
    busy = measure(0.2, runs)
    assert busy["ok"] == runs and idle["ok"] == runs, (busy, idle)
    note = f"{runs} runs, 2 turns each, 80 tok/s per stream"
    return [
        *[
            Figure(
                "concurrency",
                f"event-loop lag p99 ({n} runs)",
                r["lag_p99"],
                "ms",
                "",
                f"p50 {r['lag_p50']:.1f} ms, client CPU {r['cpu_pct']:.0f}%",
            )
            for n, r in lighter
        ],
        Figure("concurrency", f"event-loop lag p50 ({runs} runs)", busy["lag_p50"], "ms", "", note),
        Figure(
            "concurrency", f"event-loop lag p99 ({runs} runs)", busy["lag_p99"], "ms", "≤ 20", note
        ),
        Figure(
            "concurrency",
            "client CPU while streaming",
            busy["cpu_pct"],
            "% of one core",
            "",
            f"wall {busy['wall']:.1f} s",
        ),
        Figure(
            "concurrency",
            "client CPU per streamed token",
            busy["cpu_us_per_token"],
            "µs",
            "",
            "httpx + SSE + the agent loop; one SSE event per token",
        ),
        Figure(
            "concurrency",
            "RSS per idle session",
            idle["idle_mb_per_session"],
            "MB",
            "≤ 2",
            "all runs waiting for a first token",
        ),
    ]


if __name__ == "__main__":
    main_cli(run, "concurrency benchmark")
