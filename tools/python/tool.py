"""``PythonTool``: the stateful ``python`` tool gpt-oss was trained on, in a real sandbox.

Example::

    from harmony_agent import Agent
    from harmony_agent.engine import ScriptedEngine
    from harmony_agent.tools import PythonTool

    agent = Agent(tools=[PythonTool(timeout=30)], engine=ScriptedEngine([
        "<|channel|>analysis to=python code<|message|>x = 6 * 7\\nx<|call|>",
        "<|channel|>final<|message|>42<|return|>",
    ]))
    result = agent.run_sync("What is 6 times 7?")
    assert result.tool_calls[0].output == "42"
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from harmony_agent.errors import ConfigurationError
from harmony_agent.tools.base import (
    ApprovalPolicy,
    RunContext,
    Tool,
    Toolset,
    check_approval_policy,
)
from openai_harmony import ToolNamespaceConfig

from ._files import RunFiles, display_name
from ._session import ExecResult, Limits, SandboxSession, bubblewrap_available

__all__ = ["Limits", "PythonTool"]

Isolation = Literal["auto", "bubblewrap", "process", "process-unsafe"]
ISOLATIONS = ("auto", "bubblewrap", "process", "process-unsafe")


def _size(n: int) -> str:
    return (
        f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MB"
    )


class _PythonCall(Tool):
    namespace = name = "python"
    parameters = None  # the message is the code
    timeout = None  # the session enforces its own wall clock

    def __init__(self, owner: PythonTool) -> None:
        self.owner = owner
        self.description = "Stateful Python in a sandbox."
        self.max_output_chars = owner.max_output_chars * 3

    async def call(self, arguments: Any, ctx: RunContext) -> Any:
        return await self.owner.run_code(str(arguments), ctx)


class PythonTool(Toolset):
    """A stateful Python sandbox per agent run, declared as the built-in ``python`` tool.

    Args:
        timeout: wall-clock seconds per call (the model was trained with 120); past it the
            cell is interrupted (state kept), and if it does not stop, the session restarts.
        isolation: ``"bubblewrap"`` (namespaces: no network, own filesystem view),
            ``"process"`` (a uid of its own, rlimits, seccomp: weaker, the host's files are
            readable; needs a root host), ``"auto"`` (bubblewrap when it works, else process
            with a warning event, else a ConfigurationError), or ``"process-unsafe"``: an
            explicit opt-in to run the code as this host's own user when neither works
            (no isolation from this process: its memory and environment are readable).
        python: the interpreter inside the sandbox (its packages are what the code can import).
        limits: CPU, memory, file size, open files, processes, /mnt/data quota.
        max_output_chars: output kept per stream (head and tail), the rest is counted.
        needs_approval: ``True`` or a callable ``(ctx, call) -> bool``: the run pauses before
            running code until the call is approved (``Agent.resume``).
    """

    def __init__(
        self,
        *,
        timeout: float = 120.0,
        isolation: Isolation = "auto",
        python: str = "/usr/bin/python3",
        limits: Limits | None = None,
        max_output_chars: int = 20_000,
        needs_approval: ApprovalPolicy = False,
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ConfigurationError(
                "isolation must be 'auto', 'bubblewrap', 'process' or 'process-unsafe', got "
                f"{isolation!r}"
            )
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be positive, got {timeout}")
        self.timeout = timeout
        self.isolation: Isolation = isolation
        self.python = python
        self.limits = limits or Limits()
        self.max_output_chars = max_output_chars
        self._tool = _PythonCall(self)
        self._tool.needs_approval = check_approval_policy(needs_approval, "python")

    @property
    def mode(self) -> Literal["bubblewrap", "process"]:
        if self.isolation == "bubblewrap" or (self.isolation == "auto" and bubblewrap_available()):
            if not bubblewrap_available():
                raise ConfigurationError(
                    "bubblewrap cannot create namespaces here (is the `bubblewrap` package "
                    "installed, and are user namespaces allowed?); use isolation='auto'"
                )
            return "bubblewrap"
        if self.isolation != "process-unsafe" and os.geteuid() != 0:
            raise ConfigurationError(
                "the python sandbox cannot isolate code here: bubblewrap cannot create "
                "namespaces, and process mode needs a root host to give the code a uid of its "
                "own. Install bubblewrap and allow user namespaces, or opt in to running the "
                "code as this user (it can read this process's memory, environment and files) "
                "with PythonTool(isolation='process-unsafe')"
            )
        return "process"

    @property
    def same_user(self) -> bool:
        """Whether the code runs as this host's own user (``process-unsafe`` on a non-root
        host): no isolation from this process."""
        return self.mode == "process" and os.geteuid() != 0

    @staticmethod
    def files_of(ctx: RunContext) -> RunFiles:
        """The run's sandbox files, read safely (regular files only, links not followed).

        Example::

            files = PythonTool.files_of(ctx)
            table = files.read_text("growth.csv")
        """
        return RunFiles(ctx.files_dir / "python")

    def tools(self) -> Sequence[Tool]:
        return [self._tool]

    def description(self) -> str:
        mode = self.mode
        drive = (
            "The drive at '/mnt/data'"
            if mode == "bubblewrap"
            else "The current working directory (also $HOME)"
        )
        text = (
            "Use this tool to execute Python code in your chain of thought. The code will not be "
            "shown to the user. This tool should be used for internal reasoning, but not for "
            "code that is intended to be visible to the user (e.g. when creating plots, tables, "
            "or files).\n\n"
            "When you send a message containing Python code to python, it will be executed in a "
            "stateful Jupyter notebook environment. python will respond with the output of the "
            f"execution or time out after {self.timeout:.1f} seconds. {drive} "
            "can be used to save and persist user files. Internet access for this session is "
            "disabled."
        )
        if self.same_user:
            text += (
                " There is no sandbox here: the code runs as the host's own user, with "
                "resource limits and no network sockets."
            )
        elif mode == "process":
            text += (
                " The sandbox is weaker here (no namespaces): the code runs as an unprivileged "
                "user with resource limits and no network sockets."
            )
        return text

    def system_namespaces(self) -> Sequence[Any]:
        return [ToolNamespaceConfig(name="python", description=self.description(), tools=[])]

    # --- per-run session -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self, ctx: RunContext) -> AsyncIterator[SandboxSession]:
        mode = self.mode
        if mode == "process" and self.isolation == "auto":
            ctx.notice(
                "python sandbox: bubblewrap namespaces are unavailable, falling back to weaker "
                "isolation (unprivileged user, rlimits, seccomp): the host's files are readable"
            )
        elif self.same_user:
            ctx.notice(
                "python sandbox: isolation='process-unsafe' runs the model's code as this "
                "user: it can read this process's memory, environment and files"
            )
        session = SandboxSession(
            ctx.files_dir / "python",
            mode=mode,
            same_user=self.same_user,
            python=self.python,
            limits=self.limits,
            max_output_chars=self.max_output_chars,
        )
        try:
            yield session
        finally:
            await session.close()

    async def session(self, ctx: RunContext) -> SandboxSession:
        """The run's sandbox session (started on the first call)."""
        return await ctx.resource(f"python:{id(self)}", lambda: self._session(ctx))

    async def run_code(self, code: str, ctx: RunContext) -> str:
        session = await self.session(ctx)
        restarted = session.starts > 0 and not session.alive
        result = await session.execute(code, self.timeout)
        text = self._format(result, session)
        if restarted:
            text = "[A new Python session was started: earlier variables are gone.]\n" + text
        return text

    def _format(self, r: ExecResult, session: SandboxSession) -> str:
        parts = [p for p in (r.stdout, r.fd_output, r.stderr) if p]
        if r.result is not None:
            parts.append(r.result)
        if r.error:
            parts.append(r.error.rstrip())
        where = session.data_path if session.mode == "bubblewrap" else "the working directory"
        if r.files:
            listed = ", ".join(
                f"{display_name(name)} ({_size(size)})"
                for name, (size, _) in sorted(r.files.items())
            )
            parts.append(f"[files written to {where}: {listed}]")
        if r.special:
            listed = ", ".join(f"{display_name(name)} ({kind})" for name, kind in sorted(r.special))
            parts.append(f"[not regular files, which the host will not read: {listed}]")
        if r.outcome == "interrupted":
            parts.append(
                f"[Timed out after {self.timeout:g} s: the cell was interrupted. "
                "Variables and files are kept.]"
            )
        elif r.outcome == "killed":
            parts.append(
                f"[Timed out after {self.timeout:g} s and the cell did not stop, so the "
                "Python session was killed and will restart on the next call: variables "
                "and imports are lost; files in /mnt/data are kept.]"
            )
        elif r.outcome == "quota":
            lim = self.limits
            what = {
                "entries": f"put more than {lim.data_entries} files and directories in",
                "depth": f"put directories nested deeper than {lim.data_depth} levels in",
            }.get(r.quota or "", f"wrote more than {_size(lim.data_quota_bytes)} to")
            parts.append(
                f"[The code {what} {where}; the cell was stopped. Delete files before "
                "writing more (os.system('rm -rf ...') removes deep trees).]"
            )
        elif r.outcome == "protocol":
            parts.append(
                f"[The sandbox's reply broke the protocol ({r.exit_status}), so the Python "
                "session was killed and will restart on the next call: variables and imports "
                "are lost; files are kept.]"
            )
        elif r.outcome == "died":
            parts.append(
                f"[The Python process died ({r.exit_status or 'unknown cause'}); a new "
                "session will start on the next call: variables and imports are lost; "
                "files in /mnt/data are kept.]"
            )
        if not parts:
            return "[no output: print() something, or end the cell with an expression]"
        return "\n".join(p.rstrip("\n") for p in parts)

    def __repr__(self) -> str:
        return f"PythonTool(timeout={self.timeout}, isolation={self.isolation!r})"
