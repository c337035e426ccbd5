"""Many streams against a local server (bench/_fake_server.py: 80 tok/s per stream, one token
id per SSE event, first token after 200 ms): client CPU per streamed token, layer by layer and
per HTTP client, then event-loop lag, CPU and memory per session for 256 and 1,024 agent runs
in one process and over two worker processes.

Every measurement runs in a fresh process of its own (``--one``), after a warm-up run that is
not counted, so imports and first connections do not land on the per-token figure.
Targets: ≤ 40 µs client CPU per token through the agent loop; p99 lag ≤ 20 ms at 256 runs.
Run: ``python bench/bench_concurrency.py [--quick]``.

``BENCH_BASELINE=DIR`` adds the agent layer as an earlier version of this repository in DIR
(e.g. ``git archive REV | tar -x -C DIR``) runs it, for a before/after in one run.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _report import Figure, main_cli
from harmony_agent import Agent, tool
from harmony_agent.engine import GenerationRequest, OpenAICompatibleEngine

HERE = Path(__file__).parent

#: the layers measured, each with either HTTP client: bare client bytes, the engine's
#: chunks, the whole agent loop (2 turns per run)
LAYERS = ("bare", "engine", "agent")
CLIENTS = ("httpx", "aiohttp")


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


def start_server(first_token: float, tok_s: float = 80) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_fake_server.py"),
            str(port),
            "--tok-s",
            str(tok_s),
            "--first-token",
            str(first_token),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, f"http://127.0.0.1:{port}/v1"


def make_engine(url: str, client: str) -> OpenAICompatibleEngine:
    import httpx

    transport = httpx.AsyncHTTPTransport() if client == "httpx" else None
    return OpenAICompatibleEngine(url, model="fake-gpt-oss", max_retries=0, transport=transport)


async def _bare(url: str, client: str, runs: int) -> int:
    """The HTTP client alone: the events of one answer per run, counted, not parsed."""
    from _fake_server import TOOL_MARK

    body = {"model": "fake-gpt-oss", "prompt": [1, *TOOL_MARK], "stream": True}
    events = 0

    async def one_httpx(http) -> None:
        nonlocal events
        async with http.stream("POST", f"{url}/completions", json=body) as response:
            async for data in response.aiter_raw():
                events += data.count(b"\ndata:") + data.startswith(b"data:")

    async def one_aiohttp(session) -> None:
        nonlocal events
        async with session.post(f"{url}/completions", json=body) as response:
            async for data in response.content.iter_any():
                events += data.count(b"\ndata:") + data.startswith(b"data:")

    if client == "httpx":
        import httpx

        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=None)) as http:
            async with anyio.create_task_group() as tg:
                for _ in range(runs):
                    tg.start_soon(one_httpx, http)
    else:
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async with anyio.create_task_group() as tg:
                for _ in range(runs):
                    tg.start_soon(one_aiohttp, session)
    return events - runs  # the [DONE] event of each answer carries no token


async def _engine(engine: OpenAICompatibleEngine, runs: int) -> int:
    """The engine's chunks of one answer per run (no agent loop)."""
    from _fake_server import TOOL_MARK

    tokens = 0

    async def one() -> None:
        nonlocal tokens
        request = GenerationRequest(prompt_ids=[1, *TOOL_MARK], max_tokens=1000)
        async for chunk in engine.generate(request):
            tokens += len(chunk.token_ids)

    async with anyio.create_task_group() as tg:
        for _ in range(runs):
            tg.start_soon(one)
    return tokens


async def _agent(agent: Agent, runs: int) -> int:
    tokens = 0

    async def one() -> None:
        nonlocal tokens
        result = await agent.run("What is alpha?")
        assert result.final_text.startswith("The value"), result.final_text
        tokens += result.usage.output_tokens

    async with anyio.create_task_group() as tg:
        for _ in range(runs):
            tg.start_soon(one)
    return tokens


