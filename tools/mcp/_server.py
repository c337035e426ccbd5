"""MCP servers as toolsets: one connection, tools listed on first use, results as tool messages.

Connections: inside ``async with agent:`` one connection per server serves every run (it
lives in a task of the agent's task group); a run on its own opens the connection when it
starts and closes it when it ends. Either way the connection is owned by one task, so the
SDK's cancel scopes are entered and left where they belong, and the stdio subprocess is
reaped when that task ends.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import jsonschema
from harmony_agent.errors import (
    ConfigurationError,
    ToolArgumentsError,
    ToolExecutionError,
    ToolTimeoutError,
)

from .._schema import simplify_schema
from ..base import RunContext, Tool, Toolset
from ._results import result_text

__all__ = ["MCPServerSSE", "MCPServerStdio", "MCPServerStreamableHTTP", "MCPTool", "MCPToolset"]

_IDENT = re.compile(r"[^A-Za-z0-9_]+")


def _require_mcp() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "MCP servers need the mcp package: pip install 'harmony-agent[mcp]' "
            f"({type(exc).__name__}: {exc})"
        ) from None


def _version() -> str:
    try:
        return importlib.metadata.version("harmony-agent")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _ident(name: str) -> str:
    """``name`` as a Harmony function identifier (letters, digits, ``_``)."""
    out = _IDENT.sub("_", name).strip("_")
    return out if out and not out[0].isdigit() else f"t_{out}"


class MCPTool(Tool):
    """One tool of an MCP server, declared as ``functions.<prefix>__<tool>``."""

    def __init__(self, server: MCPToolset, remote: Any, name: str) -> None:
        self.server = server
        self.remote_name: str = remote.name
        self.name = name
        self.description = remote.description or remote.title or ""
        self.input_schema: dict[str, Any] = dict(remote.input_schema or {"type": "object"})
        self.parameters = simplify_schema(self.input_schema)
        self.output_schema: dict[str, Any] | None = remote.output_schema
        self.timeout = None  # the server applies its own per-call timeout (and restarts on a hang)

    def parse_arguments(self, raw: str) -> Any:
        arguments = super().parse_arguments(raw)
        # the declared schema is simplified for Harmony; the server's own schema decides
        errors = list(jsonschema.Draft202012Validator(self.input_schema).iter_errors(arguments))
        if errors:
            lines = [
                f"- at {'/'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}"
                for e in errors[:5]
            ]
            raise ToolArgumentsError(
                f"arguments for {self.recipient} do not match its schema:\n"
                + "\n".join(lines)
                + "\nFix these and call the tool again."
            )
        return arguments

    async def call(self, arguments: Any, ctx: RunContext) -> Any:
        return await self.server.call_tool(self, arguments, ctx)


class _Connection:
    """A connected ``mcp.Client``, entered and left by its own task (:meth:`serve`)."""

    def __init__(self, server: MCPToolset) -> None:
        self.server = server
        self.client: Any = None
        self.listed = False
        self.error: Exception | None = None
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._scope = anyio.CancelScope()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Connect, report, hold the connection until :meth:`aclose`. Never raises: a failure
        to connect is left in ``error`` for the starter, a broken connection makes
        ``client`` ``None`` so that callers reconnect."""
        started = False
        try:
            with self._scope:
                async with self.server._client(self._on_message) as client:
                    self.client = client
                    started = True
                    task_status.started()
                    await self._stop.wait()
        except Exception as exc:
            self.error = exc
        finally:
            self.client = None
            self._done.set()
            if not started:
                task_status.started()

    async def _on_message(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            self.server._stale = True
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._stop.set()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(10):
                await self._done.wait()
            if not self._done.is_set():  # a transport that will not let go
                self._scope.cancel()
                await self._done.wait()


class MCPToolset(Toolset):
    """Tools of a Model Context Protocol server (base of the stdio and HTTP variants).

    Args:
        prefix: tools are declared as ``functions.<prefix>__<tool>``; default: the name the
            server gives itself; ``""`` declares bare tool names.
        include / exclude: tool names (the server's) to keep or to leave out.
        timeout: seconds a call may take; a server that does not answer by then is
            restarted and the model gets a timeout error.
        connect_timeout: seconds to connect and list the tools.
    """

    def __init__(
        self,
        *,
        prefix: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        timeout: float = 60.0,
        connect_timeout: float = 30.0,
    ) -> None:
        _require_mcp()
        if include is not None and isinstance(include, str):
            raise ConfigurationError(
                f"include= takes a list of tool names, got the string {include!r}"
            )
        if isinstance(exclude, str):
            raise ConfigurationError(
                f"exclude= takes a list of tool names, got the string {exclude!r}"
            )
        self.prefix = prefix
        self.include = None if include is None else frozenset(include)
        self.exclude = frozenset(exclude)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._tools: list[MCPTool] = []
        self._stale = True
        self._shared: _Connection | None = None
        self._shared_host: anyio.abc.TaskGroup | None = None
        self._shared_lock: anyio.Lock | None = None
        self.server_name: str | None = None
        self.instructions: str | None = None

    # --- what a subclass provides ---------------------------------------------------------

    @property
    def label(self) -> str:
        """How messages name this server."""
        raise NotImplementedError

    def _transport(self) -> Any:
        """The ``mcp.Client`` server argument (a URL, stdio parameters or a transport)."""
        raise NotImplementedError

    # --- Toolset ----------------------------------------------------------------------------

    def tools(self) -> Sequence[Tool]:
        return list(self._tools)

    async def prepare(self, ctx: RunContext) -> None:
        """Connect (once) and list the tools if they are not listed yet or have changed.

        A connection found dead (the server exited between runs) is made again once."""
        from mcp.shared.exceptions import MCPError

        conn = await self._connection(ctx)
        if not self._stale and conn.listed:
            return
        for attempt in (1, 2):
            try:
                with anyio.move_on_after(self.connect_timeout) as scope:
                    await self._list(conn)
            except (MCPError, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
                if attempt == 2 or (isinstance(exc, MCPError) and not _connection_lost(exc)):
                    raise ConfigurationError(
                        f"the MCP server {self.label} did not list its tools: {_reason(exc)}"
                    ) from None
                await self._reconnect(ctx, conn)
                conn = await self._connection(ctx)
                continue
            if scope.cancelled_caught:
                raise ConfigurationError(
                    f"the MCP server {self.label} did not list its tools within "
                    f"connect_timeout={self.connect_timeout:g} s"
                )
            return

    async def aclose(self) -> None:
        conn, self._shared, self._shared_host = self._shared, None, None
        if conn is not None:
            await conn.aclose()

    # --- connections ------------------------------------------------------------------------

    def _client(self, on_message: Any) -> Any:
        from mcp import Client
        from mcp_types import Implementation

        return Client(
            self._transport(),
            mode="legacy",  # the initialize handshake: every server speaks it, list_changed included
            message_handler=on_message,
            cache=None,
            client_info=Implementation(name="harmony-agent", version=_version()),
        )

    async def _start(self, host: anyio.abc.TaskGroup) -> _Connection:
        conn = _Connection(self)
        with anyio.move_on_after(self.connect_timeout) as scope:
            await host.start(conn.serve)
        if conn.client is None:
            if scope.cancelled_caught:
                why = f"no answer within connect_timeout={self.connect_timeout:g} s"
            else:
                why = _reason(conn.error) if conn.error else "the connection closed at once"
            raise ConfigurationError(
                f"could not connect to the MCP server {self.label}: {why}. Check that the "
                "server starts (run it by hand) and that the address is right."
            )
        return conn

    @contextlib.asynccontextmanager
    async def _run_connection(self, host: anyio.abc.TaskGroup) -> AsyncIterator[_Connection]:
        conn = await self._start(host)
        try:
            yield conn
        finally:
            await conn.aclose()

    async def _connection(self, ctx: RunContext) -> _Connection:
        host = ctx.task_group
        if host is None:
            raise ConfigurationError(
                "MCP servers need a run context with a task group (Agent.run provides one)"
            )
        if not ctx.shared:  # a run on its own: the connection is one of its resources
            return await ctx.resource(self._key, lambda: self._run_connection(host))
        if self._shared_host is not host:
            self._shared, self._shared_host = None, host
            self._shared_lock = anyio.Lock()
        assert self._shared_lock is not None
        async with self._shared_lock:
            if self._shared is None or self._shared.client is None:
                self._shared = await self._start(host)
            return self._shared

    async def _reconnect(self, ctx: RunContext, old: _Connection) -> None:
        await old.aclose()
        if not ctx.shared:
            await ctx.drop_resource(self._key)

    @property
    def _key(self) -> str:
        return f"mcp:{id(self)}"

    # --- tools ------------------------------------------------------------------------------

    async def _list(self, conn: _Connection) -> None:
        client = conn.client
        if client is None:
            raise ConfigurationError(f"the MCP server {self.label} closed the connection")
        self._stale = False
        remote: list[Any] = []
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor)
            remote.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        info = client.server_info
        self.server_name = info.name if info is not None else None
        self.instructions = client.instructions
        prefix = "" if self.prefix == "" else _ident(self.prefix or self.server_name or "mcp")
        tools = []
        for t in remote:
            if (self.include is not None and t.name not in self.include) or t.name in self.exclude:
                continue
            name = f"{prefix}__{_ident(t.name)}" if prefix else _ident(t.name)
            tools.append(MCPTool(self, t, name))
        self._tools = tools
        conn.listed = True

    async def call_tool(self, tool: MCPTool, arguments: dict[str, Any], ctx: RunContext) -> str:
        """Call ``tool`` on the server: one reconnect if the server is gone, a timeout per call."""
        from mcp.shared.exceptions import MCPError

        for attempt in (1, 2):
            try:
                conn = await self._connection(ctx)
            except ConfigurationError as exc:
                ctx.notice(str(exc))
                raise ToolExecutionError(
                    f"{tool.recipient} is unavailable: its MCP server cannot be reached. "
                    "Answer without it or try another tool."
                ) from None
            client = conn.client
            try:
                if client is None:
                    raise anyio.ClosedResourceError
                result = None
                with anyio.move_on_after(self.timeout) as scope:
                    result = await client.call_tool(tool.remote_name, arguments)
            except (MCPError, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
                if isinstance(exc, MCPError) and not _connection_lost(exc):
                    raise ToolExecutionError(f"{tool.recipient} failed: {exc}") from None
                await self._reconnect(ctx, conn)
                if attempt == 1:
                    ctx.notice(
                        f"the MCP server {self.label} lost its connection ({_reason(exc)}); "
                        "reconnecting and calling again"
                    )
                    continue
                ctx.notice(f"the MCP server {self.label} failed again after a reconnect")
                raise ToolExecutionError(
                    f"{tool.recipient} failed: its MCP server stopped answering ({_reason(exc)}), "
                    "also after a restart. Do not call it again in this run."
                ) from None
            if scope.cancelled_caught or result is None:
                await self._reconnect(ctx, conn)
                ctx.notice(
                    f"the MCP server {self.label} did not answer {tool.remote_name} within "
                    f"{self.timeout:g} s; its connection was restarted"
                )
                raise ToolTimeoutError(
                    f"{tool.recipient} timed out after {self.timeout:g} s and was stopped. "
                    "Try a smaller request or a different approach."
                )
            text, _files = await result_text(
                result, ctx.files_dir, _ident(tool.remote_name), tool.output_schema
            )
            if result.is_error:
                raise ToolExecutionError(f"{tool.recipient} reported an error: {text}")
            return text
        raise AssertionError("unreachable")


def _connection_lost(exc: Exception) -> bool:
    from mcp_types import CONNECTION_CLOSED

    error = getattr(exc, "error", None)
    return getattr(exc, "code", getattr(error, "code", None)) == CONNECTION_CLOSED


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _reason(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class MCPServerStdio(MCPToolset):
    """An MCP server run as a subprocess, spoken to over its stdin/stdout.

    Example::

        import sys
        from harmony_agent import Agent
        from harmony_agent.tools.mcp import MCPServerStdio

        files = MCPServerStdio(sys.executable, args=["-m", "my_mcp_server"], prefix="files")
        # agent = Agent(tools=[files], engine=...)  →  functions.files__<tool>
    """

    def __init__(
        self,
        command: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not command or not isinstance(command, str):
            raise ConfigurationError(f"MCPServerStdio needs a command to run, got {command!r}")
        if isinstance(args, str):
            raise ConfigurationError(
                f"args= takes a list of arguments, got the string {args!r}; "
                f"use args={shlex.split(args)!r}"
            )
        self.command = command
        self.args = list(args)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd

    @property
    def label(self) -> str:
        return f"'{shlex.join([self.command, *self.args])}'"

    def _transport(self) -> Any:
        from mcp import StdioServerParameters

        return StdioServerParameters(
            command=self.command, args=self.args, env=self.env, cwd=self.cwd
        )


class MCPServerStreamableHTTP(MCPToolset):
    """An MCP server reached over streamable HTTP (``http://host:port/mcp``)."""

    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"{type(self).__name__} needs an http:// or https:// URL, got {url!r} "
                "(e.g. http://127.0.0.1:8000/mcp)"
            )
        self.url = url
        self.headers = dict(headers or {})

    @property
    def label(self) -> str:
        return self.url

    def _transport(self) -> Any:
        return _http_transport(self.url, self.headers)


class MCPServerSSE(MCPServerStreamableHTTP):
    """An MCP server on the older HTTP+SSE transport (``http://host:port/sse``)."""

    def _transport(self) -> Any:
        from mcp.client.sse import sse_client

        return sse_client(self.url, headers=self.headers, timeout=30.0)


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            yield streams
