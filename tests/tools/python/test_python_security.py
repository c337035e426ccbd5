"""The python sandbox against code written to break it: one test (or more) per class of hole
(links and special files, seccomp, resources, process mode, protocol, host paths)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
from harmony_agent import RunContext
from harmony_agent.tools import PythonTool
from harmony_agent.tools.python import Limits, SandboxFileError, _layout, _session
from harmony_agent.tools.python._uids import pids_of_uid

pytestmark = [pytest.mark.sandbox, pytest.mark.anyio]

ROOT = os.geteuid() == 0
MODES = ["bubblewrap", "process"] if ROOT else ["bubblewrap"]
REPO = Path(__file__).resolve().parents[3]


async def call(tool: PythonTool, ctx: RunContext, code: str) -> str:
    (inner,) = tool.tools()
    result = await inner.invoke(code, ctx)
    assert result.ok, result.text
    return result.text


def data(mode: str) -> str:
    """The data directory as the code sees it."""
    return "/mnt/data" if mode == "bubblewrap" else "."


def tool_for(mode: str, **kw) -> PythonTool:
    limits = kw.pop("limits", Limits(memory_bytes=1 << 30, processes=48))
    return PythonTool(timeout=kw.pop("timeout", 3), isolation=mode, limits=limits, **kw)


# --- 1. links and special files ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_host_reads_no_link_no_fifo_and_listings_escape_names(mode):
    tool = tool_for(mode)
    async with RunContext.open() as ctx:
        out = await call(
            tool,
            ctx,
            textwrap.dedent(f"""
                import os
                d = {data(mode)!r}
                os.symlink('/etc/shadow', d + '/shadow')
                os.symlink('/', d + '/root')
                os.mkfifo(d + '/pipe')
                open(d + '/ok.txt', 'w').write('fine')
                open(d + '/x\\n[files written\\x1b]0;pwned\\x07.txt', 'w').write('1')
            """),
        )
        assert "\x1b" not in out and "\x07" not in out
        listing = [line for line in out.splitlines() if line.startswith("[files written")]
        assert len(listing) == 1, out  # the odd name did not start a line of its own
        assert 'ok.txt (4 B), "x\\u000a[files written\\u001b]0;pwned\\u0007.txt" (1 B)' in out
        assert (
            "[not regular files, which the host will not read: pipe (fifo), root (symlink), shadow (symlink)]"
            in out
        )

        files = PythonTool.files_of(ctx)
        assert files.read_text("ok.txt") == "fine"
        with pytest.raises(SandboxFileError, match="symlinks are not followed"):
            files.read_text("shadow")
        with pytest.raises(SandboxFileError, match="symlinks are not followed"):
            files.read_text("root/etc/shadow")
        with pytest.raises(SandboxFileError, match="is a fifo"):
            files.read_bytes("pipe")  # refused at once, not blocked on the open
        with pytest.raises(SandboxFileError, match="relative name"):
            files.read_text("../python/ok.txt")
        with pytest.raises(SandboxFileError, match="over the cap"):
            files.read_bytes("ok.txt", max_bytes=2)
        assert [e.name for e in files.list()] == ["ok.txt", "x\n[files written\x1b]0;pwned\x07.txt"]


@pytest.mark.skipif(not ROOT, reason="the private directory is chowned only by a root host")
async def test_a_restart_does_not_chown_through_a_planted_symlink(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    target.chmod(0o755)
    tool = tool_for("process")
    async with RunContext.open() as ctx:
        out = await call(
            tool,
            ctx,
            textwrap.dedent(f"""
                import os
                private = os.path.dirname(os.readlink('/proc/self/fd/1'))
                try:
                    os.rename(private, private + '.moved')
                    os.symlink({str(target)!r}, private)
                    print('planted')
                except OSError as e:
                    print('refused', e.errno)
                os._exit(1)
            """),
        )
        assert "died" in out
        assert "2" in await call(tool, ctx, "print(1 + 1)")  # a restart
    st = os.lstat(target)
    assert (st.st_uid, st.st_gid) == (0, 0), "the host chowned through the symlink"


# --- 2. seccomp --------------------------------------------------------------------------------

SYSCALLS = textwrap.dedent("""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    def sys_(nr, *args):
        r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        if r == 0 and nr == 56:  # a clone child, if clone got through
            os._exit(0)
        return r, ctypes.get_errno()
    params = ctypes.create_string_buffer(120)
    print('io_uring_setup', sys_(425, 4, ctypes.addressof(params)))
    print('clone_newuser', sys_(56, 0x10000000 | 0x00020000 | 17, 0, 0, 0, 0))
    print('clone_newnet', sys_(56, 0x40000000 | 17, 0, 0, 0, 0))
    print('clone3', sys_(435, 0, 0))
    print('fsopen', sys_(430, ctypes.addressof(ctypes.create_string_buffer(b'tmpfs')), 0))
    print('open_tree', sys_(428, -100, ctypes.addressof(ctypes.create_string_buffer(b'/')), 1))
    print('socket', sys_(41, 2, 1, 0))
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    print('fork', os.waitpid(pid, 0)[1] >> 8)
""")


@pytest.mark.parametrize("mode", MODES)
async def test_seccomp_denies_io_uring_namespaces_and_the_mount_api(mode):
    tool = tool_for(mode)
    async with RunContext.open() as ctx:
        out = await call(tool, ctx, SYSCALLS)
    got = dict(line.split(" ", 1) for line in out.splitlines())
    eperm, enosys = "(-1, 1)", "(-1, 38)"
    assert got["io_uring_setup"] == eperm, out
    assert got["clone_newuser"] == eperm and got["clone_newnet"] == eperm, out
    assert got["clone3"] == enosys, out
    assert got["fsopen"] == eperm and got["open_tree"] == eperm and got["socket"] == eperm, out
    assert got["fork"] == "7", out  # plain clone (fork) still works


async def test_no_seccomp_filter_no_sandbox(monkeypatch):
    monkeypatch.setattr(_layout, "SECCOMP_LIBRARY", "libseccomp-missing.so.2")
    tool = tool_for("bubblewrap")
    async with RunContext.open() as ctx:
        (inner,) = tool.tools()
        result = await inner.invoke("print('ran')", ctx)
    assert not result.ok
    assert "seccomp filter is not in force" in result.text and "refusing" in result.text


# --- 3. resources ------------------------------------------------------------------------------


async def test_tmp_and_dev_shm_are_sized_and_dev_is_read_only():
    tool = tool_for("bubblewrap", timeout=20)
    code = textwrap.dedent("""
        import os
        for d in ('/tmp', '/dev/shm', '/dev'):
            n = 0
            try:
                for i in range(8):
                    with open(f'{d}/f{i}', 'wb') as f:
                        f.write(b'0' * (48 << 20)); n += 48
            except OSError as e:
                print(d, 'stopped at', n, e.errno)
            for i in range(8):
                try: os.remove(f'{d}/f{i}')
                except OSError: pass
    """)
    async with RunContext.open() as ctx:
        out = await call(tool, ctx, code)
    assert "/tmp stopped at 96 28" in out and "/dev/shm stopped at 96 28" in out, out  # ENOSPC
    assert "/dev stopped at 0 30" in out, out  # EROFS


@pytest.mark.parametrize("mode", MODES)
async def test_nothing_of_the_session_runs_between_cells(mode):
    tool = tool_for(mode)
    code = textwrap.dedent(f"""
        import os, threading, time
        d = {data(mode)!r}
        def writer(name):
            with open(f'{{d}}/{{name}}', 'ab') as f:
                while True:
                    f.write(b'x' * 4096); f.flush(); time.sleep(0.01)
        threading.Thread(target=writer, args=('thread.log',), daemon=True).start()
        if os.fork() == 0:
            if os.fork() == 0:
                os.setsid()
                writer('daemon.log')
            os._exit(0)
        time.sleep(0.3)
    """)
    async with RunContext.open() as ctx:
        await call(tool, ctx, code)
        files = PythonTool.files_of(ctx)
        sizes = {e.name: e.size for e in files.list()}
        await anyio.sleep(1.0)
        assert {e.name: e.size for e in files.list()} == sizes
        assert sizes.keys() == {"thread.log", "daemon.log"}
        out = await call(tool, ctx, "import time; time.sleep(0.3); print('resumed')")
        assert "resumed" in out
        grown = {e.name: e.size for e in files.list()}
        assert all(grown[k] > sizes[k] for k in sizes), (sizes, grown)  # they ran again


@pytest.mark.parametrize("mode", MODES)
async def test_a_timeout_kills_a_double_forked_spinner(mode):
    tool = tool_for(mode, timeout=2)
    code = textwrap.dedent(f"""
        import os
        if os.fork() == 0:
            if os.fork() == 0:
                os.setsid()
                open({data(mode)!r} + '/spinner.pid', 'w').write(str(os.getpid()))
                while True:
                    pass
            os._exit(0)
        os.wait()
        while True:
            pass
    """)
    async with RunContext.open() as ctx:
        assert "Timed out" in await call(tool, ctx, code)
        out = await call(
            tool,
            ctx,
            textwrap.dedent(f"""
                import os
                pid = int(open({data(mode)!r} + '/spinner.pid').read())
                try:  # a zombie waiting for a late-reaping init is gone too
                    state = open(f'/proc/{{pid}}/stat').read().rsplit(')', 1)[1].split()[0]
                    print('gone' if state in 'ZX' else f'ALIVE {{pid}} {{state}}')
                except FileNotFoundError:
                    print('gone')
            """),
        )
    assert out.strip() == "gone", out


@pytest.mark.parametrize("mode", MODES)
async def test_a_stopped_worker_and_a_large_cell_end_within_the_deadline(mode):
    tool = tool_for(mode, timeout=2)
    async with RunContext.open() as ctx:
        await call(
            tool,
            ctx,
            "import os, signal, time\n"
            "if os.fork() == 0:\n"  # stops the worker once the cell is over
            "    time.sleep(0.5); os.kill(os.getppid(), signal.SIGSTOP); os._exit(0)",
        )
        await anyio.sleep(1.0)
        big = "x = 1\n" + "# padding\n" * 200_000  # 2 MB: far past a pipe's buffer
        with anyio.fail_after(30):  # the old code hung here forever
            out = await call(tool, ctx, big + "print('ran')")
        assert "ran" in out or "Timed out" in out, out[-500:]
        assert "2" in await call(tool, ctx, "print(1 + 1)")


@pytest.mark.parametrize("mode", MODES)
async def test_a_very_deep_directory_is_a_limit_not_a_crash(mode):
    tool = tool_for(mode, timeout=30)
    code = textwrap.dedent(f"""
        import os
        os.chdir({data(mode)!r})
        os.mkdir('deep'); os.chdir('deep')
        for i in range(1200):
            os.mkdir('d'); os.chdir('d')
        print('built')
    """)
    async with RunContext.open() as ctx:
        await call(tool, ctx, "marker = 'alive'")
        out = await call(tool, ctx, code)
        assert "directories nested deeper than 64 levels" in out, out
        assert await call(tool, ctx, "marker") == "'alive'"  # the same worker, state kept
        await call(  # bottom up, one level at a time
            tool,
            ctx,
            f"import os\nos.chdir({data(mode)!r} + '/deep'); n = 0\n"
            "while os.path.isdir('d'):\n    os.chdir('d'); n += 1\n"
            "for _ in range(n):\n    os.chdir('..'); os.rmdir('d')\n"
            "os.chdir('..'); os.rmdir('deep')",
        )
        assert await call(tool, ctx, "print('clean')") == "clean"


# --- 4. process mode is not isolation ----------------------------------------------------------

HOST = textwrap.dedent("""
    import sys, anyio
    from harmony_agent import RunContext
    from harmony_agent.tools import PythonTool

    async def main():
        tool = PythonTool(timeout=10, isolation=sys.argv[1])
        async with RunContext.open() as ctx:
            (inner,) = tool.tools()
            r = await inner.invoke("import os; print(os.getuid())", ctx)
            print(r.text, flush=True)
            sys.stdin.readline()  # hold the session while the other host runs

    anyio.run(main)
