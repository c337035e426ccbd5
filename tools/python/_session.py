"""One sandboxed Python worker process and the host's control over it.

``bubblewrap`` mode: the worker runs under bwrap with every namespace unshared (no network at
all, its own PID namespace), no further user namespaces, read-only /usr and /dev, sized tmpfs
at /tmp and /dev/shm, the session's data directory bound at /mnt/data, an empty environment,
with rlimits and a seccomp filter; a root host also gives it a uid of its own. ``process``
mode (when namespaces are unavailable): the same worker under a uid of its own (root hosts
only) with rlimits and the seccomp filter, but the host's files stay readable. With
``same_user`` it runs as the host's own uid: no isolation from the host at all.

The host owns the wall clock and the session's processes: past the timeout it kills every
process of the session but the worker and sends SIGINT (state kept); if the cell does not stop
within the grace period, the whole sandbox is killed and the next call starts a new one.
Between cells every process of the session is stopped (SIGSTOP), so nothing writes, spins
or listens while the model thinks. The data directory is read only through ``RunFiles``.
"""

from __future__ import annotations

import json
import os
import secrets
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

from ._files import RunFiles, Scan
from ._layout import (
    DEFAULT_LIMITS,
    INSIDE_WORKER,
    Layout,
    Limits,
    Mode,
    bubblewrap_available,
    data_path,
)
from ._procs import cmdline, descendants, send, stopped
from ._uids import UidLease, kill_uid, pids_of_uid

__all__ = ["ExecResult", "Limits", "SandboxSession", "bubblewrap_available"]

Outcome = Literal["ok", "interrupted", "killed", "died", "quota", "protocol"]
WORKER = Path(__file__).with_name("_worker.py")
MAX_REPLY = 64 << 20
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable on a usual host
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class ExecResult:
    stdout: str = ""
    stderr: str = ""
    fd_output: str = ""
    result: str | None = None
    error: str | None = None
    files: dict[str, list[int]] = field(default_factory=dict)
    special: list[tuple[str, str]] = field(default_factory=list)  # (name, kind) not followed
    outcome: Outcome = "ok"
    quota: str | None = None  # which data limit was passed
    exit_status: str | None = None
    seconds: float = 0.0


