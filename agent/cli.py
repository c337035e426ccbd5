"""``harmony-agent``: run a gpt-oss agent task from the terminal.

The answer goes to stdout; reasoning, tool activity, warnings and usage to stderr.
``--json`` prints one JSON event per line on stdout instead. Exit codes: 0 answered,
1 the run failed, 2 bad usage or configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from harmony_agent.engine._spec import ENGINE_ENV, engine_from_spec
from harmony_agent.engine.base import Engine
from harmony_agent.tools.base import Tool, Toolset
from harmony_agent.tools.function import tool as make_tool
from rich.console import Console

from ._console import EventView, Prices
from .agent import Agent
from .errors import ConfigurationError, HarmonyAgentError
from .events import Event, RunFinished, event_to_json

__all__ = ["build_parser", "load_tools", "main", "make_engine"]

#: the CLI option for each library setting an error names (see HarmonyAgentError.settings)
_FLAGS = {
    "engine": "--engine",
    "base_url": "--engine",
    "model": "--model",
    "api_key_env": "--api-key-env",
}


def make_engine(
    spec: str | None, *, model: str | None = None, api_key_env: str | None = None
) -> Engine:
    """An engine from ``--engine`` (or ``$HARMONY_AGENT_ENGINE``): ``scripted:FILE``,
    ``vllm[:MODEL_OR_PATH]`` or ``http(s)://HOST:PORT/v1`` (see ``harmony_agent.engine._spec``)."""
    return engine_from_spec(spec, model=model, api_key_env=api_key_env)


def _with_flags(exc: HarmonyAgentError, *, first_line: bool = False) -> str:
    """The error's message (or its first line), with the options that fix it: library
    messages name settings, not options."""
    flags = dict.fromkeys(_FLAGS[s] for s in exc.settings if s in _FLAGS)
    text = str(exc) or type(exc).__name__
    if first_line:
        text = text.splitlines()[0]
    return f"{text} ({', '.join(flags)})" if flags else text


def _import_target(target: str, flag: str = "--tools") -> Any:
    if ":" not in target:
        raise ConfigurationError(f"{flag} {target!r}: expected MODULE:ATTR or path/to/file.py:ATTR")
    module_name, _, attr = target.rpartition(":")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ConfigurationError(f"{flag} {target!r}: file {module_name} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(
                f"{flag} {target!r}: cannot import {module_name}: {exc}"
            ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(
            f"{flag} {target!r}: {module_name} has no attribute {attr!r}"
        ) from None


def load_output_type(spec: str | None) -> Any:
    """``--output-schema``: a JSON schema file, or ``MODULE:ATTR`` naming a type."""
    if spec is None:
        return None
    path = Path(spec)
    if path.suffix == ".json" or path.is_file():
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"--output-schema {spec!r}: cannot read it: {exc}") from None
        except ValueError as exc:
            raise ConfigurationError(f"--output-schema {spec!r}: not JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise ConfigurationError(
                f"--output-schema {spec!r}: a JSON schema is an object, got {type(schema).__name__}"
            )
        return schema
    return _import_target(spec, "--output-schema")


def print_output(out: Console, value: Any) -> None:
    """The validated answer on stdout: pretty JSON on a terminal, one line otherwise."""
    if out.is_terminal:
        out.print_json(data=value)
    else:
        out.file.write(json.dumps(value, ensure_ascii=False) + "\n")
        out.file.flush()


def load_tools(targets: Sequence[str]) -> list[Tool | Toolset]:
    """Tools from ``MODULE:ATTR`` specs: a Tool, a Toolset, a plain function, or a list of them."""
    tools: list[Tool | Toolset] = []
    for target in targets:
        value = _import_target(target)
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, Tool | Toolset):
                tools.append(item)
            elif callable(item):
                tools.append(make_tool(item))
            else:
                raise ConfigurationError(
                    f"--tools {target!r}: {item!r} is neither a tool nor a function"
                )
    return tools