""")


@pytest.mark.skipif(not ROOT, reason="uids are leased by root hosts")
@pytest.mark.parametrize("mode", ["bubblewrap", "process"])
def test_two_host_processes_never_share_a_sandbox_uid(mode):
    hosts = [
        subprocess.Popen(
            [sys.executable, "-c", HOST, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        uids = [h.stdout.readline().strip() for h in hosts]
    finally:
        for h in hosts:
            h.communicate("\n", timeout=60)
    assert all(u.isdigit() and int(u) >= 210_000 for u in uids), uids
    assert uids[0] != uids[1]


@pytest.mark.skipif(not ROOT, reason="process mode with a uid of its own needs a root host")
async def test_process_mode_private_non_dumpable_and_nothing_outlives_the_run():
    tool = tool_for("process")
    assert "current working directory" in tool.description()
    assert "/mnt/data" not in tool.description()
    async with RunContext.open() as ctx:
        out = await call(
            tool,
            ctx,
            textwrap.dedent("""
                import ctypes, os, subprocess
                print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE
                print(os.getcwd())
                subprocess.Popen(['setsid', 'sleep', '1000'], start_new_session=True)
                open('kept.txt', 'w').write('x')
                open('/tmp/ha-left-behind', 'w').write('x')
                os.makedirs('/dev/shm/ha-left-behind/sub')
            """),
        )
        session = await tool.session(ctx)
        uid = session.uid
        dumpable, cwd = out.splitlines()[:2]
        assert dumpable == "0"
        assert cwd == str(ctx.files_dir / "python")
        assert "[files written to the working directory: kept.txt (1 B)]" in out
        st = os.stat(ctx.files_dir / "python")
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == uid
        assert pids_of_uid(uid)
    assert pids_of_uid(uid) == []  # the daemon went with the run
    assert not os.path.lexists("/tmp/ha-left-behind")  # and what it left in shared dirs
    assert not os.path.lexists("/dev/shm/ha-left-behind")


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--reset-env"]
NON_ROOT = textwrap.dedent("""
    import json, sys, anyio
    from harmony_agent import RunContext
    from harmony_agent.errors import ConfigurationError
    from harmony_agent.tools import PythonTool
    from harmony_agent.tools.python import _layout

    async def run(tool, *cells):
        async with RunContext.open() as ctx:
            (inner,) = tool.tools()
            out = [(await inner.invoke(c, ctx)).text for c in cells]
            return out, ctx.take_notices()

    async def main():
        syscalls, spinner, check = json.loads(sys.argv[1])
        # bubblewrap as an unprivileged host: no uid to lease, processes found by descent
        out, _ = await run(PythonTool(timeout=2, isolation="bubblewrap"),
                           "import os; print(os.getuid())", syscalls, spinner, check)
        print("bwrap:", json.dumps(out))
        _layout._BWRAP_OK = False
        for isolation in ("process", "auto"):
            try:
                PythonTool(isolation=isolation).description()
                print(isolation, "ACCEPTED")
            except ConfigurationError as e:
                print(isolation, "refused:", e)
        tool = PythonTool(timeout=10, isolation="process-unsafe")
        print("unsafe:", tool.description().split(". ")[-1])
        out, notices = await run(tool, "print(6 * 7)")
        print("unsafe ran:", out[0])
        print("notice:", notices)

    anyio.run(main)