class SandboxSession:
    """A persistent worker. ``start`` once, ``execute`` many times, ``close`` at the end."""

    def __init__(
        self,
        data_dir: Path,
        *,
        mode: Mode,
        python: str = "/usr/bin/python3",
        limits: Limits = DEFAULT_LIMITS,
        max_output_chars: int = 20_000,
        interrupt_grace: float = 2.0,
        same_user: bool = False,
    ) -> None:
        if not Path(python).is_file():
            raise ConfigurationError(
                f"the sandbox interpreter {python} does not exist; install python3 or pass "
                "PythonTool(python=...)"
            )
        if mode == "process" and os.geteuid() != 0 and not same_user:
            raise ConfigurationError(
                "process mode needs a root host to run the code under a uid of its own; as "
                "this user the code could read this process's memory and environment. Use "
                "bubblewrap, or opt in to no isolation with isolation='process-unsafe'"
            )
        self.data_dir = data_dir
        self.mode: Mode = mode
        self.python = python
        self.limits = limits
        self.max_output_chars = max_output_chars
        self.interrupt_grace = interrupt_grace
        self.same_user = same_user and os.geteuid() != 0
        self.files = RunFiles(
            data_dir, max_depth=limits.data_depth, max_entries=limits.data_entries
        )
        self._lease: UidLease | None = None
        self._process: Process | None = None
        self._reader: BufferedByteReceiveStream | None = None
        self._worker_pid: int | None = None
        self._bwrap_pids: set[int] = set()
        self._frozen: set[int] = set()
        self._last_scan: Scan | None = None
        self._lock = anyio.Lock()
        self._private: Path | None = None
        self._prepared = False
        self.starts = 0

    @property
    def uid(self) -> int | None:
        return self._lease.uid if self._lease is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def data_path(self) -> str:
        """The data directory as the code sees it."""
        return data_path(self.mode, self.data_dir)

    # --- directories ------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Create the data and private directories once, owned by the session's uid, 0700,
        without following links, each in a parent the sandbox cannot write: they are never
        chowned again while the sandbox can touch them."""
        if os.geteuid() == 0 and self._lease is None:
            self._lease = UidLease()
        parent = self.data_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        st = os.stat(parent)
        if st.st_mode & 0o022 or st.st_uid != os.geteuid():
            raise ConfigurationError(
                f"the sandbox's data directory must be in a directory only this user can "
                f"write; {parent} has mode {oct(st.st_mode & 0o777)} and owner {st.st_uid} "
                "(pick another files_dir)"
            )
        if self.uid is not None:
            self._check_reachable()
        try:
            os.mkdir(self.data_dir, 0o700)
        except FileExistsError:
            pass
        self._own(self.data_dir)
        if self.mode == "process":
            outer = Path(tempfile.mkdtemp(prefix="ha-sbx-"))
            outer.chmod(0o711)
            os.mkdir(outer / "w", 0o700)
            self._own(outer / "w")
            self._private = outer
        self._prepared = True

    def _own(self, path: Path) -> None:
        try:
            fd = os.open(path, _DIR)
        except OSError as exc:
            raise ConfigurationError(
                f"{path} must be a real directory (not a link): {exc.strerror}"
            ) from None
        try:
            if self.uid is not None:
                os.fchown(fd, self.uid, self.uid)
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)

    def _disown(self) -> None:
        """At close: the data directory goes back to the host, so whoever leases the uid
        next cannot enter it."""
        if self.uid is None:
            return
        try:
            fd = os.open(self.data_dir, _DIR)
        except OSError:
            return
        try:
            os.fchown(fd, os.geteuid(), os.getegid())
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)

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

    # --- the worker -------------------------------------------------------------------------

    async def start(self) -> float:
        """Start the worker; returns the seconds it took until it was ready."""
        started = time.perf_counter()
        if not self._prepared:
            await anyio.to_thread.run_sync(self._prepare)
        kwargs: dict[str, Any] = {}
        if self.uid is not None:
            kwargs.update(user=self.uid, group=self.uid, extra_groups=[])
        layout = Layout(
            self.mode,
            self.data_dir,
            self.python,
            self.limits,
            self.max_output_chars,
            self._private,
            own_uid=self.uid is not None,
        )
        worker_fd = os.open(WORKER, os.O_RDONLY | os.O_CLOEXEC)
        fds = [worker_fd]
        try:
            if self.mode == "bubblewrap":
                args_r, args_w = os.pipe()
                fds.append(args_r)
                data = b"".join(a.encode() + b"\0" for a in layout.bwrap_args(worker_fd))
                try:
                    os.write(args_w, data)  # well under a pipe's buffer
                finally:
                    os.close(args_w)
                argv = ["bwrap", "--args", str(args_r), self.python, "-I", "-u", INSIDE_WORKER]
                env, cwd = {"PATH": "/usr/bin:/bin"}, "/"
            else:
                argv = [self.python, "-I", "-u", str(WORKER)]
                env, cwd = layout.env(), str(self.data_dir)
            self._process = await anyio.open_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
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
        if hello.get("seccomp_error"):
            await self.kill()
            raise ConfigurationError(
                f"the python sandbox's seccomp filter is not in force ({hello['seccomp_error']}); "
                "refusing to run code without it"
            )
        await anyio.to_thread.run_sync(self._find_worker)
        self.starts += 1
        return time.perf_counter() - started

    async def _stderr(self) -> str:
        if self._process is None or self._process.stderr is None:
            return ""
        with anyio.move_on_after(1):
            try:
                return (await self._process.stderr.receive(65536)).decode(errors="replace").strip()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return ""
        return ""

    def _find_worker(self) -> None:
        assert self._process is not None
        root = self._process.pid
        if self.mode == "process":
            self._worker_pid, self._bwrap_pids = root, set()
            return
        # bwrap, bwrap's init in the new PID namespace, then the worker
        self._bwrap_pids, self._worker_pid = {root}, None
        for pid in descendants(root):
            argv = cmdline(pid).split(b"\0")
            if argv[0] == self.python.encode() and INSIDE_WORKER.encode() in argv:
                self._worker_pid = pid
                break
            self._bwrap_pids.add(pid)

    # --- the session's processes ------------------------------------------------------------

    def _session_pids(self) -> list[int]:
        """Every process of the session that is not bwrap itself."""
        if self._process is None:
            return []
        if self.mode == "bubblewrap":  # all of them live below bwrap's init, in its namespace
            pids = descendants(self._process.pid)
        elif self.uid is not None:  # a uid of its own: orphans re-parented anywhere are found
            pids = pids_of_uid(self.uid)
        else:
            pids = [self._process.pid, *descendants(self._process.pid)]
        return [p for p in pids if p not in self._bwrap_pids]

    def _freeze(self) -> None:
        """SIGSTOP every process of the session until no new one appears (a stopped process
        cannot fork) and each has stopped (a signal lands when its thread is next scheduled;
        a write in flight finishes first); :meth:`_thaw` continues exactly those."""
        if self._worker_pid is not None:
            send([self._worker_pid], signal.SIGSTOP)
            self._frozen.add(self._worker_pid)
        for _ in range(20):
            pids = set(self._session_pids()) - self._frozen
            if not pids:
                break
            send(sorted(pids), signal.SIGSTOP)
            self._frozen |= pids
        pending, end = set(self._frozen), time.monotonic() + 2.0
        while pending and time.monotonic() < end:
            pending = {pid for pid in pending if not stopped(pid)}
            if pending:
                time.sleep(0.001)

    def _thaw(self) -> None:
        frozen, self._frozen = self._frozen, set()
        send(sorted(frozen), signal.SIGCONT)

    def _kill_others(self) -> None:
        """SIGKILL every process of the session but the worker. They are stopped first, the
        worker with them: a stopped process cannot fork, so none is born behind the scan."""
        self._freeze()
        for _ in range(20):
            others = [p for p in self._session_pids() if p != self._worker_pid]
            if not others:
                break
            send(others, signal.SIGKILL)
        self._frozen.clear()
        if self._worker_pid is not None:
            send([self._worker_pid], signal.SIGCONT)

    def _interrupt(self) -> None:
        """Kill every process of the session but the worker, then KeyboardInterrupt in the
        worker (state kept)."""
        if self._worker_pid is None:
            return
        self._kill_others()
        send([self._worker_pid], signal.SIGINT)

    async def interrupt(self) -> None:
        await anyio.to_thread.run_sync(self._interrupt)

    # --- a cell -----------------------------------------------------------------------------

    def _over(self, scan: Scan, before: Scan | None = None) -> str | None:
        """Which data limit ``scan`` passes; with ``before``, only if it grew past it (a
        cell that cleans up an over-full directory is not stopped)."""
        lim = self.limits
        if before is not None and (
            scan.total_bytes <= before.total_bytes and scan.count <= before.count
        ):
            return None
        if lim.data_quota_bytes and scan.total_bytes > lim.data_quota_bytes:
            return "bytes"
        if scan.too_many:
            return "entries"
        if scan.too_deep:
            return "depth"
        return None

    async def execute(self, code: str, timeout: float) -> ExecResult:  # noqa: ASYNC109 — interrupt, then kill: not a cancel scope
        async with self._lock:  # one cell at a time: the protocol is one request, one reply
            return await self._execute(code, timeout)

    async def _execute(self, code: str, timeout: float) -> ExecResult:  # noqa: ASYNC109
        if not self.alive:
            await self.start()
        assert self._process is not None and self._process.stdin is not None
        assert self._reader is not None
        started = time.perf_counter()
        deadline = started + timeout
        # nothing of the session ran since the last cell's walk: it still holds
        before = self._last_scan or await anyio.to_thread.run_sync(self.files.scan)
        self._last_scan = None
        self._thaw()
        request_id = secrets.token_hex(16)
        request = json.dumps({"id": request_id, "code": code}).encode() + b"\n"
        with anyio.move_on_after(timeout) as sending:
            try:
                await self._process.stdin.send(request)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return await self._died(started)
        if sending.cancelled_caught:  # a stopped or wedged worker does not read its input
            await self.kill()
            return ExecResult(outcome="killed", seconds=time.perf_counter() - started)
        interrupted_at: float | None = None
        outcome: Outcome = "ok"
        quota: str | None = None
        poll = 0.2
        while True:
            line: bytes | None = None
            with anyio.move_on_after(poll):
                try:
                    line = await self._reader.receive_until(b"\n", MAX_REPLY)
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                    return await self._died(started)
                except anyio.DelimiterNotFound:
                    return await self._protocol_error(started, f"a line over {MAX_REPLY} bytes")
            if line is not None:  # outside the poll's scope: its deadline must not cut this
                return await self._answer(line, request_id, outcome, quota, before, started)
            if outcome == "ok":
                t = time.perf_counter()
                scan = await anyio.to_thread.run_sync(self.files.scan)
                # a walk of a large tree costs: poll less often the longer it takes
                poll = max(0.2, 5 * (time.perf_counter() - t))
                quota = self._over(scan, before)
                if quota is not None:
                    outcome, interrupted_at = "quota", time.perf_counter()
                    await self.interrupt()
                    continue
            now = time.perf_counter()
            if interrupted_at is None and now >= deadline:
                outcome, interrupted_at = "interrupted", now
                await self.interrupt()
            elif interrupted_at is not None and now - interrupted_at > self.interrupt_grace:
                await self.kill()
                return ExecResult(
                    outcome="killed" if outcome != "quota" else "quota",
                    quota=quota,
                    seconds=now - started,
                )

    async def _answer(
        self,
        line: bytes,
        request_id: str,
        outcome: Outcome,
        quota: str | None,
        before: Scan,
        started: float,
    ) -> ExecResult:
        try:
            answer = json.loads(line)
            if not isinstance(answer, dict) or answer.pop("id", None) != request_id:
                raise ValueError("a reply to another request")
            result = ExecResult(**answer, outcome=outcome, quota=quota)
            if not all(
                isinstance(v, str) or (v is None and k in ("result", "error"))
                for k, v in answer.items()
            ):
                raise ValueError("a reply with a field of the wrong type")
        except (ValueError, TypeError) as exc:
            return await self._protocol_error(started, str(exc))
        if outcome != "ok":  # a fork in flight when the worker was interrupted survived it
            await anyio.to_thread.run_sync(self._kill_others)
        after = self._last_scan = await anyio.to_thread.run_sync(self._freeze_and_scan)
        if result.outcome == "ok":
            result.quota = self._over(after, before)
            if result.quota is not None:
                result.outcome = "quota"
        old = before.files()
        for entry in after.entries:
            prev = old.get(entry.name)
            if prev is not None and (prev.size, prev.mtime_ns) == (entry.size, entry.mtime_ns):
                continue
            if entry.kind == "file":
                result.files[entry.name] = [entry.size, entry.mtime_ns]
            elif prev is None:
                result.special.append((entry.name, entry.kind))
        result.seconds = time.perf_counter() - started
        return result

    def _freeze_and_scan(self) -> Scan:
        self._freeze()
        return self.files.scan()

    async def _protocol_error(self, started: float, why: str) -> ExecResult:
        await self.kill()
        return ExecResult(
            outcome="protocol", exit_status=why, seconds=time.perf_counter() - started
        )

    async def _died(self, started: float) -> ExecResult:
        status = None
        if self._process is not None:
            with anyio.move_on_after(5):
                code = await self._process.wait()
                status = f"signal {-code}" if code < 0 else f"exit code {code}"
        await self.kill()
        return ExecResult(outcome="died", exit_status=status, seconds=time.perf_counter() - started)

    async def kill(self) -> None:
        """End the sandbox and every process of it, and reap it."""
        process, self._process = self._process, None
        self._reader, self._worker_pid, self._bwrap_pids = None, None, set()
        self._frozen, self._last_scan = set(), None
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            pids = await anyio.to_thread.run_sync(descendants, process.pid)
            send([*pids, process.pid], signal.SIGKILL)
            if self.uid is not None:
                await anyio.to_thread.run_sync(kill_uid, self.uid)
            await process.wait()
            await process.aclose()

    def _sweep_shared_dirs(self) -> None:
        """Process mode writes where the host lets anyone write: at close, remove what the
        session's uid left at the top of those directories (nobody else holds the uid)."""
        for shared in SHARED_DIRS:
            try:
                entries = list(os.scandir(shared))
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                    if st.st_uid != self.uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)  # fd-based: does not follow links
                    else:
                        os.unlink(entry.path)
                except OSError:
                    continue

    async def close(self) -> None:
        await self.kill()
        with anyio.CancelScope(shield=True):
            if self.mode == "process" and self.uid is not None:
                await anyio.to_thread.run_sync(self._sweep_shared_dirs)
            if self._lease is not None:
                await anyio.to_thread.run_sync(self._lease.release)
            await anyio.to_thread.run_sync(self._disown)
            private = self._private
            if private is not None:
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(private, ignore_errors=True))
