"""One sandboxed Python worker process and the host's control over it.

``bubblewrap`` mode: the worker runs under bwrap with every namespace unshared (no network at
all, its own PID namespace, a private /tmp), read-only /usr, the session's data directory
bound at /mnt/data, an empty environment, as an unprivileged uid, with rlimits and a seccomp
filter. ``process`` mode (when namespaces are unavailable): the same worker as an unprivileged
uid with rlimits and the seccomp filter, but the host's files stay readable.

The host owns the wall clock: past the timeout it kills the cell's forked children and sends
SIGINT (the namespace survives); if the cell does not stop within the grace period, the whole
sandbox is killed and the next call starts a new one.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from harmony_agent.errors import ConfigurationError

__all__ = ["ExecResult", "Limits", "SandboxSession", "bubblewrap_available"]

Mode = Literal["bubblewrap", "process"]
WORKER = Path(__file__).with_name("_worker.py")
INSIDE_WORKER = "/opt/harmony-agent/worker.py"
_UIDS = itertools.count()
_BASE_UID = 210_000  # unprivileged uids, one per session (RLIMIT_NPROC counts per uid)


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of a sandbox session."""

    cpu_s: int = 600  # CPU seconds over the session's life (a backstop; the wall clock rules)
    memory_bytes: int = 2 << 30  # address space, with MALLOC_ARENA_MAX=2
    file_bytes: int = 64 << 20  # largest file the code may write
    open_files: int = 256
    processes: int = 64  # processes and threads of the session's uid
    data_quota_bytes: int = 512 << 20  # everything under /mnt/data


@dataclass
class ExecResult:
    stdout: str = ""
    stderr: str = ""
    fd_output: str = ""
    result: str | None = None
    error: str | None = None
    files: dict[str, list[int]] = field(default_factory=dict)
    outcome: Literal["ok", "interrupted", "killed", "died", "quota"] = "ok"
    exit_status: str | None = None
    seconds: float = 0.0


_BWRAP_OK: bool | None = None