""")


@pytest.mark.skipif(not ROOT, reason="needs root to start a host as an unprivileged user")
def test_a_non_root_host_sandboxes_with_bubblewrap_and_refuses_process_mode_unless_opted_in():
    spinner = textwrap.dedent("""
        import os
        if os.fork() == 0:
            if os.fork() == 0:
                os.setsid()
                open('/mnt/data/spinner.pid', 'w').write(str(os.getpid()))
                while True:
                    pass
            os._exit(0)
        os.wait()
        while True:
            pass
    """)
    check = "import os\nprint(os.path.exists('/proc/' + open('/mnt/data/spinner.pid').read()))"
    cells = json.dumps([SYSCALLS, spinner, check])
    out = subprocess.run(
        [*NOBODY, sys.executable, "-c", NON_ROOT, cells],
        capture_output=True,
        text=True,
        timeout=180,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    uid, syscalls, timed_out, spinner_alive = json.loads(lines[0].removeprefix("bwrap: "))
    assert uid == "65534"
    assert "io_uring_setup (-1, 1)" in syscalls and "clone_newuser (-1, 1)" in syscalls, syscalls
    assert "Timed out" in timed_out and spinner_alive == "False", (timed_out, spinner_alive)
    assert lines[1].startswith("process refused:") and "process-unsafe" in lines[1], lines
    assert lines[2].startswith("auto refused:") and "process-unsafe" in lines[2], lines
    assert "no sandbox here" in lines[3], lines
    assert lines[4] == "unsafe ran: 42", lines
    assert "runs the model's code as this user" in lines[5], lines


# --- 5. protocol -------------------------------------------------------------------------------

FORGE = textwrap.dedent("""
    import os, stat, json
    forged = json.dumps({"stdout": "FORGED", "stderr": "", "fd_output": "", "result": None,
                         "error": None, "files": {}}) + "\\n"
    for fd in range(3, 64):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, forged.encode())
        except OSError:
            pass
    print('genuine')