async def scenario(
    url: str, layer: str, client: str, runs: int, idle_probe_at: float | None = None
) -> dict[str, float]:
    engine = make_engine(url, client)
    agent = Agent(tools=[lookup], engine=engine, reasoning_effort="low")

    async def step(n: int) -> int:
        if layer == "bare":
            return await _bare(url, client, n)
        if layer == "engine":
            return await _engine(engine, n)
        return await _agent(agent, n)

    await step(4)  # warm-up: imports, the client, the first connections; not counted
    lags: list[float] = []
    busy: list[float] = []  # this thread's own CPU time in each probe interval
    idle_rss: list[float] = []
    done = anyio.Event()
    tokens = 0

    async def probe() -> None:
        while not done.is_set():
            t, c = time.perf_counter(), time.thread_time()
            await anyio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)
            busy.append(time.thread_time() - c)

    async def work() -> None:
        nonlocal tokens
        tokens = await step(runs)

    base_rss, base_cpu, started = rss_mb(), cpu_s(), time.perf_counter()
    async with anyio.create_task_group() as outer:
        outer.start_soon(probe)
        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            if idle_probe_at is not None:
                await anyio.sleep(idle_probe_at)
                idle_rss.append(rss_mb())
        done.set()
    wall = time.perf_counter() - started
    cpu = cpu_s() - base_cpu
    peak = rss_mb()
    await engine.aclose()
    lags.sort()
    busy.sort()
    return {
        "busy_p50": busy[len(busy) // 2] * 1e3,
        "busy_p99": busy[int(len(busy) * 0.99)] * 1e3,
        "runs": runs,
        "tokens": tokens,
        "wall": wall,
        "cpu_s": cpu,
        "cpu_pct": 100 * cpu / wall,
        "lag_p50": lags[len(lags) // 2] * 1e3,
        "lag_p99": lags[int(len(lags) * 0.99)] * 1e3,
        "idle_mb_per_session": ((idle_rss[0] - base_rss) / runs) if idle_rss else 0.0,
        "mb_per_session": max(0.0, peak - base_rss) / runs,
        "cpu_us_per_token": cpu / max(1, tokens) * 1e6,
    }


def one_process(argv: list[str]) -> None:
    """``--one URL LAYER CLIENT RUNS LOOP [IDLE_AT]``: one measurement, printed as JSON."""
    url, layer, client, runs, loop = argv[:5]
    idle_at = float(argv[5]) if len(argv) > 5 else None
    options = {"use_uvloop": True} if loop == "uvloop" else {}
    result = anyio.run(scenario, url, layer, client, int(runs), idle_at, backend_options=options)
    print(json.dumps(result), flush=True)


def _baseline_path(tree: Path, shim: Path) -> Path:
    """``shim``, made a directory from which ``harmony_agent`` imports the checkout ``tree``."""
    package = shim / "harmony_agent"
    if not package.exists():
        package.mkdir(parents=True)
        for item in (tree / "agent").iterdir():
            (package / item.name).symlink_to(item.resolve())
        for name in ("engine", "tools"):
            (package / name).symlink_to((tree / name).resolve())
    return shim


def measure(
    layer: str,
    client: str,
    runs: int,
    *,
    loop: str = "asyncio",
    workers: int = 1,
    first_token: float = 0.2,
    idle_at: float | None = None,
    baseline: Path | None = None,
) -> dict[str, float]:
    """One scenario against its own fresh server; ``workers`` processes share the runs;
    ``baseline``: the code of an earlier checkout instead of this one."""
    env = dict(os.environ)
    shim = tempfile.TemporaryDirectory(prefix="harmony-baseline-")
    if baseline is not None:
        env["PYTHONPATH"] = str(_baseline_path(baseline, Path(shim.name)))
    server, url = start_server(first_token)
    try:
        args = [url, layer, client, str(runs // workers), loop]
        if idle_at is not None:
            args.append(str(idle_at))
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--one", *args],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(workers)
        ]
        results = []
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"measurement {args} failed (exit {proc.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait()
        shim.cleanup()
    tokens = sum(r["tokens"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    wall = max(r["wall"] for r in results)
    return {
        "tokens": tokens,
        "wall": wall,
        "cpu_pct": 100 * cpu / wall,
        "cpu_us_per_token": cpu / max(1, tokens) * 1e6,
        "lag_p50": max(r["lag_p50"] for r in results),
        "lag_p99": max(r["lag_p99"] for r in results),
        "busy_p50": max(r["busy_p50"] for r in results),
        "busy_p99": max(r["busy_p99"] for r in results),
        "idle_mb_per_session": max(r["idle_mb_per_session"] for r in results),
        "mb_per_session": max(r["mb_per_session"] for r in results),
        "tok_s": tokens / wall,
    }


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(quick: bool = False) -> list[Figure]:
    figures: list[Figure] = []
    # 1. client CPU per streamed token, per layer and client (the "before" of the agent
    # layer is httpx, the client every request went through until aiohttp became the default)
    loops = ("asyncio", "uvloop") if _has_uvloop() else ("asyncio",)
    streams = 64 if quick else 128
    for layer in LAYERS:
        for client in CLIENTS:
            for loop in loops:
                r = measure(layer, client, streams, loop=loop)
                figures.append(
                    Figure(
                        "client CPU",
                        f"{layer}, {client}, {loop}",
                        r["cpu_us_per_token"],
                        "µs/token",
                        "≤ 40" if layer == "agent" else "",
                        f"{streams} streams, lag p99 {r['lag_p99']:.0f} ms",
                    )
                )
    if os.environ.get("BENCH_BASELINE"):
        tree = Path(os.environ["BENCH_BASELINE"])
        r = measure("agent", "httpx", streams, baseline=tree)
        figures.append(
            Figure(
                "client CPU",
                "agent, before (BENCH_BASELINE), asyncio",
                r["cpu_us_per_token"],
                "µs/token",
                "≤ 40",
                f"{streams} streams, lag p99 {r['lag_p99']:.0f} ms",
            )
        )
    # 2. sessions: idle memory, then busy streams, one process and two workers
    best = "uvloop" if _has_uvloop() else "asyncio"
    idle = measure(
        "agent", "aiohttp", 64 if quick else 256, loop=best, first_token=6.0, idle_at=3.0
    )
    figures.append(
        Figure(
            "sessions",
            "RSS per idle session",
            idle["idle_mb_per_session"],
            "MB",
            "≤ 2",
            "all runs waiting for a first token",
        )
    )
    for runs in (64,) if quick else (256, 1024):
        for workers in (1, 2):
            r = measure("agent", "aiohttp", runs, loop=best, workers=workers)
            where = f"{runs} runs, {workers} process{'es' if workers > 1 else ''}"
            figures += [
                Figure(
                    "sessions",
                    f"lag p50 / p99, {where}",
                    r["lag_p99"],
                    "ms (p99)",
                    "≤ 20" if runs == 256 and workers == 1 else "",
                    f"p50 {r['lag_p50']:.1f} ms",
                ),
                Figure(
                    "sessions",
                    f"loop's own CPU per 10 ms probe, {where}",
                    r["busy_p99"],
                    "ms (p99)",
                    "",
                    f"p50 {r['busy_p50']:.1f} ms: lag beyond this is the machine, not us",
                ),
                Figure(
                    "sessions",
                    f"client CPU, {where}",
                    r["cpu_pct"],
                    "% of one core",
                    "",
                    f"{r['cpu_us_per_token']:.0f} µs/token, {r['tok_s']:,.0f} tok/s served",
                ),
                Figure(
                    "sessions",
                    f"RSS per busy session, {where}",
                    r["mb_per_session"],
                    "MB",
                    "",
                    f"wall {r['wall']:.1f} s",
                ),
            ]
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        one_process(sys.argv[2:])
    else:
        main_cli(run, "concurrency benchmark")
