"""MCP toolsets against real MCP servers (tests/mcp_server.py, the official SDK) driven by
ScriptedEngine / FunctionEngine: over stdio in a subprocess and over streamable HTTP on
127.0.0.1."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from harmony_agent import Agent
from harmony_agent.engine import FunctionEngine, ScriptedEngine
from harmony_agent.errors import ConfigurationError
from harmony_agent.tools.mcp import MCPServerSSE, MCPServerStdio, MCPServerStreamableHTTP

pytestmark = pytest.mark.anyio

SERVER = str(Path(__file__).resolve().parent.parent / "mcp_server.py")
PLAYWRIGHT_MCP = Path(__file__).resolve().parents[2] / ".venv/node/node_modules/.bin/playwright-mcp"
CHROMIUM = os.environ.get("PLAYWRIGHT_CHROMIUM_PATH", "/usr/lib/chromium/chromium")


def call(name: str, args: dict | str = "{}") -> str:
    body = args if isinstance(args, str) else json.dumps(args)
    return f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{body}<|call|>"


def final(text: str = "done") -> str:
    return f"<|channel|>final<|message|>{text}<|return|>"


def stdio(tmp_path: Path | None = None, **options) -> MCPServerStdio:
    env = {"MCP_TEST_MARKER": str(tmp_path / "starts.log")} if tmp_path else None
    return MCPServerStdio(sys.executable, args=[SERVER, "stdio"], env=env, **options)


def starts(tmp_path: Path) -> list[int]:
    log = tmp_path / "starts.log"
    return [int(line.split()[0]) for line in log.read_text().splitlines()] if log.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (its parent has not waited for it yet)
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def developer_text(agent: Agent) -> str:
    dev = agent.initial_messages("x")[1]
    return agent.encoding.decode(agent.encoding.render(dev))


async def test_tools_are_listed_on_first_run_and_declared(tmp_path):
    server = stdio(tmp_path, prefix="t")
    engine = ScriptedEngine([call("t__add", {"a": 2, "b": 3}), final("5")])
    agent = Agent(tools=[server], engine=engine)
    assert server.tools() == [] and starts(tmp_path) == []  # nothing at construction
    async with agent:
        result = await agent.run("2+3?")
    assert result.tool_calls[0].ok and result.tool_calls[0].output == "5"
    assert "functions.t__add" in result.events[0].tools  # run_started lists them
    text = developer_text(agent)
    assert (
        "namespace functions" in text and "type t__add = (_: {\na: number,\nb: number,\n})" in text
    )
    assert "// Add two integers." in text and "title" not in text.lower()
    # the first prompt the engine saw declared them
    prompt = agent.encoding.decode(engine.requests[0])
    assert "type t__echo = (_: {\ntext: string,\ntimes?: number, // default: 1" in prompt


async def test_structured_content_and_default_prefix(tmp_path):
    server = stdio(tmp_path, include=["add", "lookup"])
    engine = ScriptedEngine(
        [
            call("testsrv__lookup", {"city": "Paris"}),
            call("testsrv__add", {"a": 1, "b": 1}),
            final(),
        ]
    )
    async with Agent(tools=[server], engine=engine) as agent:
        result = await agent.run("weather?")
    assert sorted(agent.registry.tools) == ["functions.testsrv__add", "functions.testsrv__lookup"]
    assert json.loads(result.tool_calls[0].output) == {"city": "Paris", "temp_c": 21}
    assert result.tool_calls[1].output == "2"


async def test_exclude_and_no_prefix(tmp_path):
    server = stdio(tmp_path, prefix="", exclude=["crash", "crash_once", "slow"])
    async with Agent(
        tools=[server], engine=ScriptedEngine([call("echo", {"text": "hi", "times": 2}), final()])
    ) as agent:
        result = await agent.run("echo")
    assert (
        "functions.echo" in agent.registry.tools and "functions.crash" not in agent.registry.tools
    )
    assert result.tool_calls[0].output == "hi hi"


async def test_error_result_is_a_model_visible_tool_error(tmp_path):
    engine = ScriptedEngine([call("t__fail", {"reason": "disk full"}), final("sorry")])
    async with Agent(tools=[stdio(prefix="t")], engine=engine) as agent:
        result = await agent.run("try")
    record = result.tool_calls[0]
    assert not record.ok and record.error_kind == "tool_failed"
    assert "functions.t__fail reported an error" in record.output and "disk full" in record.output
    assert result.final_text == "sorry"
    # the model read the error in the tool message
    assert "disk full" in agent.encoding.decode(engine.requests[1])


async def test_arguments_are_checked_against_the_servers_schema_before_the_call(tmp_path):
    engine = ScriptedEngine([call("t__add", {"a": "two"}), final()])
    async with Agent(tools=[stdio(prefix="t")], engine=engine) as agent:
        result = await agent.run("add")
    record = result.tool_calls[0]
    assert not record.ok and record.error_kind == "invalid_arguments"
    assert "'b' is a required property" in record.output
    assert "'two' is not of type 'integer'" in record.output


async def test_images_and_binary_resources_are_saved_to_the_files_dir(tmp_path):
    files = tmp_path / "files"
    engine = ScriptedEngine([call("t__picture"), final()])
    async with Agent(tools=[stdio(prefix="t")], engine=engine, files_dir=files) as agent:
        result = await agent.run("picture")
    output = result.tool_calls[0].output
    assert output.startswith("here is the picture\n[image saved as picture-")
    saved = {p.suffix: p for p in files.iterdir()}
    assert saved[".png"].read_bytes().startswith(b"\x89PNG") and saved[".png"].name in output
    assert saved[".bin"].read_bytes() == b"\x00\x01"
    assert f"[resource file:///report.bin saved as {saved['.bin'].name} (2 bytes)]" in output


async def test_list_changed_refreshes_the_declared_tools(tmp_path):
    engine = ScriptedEngine(
        [call("t__grow"), final("grown"), call("t__extra", {"word": "hi"}), final("HI")]
    )
    async with Agent(tools=[stdio(tmp_path, prefix="t")], engine=engine) as agent:
        first = await agent.run("grow")
        assert "t__extra" not in developer_text(agent)
        await anyio.sleep(0.2)  # the notification follows the result
        second = await agent.run("use it")
    assert first.tool_calls[0].output == "added extra"
    assert "type t__extra = (_: {\nword: string,\n})" in agent.encoding.decode(engine.requests[2])
    assert second.tool_calls[0].ok and second.tool_calls[0].output == "HI"
    assert len(starts(tmp_path)) == 1  # one connection served both runs


async def test_a_crashed_server_is_reconnected_once_and_the_call_retried(tmp_path):
    marker = tmp_path / "crashed-once"
    engine = ScriptedEngine([call("t__crash_once", {"marker": str(marker)}), final()])
    async with Agent(tools=[stdio(tmp_path, prefix="t")], engine=engine) as agent:
        result = await agent.run("go")
    assert result.tool_calls[0].ok and result.tool_calls[0].output == "fine after a restart"
    warnings = [e.message for e in result.events if e.type == "warning"]
    assert len(warnings) == 1 and "lost its connection" in warnings[0]
    first, second = starts(tmp_path)
    assert not alive(first) and not alive(second)


async def test_a_server_that_keeps_crashing_gives_a_tool_error_and_a_warning(tmp_path):
    engine = ScriptedEngine([call("t__crash"), call("t__add", {"a": 1, "b": 2}), final()])
    async with Agent(tools=[stdio(tmp_path, prefix="t")], engine=engine) as agent:
        result = await agent.run("go")
    crash, add = result.tool_calls
    assert (
        not crash.ok
        and "stopped answering" in crash.output
        and "also after a restart" in crash.output
    )
    warnings = [e.message for e in result.events if e.type == "warning"]
    assert "reconnecting and calling again" in warnings[0] and "failed again" in warnings[1]
    assert add.ok and add.output == "3"  # the run goes on with a fresh connection
    assert len(starts(tmp_path)) == 3


async def test_a_server_that_died_between_runs_is_started_again(tmp_path):
    engine = ScriptedEngine([call("t__grow"), final(), call("t__pid"), final()])
    async with Agent(tools=[stdio(tmp_path, prefix="t")], engine=engine) as agent:
        await agent.run("grow")  # the tool list changed: the next run lists it again
        await anyio.sleep(0.2)
        (first,) = starts(tmp_path)
        os.kill(first, signal.SIGKILL)
        result = await agent.run("again")
        # listed by the new process, which never grew
        assert "functions.t__extra" not in agent.registry.tools
    _, second = starts(tmp_path)
    assert result.tool_calls[0].output == str(second)
    assert not [e for e in result.events if e.type == "warning"]  # mended before the prompt


async def test_a_hung_call_times_out_and_the_server_is_restarted(tmp_path):
    engine = ScriptedEngine(
        [call("t__pid"), call("t__slow", {"seconds": 30}), call("t__pid"), final()]
    )
    async with Agent(tools=[stdio(tmp_path, prefix="t", timeout=1.0)], engine=engine) as agent:
        result = await agent.run("go")
    before, slow, after = result.tool_calls
    assert not slow.ok and slow.error_kind == "timeout" and "timed out after 1 s" in slow.output
    assert before.output != after.output  # a new server process
    assert not alive(int(before.output))  # the hung one was stopped and reaped
    assert any(
        "did not answer slow within 1 s" in e.message for e in result.events if e.type == "warning"
    )


async def test_two_concurrent_runs_share_one_connection(tmp_path):
    def reply(request, _turn):
        prompt = agent.encoding.decode(request.prompt_ids)
        if "functions.t__slow to=assistant" in prompt:
            return final("ok")
        if "functions.t__pid to=assistant" in prompt:
            return call("t__slow", {"seconds": 0.5})
        return call("t__pid")

    agent = Agent(tools=[stdio(tmp_path, prefix="t")], engine=FunctionEngine(reply))
    results = []
    async with agent:

        async def one(task):
            results.append(await agent.run(task))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "first")
            tg.start_soon(one, "second")
        (pid,) = starts(tmp_path)
        assert alive(pid)
    assert len(results) == 2 and all(r.final_text == "ok" for r in results)
    assert {r.tool_calls[0].output for r in results} == {str(pid)}
    assert not alive(pid)  # closed (and reaped) with the agent


async def test_a_run_outside_async_with_connects_for_itself(tmp_path):
    agent = Agent(
        tools=[stdio(tmp_path, prefix="t")], engine=ScriptedEngine([call("t__pid"), final()] * 2)
    )
    result = await agent.run("pid")
    (pid,) = starts(tmp_path)
    assert result.tool_calls[0].output == str(pid) and not alive(pid)
    prefix = agent._prefix
    await agent.run("pid again")  # a new connection and listing, the same declarations
    assert len(starts(tmp_path)) == 2 and agent._prefix is prefix  # the rendered prefix is kept
    await agent.aclose()  # nothing left to close; still fine


async def test_a_stream_closed_early_closes_its_connection(tmp_path):
    agent = Agent(
        tools=[stdio(tmp_path, prefix="t")],
        engine=ScriptedEngine([call("t__pid"), call("t__pid"), final()]),
    )
    async with contextlib.aclosing(agent.stream("pid")) as events:
        async for event in events:
            if event.type == "tool_result":
                break
    (pid,) = starts(tmp_path)
    assert event.output == str(pid) and not alive(pid)


def test_run_sync_reaps_the_server(tmp_path):
    agent = Agent(
        tools=[stdio(tmp_path, prefix="t")], engine=ScriptedEngine([call("t__pid"), final()])
    )
    result = agent.run_sync("pid")
    assert result.tool_calls[0].ok
    assert [not alive(pid) for pid in starts(tmp_path)] == [True]


async def test_a_server_that_cannot_start_is_a_clear_error(tmp_path):
    server = MCPServerStdio(sys.executable, args=[str(tmp_path / "missing.py")], connect_timeout=10)
    agent = Agent(tools=[server], engine=ScriptedEngine([final()]))
    with pytest.raises(ConfigurationError, match="could not connect to the MCP server"):
        await agent.run("go")


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigurationError, match=r"use args=\['-m', 'srv'\]"):
        MCPServerStdio("python", args="-m srv")
    with pytest.raises(ConfigurationError, match="http:// or https:// URL"):
        MCPServerStreamableHTTP("127.0.0.1:8000/mcp")
    with pytest.raises(ConfigurationError, match="list of tool names"):
        MCPServerStdio("python", include="add")


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mcp", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'harmony-agent\[mcp\]'"):
        MCPServerStdio("python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(tmp_path):
    yield from serve_http(tmp_path, "http", "/mcp")


@pytest.fixture
def sse_server(tmp_path):
    yield from serve_http(tmp_path, "sse", "/sse")


def serve_http(tmp_path, transport, path):
    port = free_port()
    env = {**os.environ, "MCP_TEST_MARKER": str(tmp_path / "starts.log")}
    errors = tmp_path / "server-stderr.txt"
    with errors.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, SERVER, transport, str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"the MCP HTTP server did not start: {errors.read_text()}"
                ) from None
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}{path}"
    proc.terminate()
    proc.wait(timeout=10)


async def test_streamable_http_list_call_and_error(http_server):
    server = MCPServerStreamableHTTP(http_server, headers={"X-Test": "1"}, prefix="h")
    engine = ScriptedEngine(
        [call("h__add", {"a": 20, "b": 22}), call("h__fail", {"reason": "nope"}), final("42")]
    )
    async with Agent(tools=[server], engine=engine) as agent:
        result = await agent.run("add")
    add, fail = result.tool_calls
    assert add.ok and add.output == "42"
    assert not fail.ok and "nope" in fail.output
    assert "type h__lookup = (_: {\ncity: string,\n})" in developer_text(agent)


async def test_sse_transport(sse_server):
    engine = ScriptedEngine([call("s__echo", {"text": "over sse"}), final()])
    async with Agent(tools=[MCPServerSSE(sse_server, prefix="s")], engine=engine) as agent:
        result = await agent.run("echo")
    assert result.tool_calls[0].ok and result.tool_calls[0].output == "over sse"


async def test_streamable_http_concurrent_runs_and_list_changed(http_server):
    def reply(request, _turn):
        prompt = agent.encoding.decode(request.prompt_ids)
        if "to=assistant" in prompt:
            return final("ok")
        return call("h__grow") if "grow" in prompt.split("<|start|>user")[-1] else call("h__pid")

    agent = Agent(
        tools=[MCPServerStreamableHTTP(http_server, prefix="h")], engine=FunctionEngine(reply)
    )
    async with agent:
        await agent.run("grow")
        await anyio.sleep(0.2)
        results = []

        async def one():
            results.append(await agent.run("pid"))

        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(one)
    assert "functions.h__extra" in agent.registry.tools
    assert len({r.tool_calls[0].output for r in results}) == 1


@pytest.mark.browser
async def test_playwright_mcp_with_the_system_chromium(tmp_path):
    assert PLAYWRIGHT_MCP.exists(), (
        "@playwright/mcp is not installed: `make setup-playwright-mcp` installs it (needs npm)"
    )

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<title>Hello page</title><h1>Greetings from loopback</h1>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{site.server_port}/"
    server = MCPServerStdio(
        str(PLAYWRIGHT_MCP),
        args=[
            "--headless",
            "--isolated",
            "--executable-path",
            CHROMIUM,
            "--output-dir",
            str(tmp_path),
            # Chromium refuses its sandbox as root (containers, CI)
            *(["--no-sandbox"] if os.geteuid() == 0 else []),
        ],
        cwd=tmp_path,
        prefix="pw",
        include=["browser_navigate", "browser_snapshot"],
        timeout=120,
    )
    engine = ScriptedEngine(
        [call("pw__browser_navigate", {"url": url}), call("pw__browser_snapshot"), final()]
    )
    try:
        async with Agent(tools=[server], engine=engine) as agent:
            result = await agent.run("open it")
    finally:
        site.shutdown()
        site.server_close()
    navigate, snapshot = result.tool_calls
    assert navigate.ok and "Page Title: Hello page" in navigate.output, navigate.output
    assert snapshot.ok and "Greetings from loopback" in snapshot.output


CLI = [sys.executable, "-m", "harmony_agent", "run", "go", "--engine", "scripted:replies.json"]
CLI += ["--no-browser", "--no-python", "--json"]


def run_cli(tmp_path: Path, replies: list[str], *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "replies.json").write_text(json.dumps(replies))
    return subprocess.run(
        [*CLI, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_mcp_stdio_and_http(tmp_path, http_server):
    replies = [
        call("testsrv__add", {"a": 1, "b": 2}),
        call("testsrv__echo", {"text": "x"}),
        final(),
    ]
    stdio_spec = f"stdio:{sys.executable} {SERVER} stdio"
    proc = run_cli(tmp_path, replies, "--mcp", stdio_spec)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "functions.testsrv__add" in events[0]["tools"]
    assert [e["output"] for e in events if e["type"] == "tool_result"] == ["3", "x"]

    # two servers with the same name: the clash is named, with the fix
    proc = run_cli(tmp_path, replies, "--mcp", stdio_spec, "--mcp", http_server)
    assert proc.returncode == 2 and "two tools are named 'functions.testsrv__add'" in proc.stderr

    proc = run_cli(
        tmp_path, [call("testsrv__add", {"a": 2, "b": 2}), final()], "--mcp", http_server
    )
    assert proc.returncode == 0, proc.stderr
    assert '"output": "4"' in proc.stdout


def test_cli_mcp_bad_spec(tmp_path):
    proc = run_cli(tmp_path, [final()], "--mcp", "ftp://example")
    assert proc.returncode == 2
    assert "expected 'stdio:COMMAND ARGS...' or http://HOST:PORT/mcp" in proc.stderr