def bubblewrap_available() -> bool:
    """Whether bwrap can create its namespaces here (checked once per process)."""
    global _BWRAP_OK
    if _BWRAP_OK is None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            _BWRAP_OK = False
        else:
            probe = [
                bwrap,
                "--unshare-all",
                "--die-with-parent",
                "--ro-bind",
                "/usr",
                "/usr",
                "--symlink",
                "usr/bin",
                "/bin",
                "--symlink",
                "usr/lib",
                "/lib",
                "--symlink",
                "usr/lib64",
                "/lib64",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "/usr/bin/true",
            ]
            try:
                _BWRAP_OK = subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                _BWRAP_OK = False
    return _BWRAP_OK


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class SandboxSession:
    """A persistent worker. ``start`` once, ``execute`` many times, ``close`` at the end."""

    def __init__(
        self,
        data_dir: Path,
        *,
        mode: Mode,
        python: str = "/usr/bin/python3",
        limits: Limits = Limits(),
        max_output_chars: int = 20_000,
        interrupt_grace: float = 2.0,
    ) -> None:
        if not Path(python).is_file():
            raise ConfigurationError(
                f"the sandbox interpreter {python} does not exist; install python3 or pass "
                "PythonTool(python=...)"
            )
        self.data_dir = data_dir
        self.mode = mode
        self.python = python
        self.limits = limits
        self.max_output_chars = max_output_chars
        self.interrupt_grace = interrupt_grace
        self.uid = _BASE_UID + next(_UIDS) % 50_000 if os.geteuid() == 0 else None
        self.seccomp: bool | None = None
        self._process: Process | None = None
        self._reader: BufferedByteReceiveStream | None = None
        self._worker_pid: int | None = None
        self._private = Path(tempfile.mkdtemp(prefix="ha-sbx-"))
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _config(self) -> dict[str, Any]:
        capture = (
            "/tmp/.ha-capture" if self.mode == "bubblewrap" else str(self._private / "capture")
        )
        data = "/mnt/data" if self.mode == "bubblewrap" else str(self.data_dir)
        lim = self.limits
        return {
            "max_output_chars": self.max_output_chars,
            "capture": capture,
            "data_dir": data,
            "seccomp": True,
            "limits": {
                "cpu_s": lim.cpu_s,
                "memory_bytes": lim.memory_bytes,
                "file_bytes": lim.file_bytes,
                "open_files": lim.open_files,
                "processes": lim.processes if self.uid is not None else None,
            },
        }

    def _env(self) -> dict[str, str]:
        home = "/mnt/data" if self.mode == "bubblewrap" else str(self.data_dir)
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": home,
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "MALLOC_ARENA_MAX": "2",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MPLBACKEND": "Agg",
            "PYTHONDONTWRITEBYTECODE": "1",
            "HA_SANDBOX_CONFIG": json.dumps(self._config()),
        }

    def _argv(self, fds: tuple[int, ...]) -> list[str]:
        if self.mode == "process":
            return [self.python, "-I", "-u", str(WORKER)]
        argv = [
            "bwrap",
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--dir",
            "/mnt",
            "--bind",
            str(self.data_dir),
            "/mnt/data",
            # the worker goes in as a file descriptor opened by the host: the sandbox's uid
            # need not be able to reach the package's path
            "--ro-bind-data",
            str(fds[0]),
            INSIDE_WORKER,
            "--remount-ro",
            "/",
            "--chdir",
            "/mnt/data",
            "--clearenv",
        ]
        if not self.python.startswith("/usr/"):
            prefix = str(Path(self.python).resolve().parent.parent)
            argv += ["--ro-bind", prefix, prefix]
        for key, value in self._env().items():
            argv += ["--setenv", key, value]
        return [*argv, self.python, "-I", "-u", INSIDE_WORKER]

    async def start(self) -> float:
        """Start the worker; returns the seconds it took until it was ready."""
        started = time.perf_counter()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.uid is not None:
            self._check_reachable()
            os.chown(self.data_dir, self.uid, self.uid)
            os.chown(self._private, self.uid, self.uid)
        kwargs: dict[str, Any] = {}
        if self.uid is not None:
            kwargs.update(user=self.uid, group=self.uid, extra_groups=[])
        env = None if self.mode == "bubblewrap" else self._env()
        fds = (os.open(WORKER, os.O_RDONLY | os.O_CLOEXEC),)
        try:
            self._process = await anyio.open_process(
                self._argv(fds),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd="/" if self.mode == "bubblewrap" else str(self.data_dir),
                env=env or {"PATH": "/usr/bin:/bin"},
                start_new_session=True,
                pass_fds=fds if self.mode == "bubblewrap" else (),
                **kwargs,
            )
        finally:
            for fd in fds:
                os.close(fd)
        assert self._process.stdout is not None
        self._reader = BufferedByteReceiveStream(self._process.stdout)
        try:
            with anyio.fail_after(30):
                hello = json.loads(await self._reader.receive_until(b"\n", 1 << 20))
        except (TimeoutError, anyio.EndOfStream, anyio.IncompleteRead, json.JSONDecodeError) as exc:
            stderr = await self._stderr()
            await self.kill()
            raise ConfigurationError(
                f"the python sandbox ({self.mode}) did not start: {stderr or exc}"
            ) from None
        self.seccomp = hello.get("seccomp")
        self._worker_pid = self._find_worker()
        self.starts += 1
        return time.perf_counter() - started

    def _check_reachable(self) -> None:
        """The sandbox's uid must be able to traverse to the data directory."""
        for parent in self.data_dir.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise ConfigurationError(
                    f"the python sandbox runs as an unprivileged user that cannot reach "
                    f"{self.data_dir} ({parent} has mode {oct(mode & 0o777)}); choose a "
                    f"files_dir whose parents others may traverse (chmod o+x {parent})"
                )

    async def _stderr(self) -> str:
        if self._process is None or self._process.stderr is None:
            return ""
        with anyio.move_on_after(1):
            try:
                return (await self._process.stderr.receive(65536)).decode(errors="replace").strip()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return ""
        return ""

    def _find_worker(self) -> int | None:
        assert self._process is not None
        if self.mode == "process":
            return self._process.pid
        for pid in _descendants(self._process.pid):  # bwrap, bwrap's init, then the worker
            argv = _cmdline(pid).split(b"\0")
            if argv[0] == self.python.encode() and INSIDE_WORKER.encode() in argv:
                return pid
        return None

    async def execute(self, code: str, timeout: float) -> ExecResult:  # noqa: ASYNC109 — interrupt, then kill: not a cancel scope
        if not self.alive:
            await self.start()
        assert self._process is not None and self._process.stdin is not None
        assert self._reader is not None
        started = time.perf_counter()
        quota = self.limits.data_quota_bytes
        try:
            await self._process.stdin.send(json.dumps({"code": code}).encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return await self._died(started)
        deadline = started + timeout
        interrupted_at: float | None = None
        outcome: Any = "ok"
        while True:
            with anyio.move_on_after(0.2):
                try:
                    line = await self._reader.receive_until(b"\n", 64 << 20)
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                    return await self._died(started)
                answer = json.loads(line)
                return ExecResult(**answer, outcome=outcome, seconds=time.perf_counter() - started)
            now = time.perf_counter()
            if outcome == "ok" and quota and _dir_size(self.data_dir) > quota:
                outcome, interrupted_at = "quota", now
                self.interrupt()
            elif interrupted_at is None and now >= deadline:
                outcome, interrupted_at = "interrupted", now
                self.interrupt()
            elif interrupted_at is not None and now - interrupted_at > self.interrupt_grace:
                await self.kill()
                return ExecResult(
                    outcome="killed" if outcome != "quota" else "quota", seconds=now - started
                )

    def interrupt(self) -> None:
        """Kill what the cell forked, then KeyboardInterrupt in the worker (state kept)."""
        if self._worker_pid is None:
            return
        _signal(_descendants(self._worker_pid), signal.SIGKILL)
        _signal([self._worker_pid], signal.SIGINT)

    async def _died(self, started: float) -> ExecResult:
        status = None
        if self._process is not None:
            with anyio.move_on_after(5):
                code = await self._process.wait()
                status = f"signal {-code}" if code < 0 else f"exit code {code}"
        await self.kill()
        return ExecResult(outcome="died", exit_status=status, seconds=time.perf_counter() - started)

    async def kill(self) -> None:
        """End the sandbox and everything in it, and reap it."""
        process, self._process = self._process, None
        self._reader, self._worker_pid = None, None
        if process is None:
            return
        _signal([*_descendants(process.pid), process.pid], signal.SIGKILL)
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()

    async def close(self) -> None:
        await self.kill()
        shutil.rmtree(self._private, ignore_errors=True)
