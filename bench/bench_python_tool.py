"""Python sandbox: session start, warm round trip of a trivial call, the same with 10,000 files
in the data directory (the host walks it after each cell and while one runs, off the event
loop), and a cold start per call (a fresh sandbox for every call, as a `docker run` per call
would do). Targets: start ≤ 100 ms, warm round trip ≤ 5 ms (medians).
Run: ``python bench/bench_python_tool.py``."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _report import Figure, main_cli
from harmony_agent.tools.python._session import SandboxSession, bubblewrap_available


async def measure(mode: str, starts: int, calls: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="ha-bench-"))
    root.chmod(0o711)
    start_times, warm, full, cold = [], [], [], []
    for i in range(starts):
        session = SandboxSession(root / f"s{i}", mode=mode)  # type: ignore[arg-type]
        start_times.append(await session.start())
        if i == 0:
            for _ in range(calls):
                t = time.perf_counter()
                await session.execute("x = 1\nx + 1", 10)
                warm.append(time.perf_counter() - t)
            await session.execute(
                "import os\nfor i in range(100):\n    os.mkdir(f'd{i}')\n"
                "    for j in range(100): open(f'd{i}/f{j}', 'w').close()",
                60,
            )
            for _ in range(max(10, calls // 10)):
                t = time.perf_counter()
                await session.execute("x = 1\nx + 1", 10)
                full.append(time.perf_counter() - t)
        await session.close()
    for i in range(starts):
        t = time.perf_counter()
        session = SandboxSession(root / f"c{i}", mode=mode)  # type: ignore[arg-type]
        await session.execute("x = 1\nx + 1", 10)
        await session.close()
        cold.append(time.perf_counter() - t)
    return {
        "start": statistics.median(start_times) * 1e3,
        "warm": statistics.median(warm) * 1e3,
        "full": statistics.median(full) * 1e3,
        "cold": statistics.median(cold) * 1e3,
    }


def run(quick: bool = False) -> list[Figure]:
    figures = []
    modes = ["bubblewrap", "process"] if bubblewrap_available() else ["process"]
    for mode in modes:
        r = anyio.run(measure, mode, 10 if quick else 30, 100 if quick else 500)
        figures += [
            Figure("python", f"{mode}: session start", r["start"], "ms", "≤ 100", "median"),
            Figure("python", f"{mode}: warm round trip", r["warm"], "ms", "≤ 5", "`x + 1`, median"),
            Figure(
                "python",
                f"{mode}: warm round trip, 10,000 files in the data dir",
                r["full"],
                "ms",
                "",
                "one bounded walk per call, in a thread",
            ),
            Figure(
                "python",
                f"{mode}: cold start + call + close",
                r["cold"],
                "ms",
                "",
                "a fresh sandbox per call",
            ),
        ]
    return figures


if __name__ == "__main__":
    main_cli(run, "python sandbox benchmarks")