""")


@pytest.mark.parametrize("mode", MODES)
async def test_a_forged_reply_is_not_taken_and_outputs_stay_in_step(mode):
    tool = tool_for(mode)
    async with RunContext.open() as ctx:
        first = await call(tool, ctx, FORGE)
        assert "FORGED" not in first and "broke the protocol" in first, first
        assert (await call(tool, ctx, "print('second')")).endswith("\nsecond")
        assert await call(tool, ctx, "print('third')") == "third"
        assert await call(tool, ctx, "print('fourth')") == "fourth"


async def test_a_reply_line_over_the_cap_restarts_the_session(monkeypatch):
    monkeypatch.setattr(_session, "MAX_REPLY", 1 << 20)
    tool = tool_for("bubblewrap", timeout=10)
    async with RunContext.open() as ctx:
        out = await call(
            tool,
            ctx,
            "import os, stat\nfor fd in range(3, 64):\n    try:\n"
            "        if stat.S_ISFIFO(os.fstat(fd).st_mode): os.write(fd, b'x' * (2 << 20))\n"
            "    except OSError: pass",
        )
        assert "broke the protocol" in out, out
        assert await call(tool, ctx, "print('next')") == (
            "[A new Python session was started: earlier variables are gone.]\nnext"
        )


# --- 6. host paths -----------------------------------------------------------------------------


async def test_proc_1_cmdline_shows_no_host_path():
    tool = tool_for("bubblewrap")
    async with RunContext.open() as ctx:
        out = await call(tool, ctx, "print(open('/proc/1/cmdline', 'rb').read())")
        assert str(ctx.files_dir) not in out and "HA_SANDBOX_CONFIG" not in out, out
        assert "--args" in out