def _agent_options(parser: argparse.ArgumentParser, *, engine: bool = True) -> None:
    # Long but flat: one declaration per option, read top to bottom like the --help it makes.
    if engine:
        parser.add_argument(
            "--engine",
            help="scripted:FILE (JSON list of raw Harmony replies), vllm[:MODEL_OR_PATH] "
            "(in-process vLLM), or http://HOST:PORT/v1 (OpenAI-compatible server); "
            f"default ${ENGINE_ENV}, else vllm with openai/gpt-oss-20b",
        )
        parser.add_argument(
            "--model", help="model name for HTTP engines (default: the server's only model)"
        )
        parser.add_argument(
            "--api-key-env", help="environment variable holding the HTTP engine's API key"
        )
    parser.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="user functions or tools to enable (repeatable); a file path works too: tools.py:add",
    )
    parser.add_argument(
        "--browser",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the built-in browser tool (Chromium; default on)",
    )
    parser.add_argument(
        "--python",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the built-in python sandbox (default on)",
    )
    parser.add_argument(
        "--allow-domain",
        action="append",
        default=None,
        metavar="DOMAIN",
        help="only let the browser load these domains (repeatable)",
    )
    parser.add_argument(
        "--allow-private-network",
        action="store_true",
        help="let the browser load loopback and private addresses",
    )
    parser.add_argument(
        "--search-dir", metavar="DIR", help="offline search over the HTML/Markdown files in DIR"
    )
    parser.add_argument(
        "--search-base-url",
        metavar="URL",
        default="",
        help="the URL where --search-dir is served (results link there)",
    )
    parser.add_argument("--searxng", metavar="URL", help="search with this SearXNG instance")
    parser.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="SERVER",
        help="an MCP server's tools (repeatable): 'stdio:COMMAND ARGS...' or "
        "http://HOST:PORT/mcp (needs harmony-agent[mcp])",
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="record the run as OpenTelemetry spans, exported with the OTEL_EXPORTER_OTLP_* "
        "settings (to stderr as JSON when no endpoint is set)",
    )
    parser.add_argument("--instructions", help="developer instructions")
    parser.add_argument(
        "--effort",
        choices=["low", "medium", "high"],
        default="medium",
        help="reasoning effort (default medium)",
    )
    parser.add_argument("--max-turns", type=int, default=30, help="model turns before giving up")
    parser.add_argument("--max-tokens", type=int, default=8192, help="sampling limit per turn")
    parser.add_argument("--temperature", type=float, help="sampling temperature (engine default)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON event per line on stdout"
    )
    parser.add_argument(
        "--hide-reasoning", action="store_true", help="do not show the chain of thought"
    )
    parser.add_argument(
        "--price-input", type=float, default=0.07, help="$ per million input tokens (default 0.07)"
    )
    parser.add_argument(
        "--price-cached",
        type=float,
        default=0.04,
        help="$ per million cached input tokens (default 0.04)",
    )
    parser.add_argument(
        "--price-output",
        type=float,
        default=0.30,
        help="$ per million output tokens (default 0.30)",
    )


def build_parser() -> argparse.ArgumentParser:
    # Long but flat: one sub-command after the other, as `--help` lists them.
    parser = argparse.ArgumentParser(
        prog="harmony-agent",
        description="Run gpt-oss agents: the Harmony loop with function, browser and python tools.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser(
        "run",
        help="run one task to its final answer",
        description="Run TASK to its final answer. The answer goes to stdout; reasoning, tool "
        "calls and usage to stderr (or JSON events on stdout with --json).",
    )
    run.add_argument("task", help="what the agent should do")
    _agent_options(run)
    run.add_argument(
        "--trace",
        metavar="FILE",
        help="write the run to FILE as JSON lines (resume, replay, trace view)",
    )
    run.add_argument(
        "--output-schema",
        metavar="SCHEMA",
        help="answer as JSON matching SCHEMA (a .json schema file, or MODULE:TYPE such as a "
        "pydantic model); the validated JSON goes to stdout",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="overwrite the --trace FILE if it already holds a run (refused otherwise)",
    )

    chat = sub.add_parser(
        "chat",
        help="a multi-turn conversation in the terminal",
        description="Chat with the agent: one line per message, an empty line or EOF ends. "
        "Earlier reasoning is dropped between your messages, as Harmony prescribes.",
    )
    _agent_options(chat)

    resume = sub.add_parser(
        "resume",
        help="continue a run that stopped, from its last complete step",
        description="Continue the run recorded in TRACE (after a crash, Ctrl-C or an engine "
        "failure) from its last complete step, appending to the same trace. Give the same "
        "--tools as the original run.",
    )
    resume.add_argument("trace", metavar="TRACE", help="the trace file of the run")
    _agent_options(resume)

    replay = sub.add_parser(
        "replay",
        help="re-run a trace's model outputs through the current tools",
        description="Play back the model outputs recorded in TRACE, turn by turn, running the "
        "current tools on them: a deterministic re-run. Reports tool outputs that changed.",
    )
    replay.add_argument("trace", metavar="TRACE", help="the trace file of the run")
    _agent_options(replay, engine=False)

    trace = sub.add_parser(
        "trace", help="work with trace files", description="Work with trace files."
    )
    trace_sub = trace.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", required=True)
    view = trace_sub.add_parser(
        "view",
        help="render a trace as one self-contained HTML page",
        description="Render TRACE as a self-contained HTML page: turns, reasoning, tool calls, "
        "results, durations, tokens and cached ratio, errors highlighted.",
    )
    view.add_argument("trace", metavar="TRACE", help="the trace file")
    view.add_argument(
        "-o", "--output", metavar="FILE", help="where to write the page (default: TRACE with .html)"
    )
    return parser


