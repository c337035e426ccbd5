"""The python tool on real sandboxes: state, output, files, timeouts, and hostile code."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
from harmony_agent import Agent, RunContext
from harmony_agent.engine import ScriptedEngine
from harmony_agent.tools import PythonTool
from harmony_agent.tools.python import Limits

pytestmark = [pytest.mark.sandbox, pytest.mark.anyio]


def py_call(code: str) -> str:
    return f"<|channel|>analysis to=python code<|message|>{code}<|call|>"


async def call(tool: PythonTool, ctx: RunContext, code: str) -> str:
    (inner,) = tool.tools()
    result = await inner.invoke(code, ctx)
    assert result.ok, result.text
    return result.text


@pytest.fixture
async def sandbox(tmp_path):
    tool = PythonTool(
        timeout=3,
        isolation="bubblewrap",
        limits=Limits(memory_bytes=1 << 30, processes=48, data_quota_bytes=64 << 20),
    )
    async with RunContext.open() as ctx:
        yield tool, ctx


async def test_state_persists_and_notebook_output(sandbox):
    tool, ctx = sandbox
    assert (
        await call(tool, ctx, "import math\nx = 21")
        == "[no output: print() something, or end the cell with an expression]"
    )
    out = await call(
        tool,
        ctx,
        "print('half', x)\nimport sys; print('err', file=sys.stderr)\nmath.sqrt(x * 2 * 42)",
    )
    assert out == "half 21\nerr\n42.0"
    assert "ZeroDivisionError: division by zero" in await call(tool, ctx, "x / 0")
    assert "SyntaxError" in await call(tool, ctx, "def broken(:")
    assert await call(tool, ctx, "x") == "21"


async def test_files_are_listed_and_reachable_by_the_host(sandbox):
    tool, ctx = sandbox
    out = await call(tool, ctx, "open('/mnt/data/table.csv', 'w').write('a,b\\n1,2\\n')")
    assert "[files written to /mnt/data: table.csv (8 B)]" in out
    assert (ctx.files_dir / "python" / "table.csv").read_text() == "a,b\n1,2\n"


async def test_separate_runs_share_nothing(tmp_path):
    tool = PythonTool(timeout=5, isolation="bubblewrap")
    async with RunContext.open() as one, RunContext.open() as two:
        await call(tool, one, "secret = 1\nopen('/mnt/data/f', 'w').write('x')")
        assert "NameError" in await call(tool, two, "secret")
        assert "FileNotFoundError" in await call(tool, two, "open('/mnt/data/f').read()")


async def test_output_is_truncated_on_both_sides(tmp_path):
    tool = PythonTool(timeout=10, isolation="bubblewrap", max_output_chars=1000)
    async with RunContext.open() as ctx:
        out = await call(tool, ctx, "for i in range(100000): print(i)")
    assert out.startswith("0\n1\n2\n") and out.rstrip().endswith("99999")
    assert "characters cut]" in out and len(out) < 1500


async def test_session_closes_with_the_run_and_leaves_no_process(tmp_path):
    tool = PythonTool(timeout=5, isolation="bubblewrap")
    async with RunContext.open() as ctx:
        await call(tool, ctx, "import os, subprocess; subprocess.Popen(['sleep', '1000'])")
        session = await tool.session(ctx)
        root = session._process.pid
    time.sleep(0.2)
    alive = subprocess.run(
        ["pgrep", "-f", "sleep 1000"], capture_output=True, text=True
    ).stdout.split()
    assert alive == []
    assert not os.path.exists(f"/proc/{root}")  # reaped, not a zombie


async def test_process_mode_fallback_is_announced_and_still_blocks_sockets(tmp_path):
    tool = PythonTool(timeout=5, isolation="process")
    assert "weaker" in tool.description()
    async with RunContext.open() as ctx:
        out = await call(
            tool,
            ctx,
            "import socket\ntry:\n    socket.socket()\nexcept OSError as e:\n    print('blocked', e.errno)",
        )
        assert out.strip() == "blocked 1"
        assert (await call(tool, ctx, "import os; os.getuid()")) != "0"


def test_auto_mode_warns_when_it_falls_back(monkeypatch):
    from harmony_agent.tools.python import _layout

    monkeypatch.setattr(_layout, "_BWRAP_OK", False)
    agent = Agent(
        tools=[PythonTool(timeout=5)],
        engine=ScriptedEngine(
            [py_call("print(40 + 2)"), "<|channel|>final<|message|>42<|return|>"]
        ),
    )
    result = agent.run_sync("compute")
    assert result.tool_calls[0].output == "42"
    assert any(e.type == "warning" and "weaker isolation" in e.message for e in result.events)


def test_end_to_end_agent_run():
    agent = Agent(
        tools=[PythonTool(timeout=10)],
        engine=ScriptedEngine(
            [
                py_call("x = 6*7\nprint(x)"),
                py_call("open('/mnt/data/answer.txt','w').write(str(x))\nx + 0"),
                "<|channel|>final<|message|>The answer is 42.<|return|>",
            ]
        ),
    )
    text = agent.encoding.decode(
        agent.encoding.render_conversation_for_completion(
            __import__("openai_harmony").Conversation.from_messages(agent.initial_messages("q")),
            __import__("openai_harmony").Role.ASSISTANT,
        )
    )
    assert (
        "## python" in text
        and "time out after 120.0" not in text
        and "time out after 10.0 seconds" in text
    )
    assert "Internet access for this session is disabled" in text
    result = agent.run_sync("What is 6*7? Save it.")
    assert [c.output for c in result.tool_calls] == [
        "42",
        "42\n[files written to /mnt/data: answer.txt (2 B)]",
    ]
    assert result.final_text == "The answer is 42."


# --- hostile snippets: each must be contained, and the next call must work ------------------

LISTENER_PORT = None


@pytest.fixture(scope="module")
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


HOSTILE = {
    "network-connect": (
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')\nexcept OSError as e:\n    print('blocked', type(e).__name__)",
        lambda out: "CONNECTED" not in out and "blocked" in out,
    ),
    "dns": (
        "import socket\ntry:\n    print(socket.getaddrinfo('example.com', 80))\nexcept OSError as e:\n    print('blocked', type(e).__name__)",
        lambda out: "blocked" in out,
    ),
    "read-project": (
        "import os\ntry:\n    print(os.listdir({project!r}))\nexcept OSError as e:\n    print('blocked', type(e).__name__)",
        lambda out: "blocked" in out,
    ),
    "read-shadow": (
        "try:\n    print(open('/etc/shadow').read())\nexcept OSError as e:\n    print('blocked', type(e).__name__)",
        lambda out: "blocked" in out,
    ),
    "host-proc": (
        "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))",
        lambda out: max(eval(out)) < 10,
    ),
    "write-outside": (
        "import os\nfor path in ['/usr/evil', '/opt/evil', '/evil']:\n    try:\n        open(path, 'w'); print('WROTE', path)\n    except OSError as e:\n        print('blocked', type(e).__name__)",
        lambda out: (
            "WROTE" not in out and not os.path.exists("/evil") and not os.path.exists("/usr/evil")
        ),
    ),
    "fork-bomb": (
        "import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            import time; time.sleep(30); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('stopped at', n, type(e).__name__)",
        lambda out: "stopped at" in out or "Timed out" in out,
    ),
    "memory-bomb": (
        "try:\n    x = bytearray(8 * 1024**3)\nexcept MemoryError:\n    print('MemoryError')",
        lambda out: "MemoryError" in out,
    ),
    "memory-creep": (
        "chunks = []\ntry:\n    while True:\n        chunks.append(bytearray(50 * 1024**2))\nexcept MemoryError:\n    n = len(chunks); chunks.clear(); print('MemoryError after', n)",
        lambda out: "MemoryError after" in out,
    ),
    "cpu-spin": (
        "while True:\n    pass",
        lambda out: "Timed out after 3 s: the cell was interrupted" in out,
    ),
    "infinite-output": (
        "while True:\n    print('spam' * 100)",
        lambda out: "Timed out" in out and len(out) < 30000,
    ),
    "million-prints": (
        "for i in range(10**6):\n    print(i)",
        lambda out: "characters cut" in out and len(out) < 30000,
    ),
    "huge-line": ("print('x' * 10**8)", lambda out: "characters cut" in out and len(out) < 30000),
    "fd-level-output": (
        "import os\nos.system('yes | head -c 50000000')",
        lambda out: "bytes cut" in out and len(out) < 30000,
    ),
    "signal-parent": (
        "import os, signal\nfor pid in (1, os.getppid()):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError as e:\n        print('blocked', e)\nprint('worker survived')",
        # the signals stay in the sandbox: the worker lives on, or its session died and is
        # restarted (the test process itself is still here: see the parent check below)
        lambda out: "worker survived" in out or "died" in out,
    ),
    "kill-own-worker": (
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        lambda out: "died" in out,
    ),
    "os-exit": ("import os\nos._exit(3)", lambda out: "died (exit code 3)" in out),
    "null-deref": (
        "import ctypes\nctypes.string_at(0)",
        lambda out: "died (signal 11)" in out or "died" in out,
    ),
    "deep-recursion": ("def f(n):\n    return f(n + 1)\nf(0)", lambda out: "RecursionError" in out),
    "zip-bomb": (
        "import zipfile, io\nbuf = io.BytesIO()\nwith zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as z:\n    z.writestr('big', b'0' * (200 * 1024**2))\nopen('/mnt/data/bomb.zip', 'wb').write(buf.getvalue())\ntry:\n    zipfile.ZipFile('/mnt/data/bomb.zip').extractall('/mnt/data/out')\nexcept OSError as e:\n    print('stopped', type(e).__name__)",
        # stopped by the file size limit, by the quota, or (on a busy machine, where
        # compressing 200 MB takes longer than the 3 s limit) by the clock
        lambda out: "stopped" in out or "wrote more than" in out or "Timed out" in out,
    ),
    "fill-disk": (
        "i = 0\ntry:\n    while True:\n        open(f'/mnt/data/fill{{i}}', 'wb').write(b'0' * 32 * 1024**2); i += 1\nexcept OSError as e:\n    print('stopped', type(e).__name__)",
        lambda out: "wrote more than" in out or "stopped" in out,
    ),
    "thread-bomb": (
        "import threading, time\nn = 0\ntry:\n    while True:\n        threading.Thread(target=time.sleep, args=(20,), daemon=True).start(); n += 1\nexcept RuntimeError as e:\n    print('stopped at', n)",
        lambda out: "stopped at" in out or "Timed out" in out,
    ),
    "sleep-past-timeout": ("import time\ntime.sleep(60)", lambda out: "Timed out" in out),
    "stdin-read": (
        "import sys\nprint(repr(sys.stdin.read()))\nprint(repr(input() if False else ''))",
        lambda out: "''" in out,
    ),
    "sys-exit": ("import sys\nsys.exit(4)", lambda out: "SystemExit: 4" in out),
    "chdir": ("import os\nos.chdir('/')\nprint(os.getcwd())", lambda out: out.strip() == "/"),
    "env-secrets": (
        "import os\nprint(sorted(os.environ))",
        lambda out: "SECRET_TOKEN" not in out and "HOME" in out,
    ),
    "write-big-file": (
        "try:\n    open('/mnt/data/big', 'wb').write(b'0' * 200 * 1024**2)\nexcept OSError as e:\n    print('stopped', e.errno)",
        lambda out: "stopped 27" in out,
    ),
    "setuid-root": (
        "import os\ntry:\n    os.setuid(0); print('ROOT')\nexcept OSError as e:\n    print('blocked', type(e).__name__)",
        lambda out: "ROOT" not in out,
    ),
}


# without namespaces the host's files and processes are visible (documented): these two hold
# only under bubblewrap
BUBBLEWRAP_ONLY = {"read-project", "host-proc"}


CASES = [
    (mode, name)
    for mode in ("bubblewrap", "process")
    for name in sorted(HOSTILE)
    if not (mode == "process" and name in BUBBLEWRAP_ONLY)
]


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "name"), CASES, ids=[f"{m}-{n}" for m, n in CASES])
async def test_hostile_snippet_is_contained(mode, listener, name, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    parent = os.getppid()
    tool = PythonTool(
        timeout=3,
        isolation=mode,
        limits=Limits(memory_bytes=1 << 30, processes=48, data_quota_bytes=64 << 20),
    )
    code, check = HOSTILE[name]
    if mode == "process":  # no /mnt/data there: the working directory is the data directory
        code = code.replace("/mnt/data", ".")
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    async with RunContext.open() as ctx:
        await call(tool, ctx, "marker = 'alive'")
        out = await call(tool, ctx, code.format(port=listener, project=project))
        assert check(out), out[-2000:]
        after = await call(tool, ctx, "print(1 + 1)")
        assert after.strip().endswith("2"), after  # the next call works (same or new session)
    assert os.getppid() == parent  # the host's parent was not killed (we would be re-parented)
