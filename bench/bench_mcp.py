"""MCP toolsets and tracing: what they cost.

    python bench/bench_mcp.py [--quick] [--json FILE]

- connect + list: the first run of an agent with one MCP server (spawns the stdio server,
  the initialize handshake, tools/list), minus the same run without the server;
- per call: one tools/call round trip over the shared connection (stdio, streamable HTTP),
  arguments validated and the result turned into the tool message;
- tracing: what recording one run (3 turns, 2 tool calls) as OpenTelemetry spans adds.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _report import Figure, main_cli

ROOT = Path(__file__).resolve().parent.parent
SERVER = str(ROOT / "tests" / "mcp_server.py")

FINAL = "<|channel|>final<|message|>done<|return|>"


def _call(name: str, body: str) -> str:
    return f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{body}<|call|>"


async def _first_run(with_server: bool) -> float:
    from harmony_agent import Agent
    from harmony_agent.engine import ScriptedEngine
    from harmony_agent.tools.mcp import MCPServerStdio

    tools = (
        [MCPServerStdio(sys.executable, args=[SERVER, "stdio"], prefix="t")] if with_server else []
    )
    start = time.perf_counter()
    async with Agent(tools=tools, engine=ScriptedEngine([FINAL])) as agent:
        await agent.run("go")
        elapsed = time.perf_counter() - start
    return elapsed


async def _per_call(server, calls: int) -> float:
    from harmony_agent.tools import RunContext

    async with anyio.create_task_group() as tg:
        async with RunContext.open(task_group=tg, shared=True) as ctx:
            await server.prepare(ctx)
            (add,) = [t for t in server.tools() if t.name.endswith("__add")]
            for _ in range(3):
                await add.invoke('{"a": 1, "b": 2}', ctx)
            samples = []
            for _ in range(calls):
                start = time.perf_counter()
                result = await add.invoke('{"a": 1, "b": 2}', ctx)
                samples.append(time.perf_counter() - start)
                assert result.ok and result.text == "3", result
        await server.aclose()
    return statistics.median(samples)


async def _traced_run(traced: bool) -> float:
    from harmony_agent import Agent, tool
    from harmony_agent.engine import ScriptedEngine
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    provider = None
    if traced:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    script = [_call("add", '{"a":1,"b":2}'), _call("add", '{"a":3,"b":4}'), FINAL]
    agent = Agent(tools=[add], engine=ScriptedEngine(script * 40), tracer_provider=provider)
    await agent.run("warm up")
    samples = []
    for _ in range(39):
        start = time.perf_counter()
        await agent.run("add")
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(quick: bool) -> list[Figure]:
    from harmony_agent.tools.mcp import MCPServerStdio, MCPServerStreamableHTTP

    repeat = 3 if quick else 7
    calls = 30 if quick else 200
    plain = statistics.median(anyio.run(_first_run, False) for _ in range(repeat))
    first = statistics.median(anyio.run(_first_run, True) for _ in range(repeat))
    figures = [
        Figure(
            "mcp",
            "connect + list tools (stdio, first run)",
            (first - plain) * 1e3,
            "ms",
            "",
            "spawns a Python server",
        ),
    ]
    stdio = MCPServerStdio(sys.executable, args=[SERVER, "stdio"], prefix="t")
    figures.append(
        Figure(
            "mcp", "tools/call round trip (stdio)", anyio.run(_per_call, stdio, calls) * 1e3, "ms"
        )
    )
    port = _free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "http", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        http = MCPServerStreamableHTTP(f"http://127.0.0.1:{port}/mcp", prefix="h")
        figures.append(
            Figure(
                "mcp",
                "tools/call round trip (streamable HTTP)",
                anyio.run(_per_call, http, calls) * 1e3,
                "ms",
            )
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    off = anyio.run(_traced_run, False)
    on = anyio.run(_traced_run, True)
    figures.append(Figure("otel", "run of 3 turns, 2 tool calls, untraced", off * 1e3, "ms"))
    figures.append(
        Figure(
            "otel",
            "the same run traced (in-memory exporter)",
            on * 1e3,
            "ms",
            "",
            f"+{(on - off) * 1e3:.2f} ms for 6 spans",
        )
    )
    return figures


if __name__ == "__main__":
    main_cli(run, "MCP and tracing benchmarks")