def builtin_tools(args: argparse.Namespace) -> list[Toolset]:
    """The browser and python tools the flags ask for."""
    tools: list[Toolset] = []
    if args.browser:
        from harmony_agent.tools.browser import BrowserTool, LocalSearch, SearxngSearch

        search: LocalSearch | SearxngSearch | None = None
        if args.search_dir:
            try:
                search = LocalSearch(args.search_dir, args.search_base_url)
            except FileNotFoundError as exc:
                raise ConfigurationError(f"--search-dir: {exc}") from None
        elif args.searxng:
            search = SearxngSearch(args.searxng)
        tools.append(
            BrowserTool(
                search=search,
                allow_domains=args.allow_domain,
                allow_private_network=args.allow_private_network,
            )
        )
    if args.python:
        from harmony_agent.tools.python import PythonTool

        tools.append(PythonTool())
    return tools


def mcp_servers(specs: Sequence[str]) -> list[Toolset]:
    """``--mcp`` values → MCP toolsets: ``stdio:COMMAND ARGS...`` or an http(s) URL."""
    servers: list[Toolset] = []
    for spec in specs:
        if spec.startswith("stdio:"):
            from harmony_agent.tools.mcp import MCPServerStdio

            words = shlex.split(spec[len("stdio:") :])
            if not words:
                raise ConfigurationError(f"--mcp {spec!r}: name the command, e.g. 'stdio:npx srv'")
            servers.append(MCPServerStdio(words[0], args=words[1:]))
        elif spec.startswith(("http://", "https://")):
            from harmony_agent.tools.mcp import MCPServerStreamableHTTP

            servers.append(MCPServerStreamableHTTP(spec))
        else:
            raise ConfigurationError(
                f"--mcp {spec!r}: expected 'stdio:COMMAND ARGS...' or http://HOST:PORT/mcp"
            )
    return servers


def _tracer_provider(args: argparse.Namespace) -> Any:
    if not getattr(args, "otel", False):
        return None
    from ._otel import cli_tracer_provider

    return cli_tracer_provider()


def _agent(args: argparse.Namespace, engine: Engine) -> Agent:
    return Agent(
        args.instructions,
        tools=[*builtin_tools(args), *load_tools(args.tools), *mcp_servers(args.mcp)],
        tracer_provider=_tracer_provider(args),
        engine=engine,
        reasoning_effort=args.effort,
        max_turns=args.max_turns,
        max_tokens_per_turn=args.max_tokens,
        temperature=args.temperature,
    )


def _view(args: argparse.Namespace, err: Console) -> EventView:
    return EventView(
        err,
        show_reasoning=not args.hide_reasoning,
        prices=Prices(args.price_input, args.price_cached, args.price_output),
    )


async def _drive(
    events: AsyncGenerator[Event, None],
    args: argparse.Namespace,
    out: Console,
    view: EventView,
    *,
    structured: bool = False,
) -> RunFinished | None:
    """Show a run's events; returns its RunFinished event (None if it did not finish)."""
    finished = None
    try:
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                if args.json:
                    out.file.write(event_to_json(event) + "\n")
                    out.file.flush()
                else:
                    view.handle(event)
                if event.type == "run_finished":
                    finished = event
    finally:
        view.stop()
    if finished is not None and not args.json:
        if structured:
            print_output(out, finished.output)
        else:
            view.answer(out, finished.final_text)
    return finished


async def _cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    output_type = await anyio.to_thread.run_sync(load_output_type, args.output_schema)
    engine = make_engine(args.engine, model=args.model, api_key_env=args.api_key_env)
    async with engine:
        agent = _agent(args, engine)
        trace = None
        if args.trace:
            from .trace import TraceWriter

            trace = TraceWriter(args.trace, overwrite=args.force)
        events = agent.stream(args.task, trace=trace, output_type=output_type)
        await _drive(events, args, out, _view(args, err), structured=output_type is not None)
    return 0


async def _cmd_chat(args: argparse.Namespace, out: Console, err: Console) -> int:
    engine = make_engine(args.engine, model=args.model, api_key_env=args.api_key_env)
    async with engine:
        agent = _agent(args, engine)
        async with agent:  # one connection per MCP server for the whole chat
            return await _chat_loop(agent, args, out, err)


async def _chat_loop(agent: Any, args: argparse.Namespace, out: Console, err: Console) -> int:
    history = None
    while True:
        if sys.stdin.isatty():
            err.print("[bold green]you>[/] ", end="")
        line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        message = line.strip()
        if not message or message in {"exit", "quit"}:
            return 0
        view = _view(args, err)

        def show(event: Any, view: EventView = view) -> None:
            if args.json:
                out.file.write(event_to_json(event) + "\n")
                out.file.flush()
            else:
                view.handle(event)

        try:
            history = await agent.run(message, history=history, on_event=show)
        finally:
            view.stop()
        if not args.json:
            view.answer(out, history.final_text)


async def _cmd_resume(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .trace import load_trace

    state = load_trace(args.trace).resume_state()
    engine = make_engine(args.engine, model=args.model, api_key_env=args.api_key_env)
    async with engine:
        agent = _agent(args, engine)
        if not args.json:
            err.print(
                f"[dim]resuming run {state.run_id} at turn {state.next_turn} "
                f"({len(state.tool_calls)} tool calls done)[/]"
            )
        await _drive(agent.resume_stream(state, trace=args.trace), args, out, _view(args, err))
    return 0


async def _cmd_replay(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .replay import Replay

    replay = Replay(args.trace)
    agent = _agent(args, replay.engine)
    await _drive(replay.stream(agent), args, out, _view(args, err))
    if not args.json:
        err.print(
            f"[dim]replayed {len(replay.replayed)} tool calls; {len(replay.changes)} outputs "
            "differ from the trace[/]"
        )
    return 0


async def _cmd_trace(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .report import render_report
    from .trace import load_trace

    trace = load_trace(args.trace)
    target = Path(args.output) if args.output else Path(args.trace).with_suffix(".html")
    page = render_report(trace)
    await anyio.Path(target).write_text(page, encoding="utf-8")
    out.file.write(f"{target}\n")
    return 0


_COMMANDS = {
    "run": _cmd_run,
    "chat": _cmd_chat,
    "resume": _cmd_resume,
    "replay": _cmd_replay,
    "trace": _cmd_trace,
}


Command = Callable[[argparse.Namespace, Console, Console], Awaitable[int]]


async def _interruptible(
    command: Command, args: argparse.Namespace, out: Console, err: Console
) -> int:
    """Run a command; Ctrl-C (or SIGTERM) cancels it the anyio way, so that whatever it is
    waiting on — the engine, a tool in a worker thread, stdin — lets go at once and every run
    closes its resources (browser contexts, sandboxes, trace) before the process exits."""
    if threading.current_thread() is not threading.main_thread():
        return await command(args, out, err)  # signals can only be handled on the main thread
    interrupted = False
    code = 130
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupted = True
                    tg.cancel_scope.cancel()
                    return

        async def body() -> None:
            nonlocal code, error
            try:
                code = await command(args, out, err)
            except Exception as exc:  # kept whole, not wrapped in an exception group
                error = exc
            finally:
                tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(body)
    if interrupted:
        raise KeyboardInterrupt
    if error is not None:
        raise error
    return code


def _exit_now_if_threads_linger(code: int) -> int:
    """A sync tool cut off by Ctrl-C may still be running in its worker thread, which
    Python would wait for at exit: flush and leave without it."""
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Console(file=sys.stdout, soft_wrap=True)
    err = Console(file=sys.stderr, soft_wrap=True)
    try:
        return anyio.run(_interruptible, _COMMANDS[args.command], args, out, err)
    except ConfigurationError as exc:
        print(f"harmony-agent: {_with_flags(exc)}", file=sys.stderr)
        return 2
    except HarmonyAgentError as exc:
        print(
            f"harmony-agent: {type(exc).__name__}: {_with_flags(exc, first_line=True)}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            "harmony-agent: interrupted; what completed is in the trace, if one was written",
            file=sys.stderr,
        )
        return _exit_now_if_threads_linger(130)


if __name__ == "__main__":
    sys.exit(main())
