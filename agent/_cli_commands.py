"""The CLI's commands: each builds its agent from the parsed options, drives the run and
shows it (the live view on stderr, the answer on stdout, or JSON events)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from harmony_agent.engine.base import Engine
from rich.console import Console

from ._cli_approval import approver_for, decisions_for, paused, trace_for_pause
from ._cli_load import builtin_tools, import_target, load_tools, make_engine, mcp_servers
from ._console import EventView, Prices, print_replay
from ._hooks import UsageLimits
from .agent import Agent, RunStream
from .errors import ConfigurationError
from .events import Event, RunFinished, RunPaused, event_to_json

__all__ = ["cmd_chat", "cmd_replay", "cmd_resume", "cmd_run", "cmd_trace"]


def _tracer_provider(args: argparse.Namespace) -> Any:
    if not getattr(args, "otel", False):
        return None
    from ._otel import cli_tracer_provider

    return cli_tracer_provider()


def _limits(args: argparse.Namespace) -> UsageLimits:
    return UsageLimits(
        max_tool_calls=args.max_tool_calls,
        max_input_tokens=args.max_input_tokens,
        max_output_tokens=args.max_output_tokens,
        max_total_tokens=args.max_total_tokens,
        max_cost_usd=args.max_cost,
        max_wall_s=args.max_wall,
        price_input=args.price_input,
        price_cached=args.price_cached,
        price_output=args.price_output,
    )


def _agent(args: argparse.Namespace, engine: Engine) -> Agent:
    mode = getattr(args, "approve_mode", None) or "all"
    return Agent(
        args.instructions,
        tools=[*builtin_tools(args), *load_tools(args.tools), *mcp_servers(args.mcp)],
        tracer_provider=_tracer_provider(args),
        engine=engine,
        reasoning_effort=args.effort,
        max_turns=args.max_turns,
        max_tokens_per_turn=args.max_tokens,
        temperature=args.temperature,
        adapter=getattr(args, "adapter", None),
        usage_limits=_limits(args),
        context_window=getattr(args, "context_window", None),
        max_reasoning_tokens=getattr(args, "max_reasoning_tokens", None),
        compaction=False if getattr(args, "no_compaction", False) else None,
        needs_approval=mode != "all",
    )


def _view(
    args: argparse.Namespace, out: Console, err: Console, *, stream_answer: bool = True
) -> EventView:
    return EventView(
        err,
        out=out if stream_answer else None,
        show_reasoning=not args.hide_reasoning,
        prices=Prices(args.price_input, args.price_cached, args.price_output),
    )


async def _drive(
    events: AsyncGenerator[Event, None] | RunStream,
    args: argparse.Namespace,
    out: Console,
    view: EventView,
) -> RunFinished | RunPaused | None:
    """Show a run's events; returns its RunFinished or RunPaused event (None if neither)."""
    finished: RunFinished | RunPaused | None = None
    try:
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                if args.json:
                    out.file.write(event_to_json(event) + "\n")
                    out.file.flush()
                else:
                    view.handle(event)
                if isinstance(event, RunFinished | RunPaused):
                    finished = event
    finally:
        view.stop()
    return finished


async def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    output_type = await anyio.to_thread.run_sync(load_output_type, args.output_schema)
    approver = approver_for(args, err)
    trace_for_pause(args, err)
    engine = make_engine(args.engine, model=args.model, api_key_env=args.api_key_env)
    async with engine:
        agent = _agent(args, engine)
        trace = None
        if args.trace:
            from .trace import TraceWriter

            trace = TraceWriter(args.trace, overwrite=args.force)
        stream = agent.stream(args.task, trace=trace, approver=approver, output_type=output_type)
        # a structured answer is printed once validated (as JSON), not streamed as text
        structured = output_type is not None
        end = await _drive(stream, args, out, _view(args, out, err, stream_answer=not structured))
    if isinstance(end, RunPaused):
        return paused(args, err, end, stream)
    if structured and isinstance(end, RunFinished) and not args.json:
        print_output(out, end.output)
    return 0


async def cmd_chat(args: argparse.Namespace, out: Console, err: Console) -> int:
    approver = approver_for(args, err)
    engine = make_engine(args.engine, model=args.model, api_key_env=args.api_key_env)
    async with engine:
        agent = _agent(args, engine)
        async with agent:  # one connection per MCP server for the whole chat
            return await _chat_loop(agent, args, out, err, approver)


async def _chat_loop(
    agent: Any, args: argparse.Namespace, out: Console, err: Console, approver: Any
) -> int:
    history = None
    while True:
        if sys.stdin.isatty():
            err.print("[bold green]you>[/] ", end="")
        line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        message = line.strip()
        if not message or message in {"exit", "quit"}:
            return 0
        view = _view(args, out, err)

        def show(event: Any, view: EventView = view) -> None:
            if args.json:
                out.file.write(event_to_json(event) + "\n")
                out.file.flush()
            else:
                view.handle(event)

        try:
            history = await agent.run(message, history=history, on_event=show, approver=approver)
        finally:
            view.stop()


async def cmd_resume(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .trace import load_trace

    state = load_trace(args.trace).resume_state()
    decisions = decisions_for(args, state.pending)
    if args.approve_mode is None:  # a run that paused keeps pausing; others run their calls
        args.approve_mode = "none" if state.pending else "all"
    approver = approver_for(args, err)
    engine = make_engine(args.engine, model=args.model, api_key_env=args.api_key_env)
    async with engine:
        agent = _agent(args, engine)
        if not args.json:
            err.print(
                f"[dim]resuming run {state.run_id} at turn {state.next_turn} "
                f"({len(state.tool_calls)} tool calls done)[/]"
            )
        stream = agent.resume_stream(
            state,
            approve=decisions,
            trace=args.trace,
            approver=approver,
            adapter=getattr(args, "adapter", None),
        )
        end = await _drive(stream, args, out, _view(args, out, err))
    if isinstance(end, RunPaused):
        return paused(args, err, end, stream)
    return 0


async def cmd_replay(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .replay import Replay

    replay = Replay(args.trace)
    agent = _agent(args, replay.engine)
    try:
        await _drive(replay.stream(agent), args, out, _view(args, out, err))
    finally:  # what changed up to a failure is the first thing to look at
        outcome = replay.outcome()
        if args.json:
            out.file.write(json.dumps(outcome.to_dict(), ensure_ascii=False) + "\n")
            out.file.flush()
        else:
            print_replay(err, outcome)
    if args.check and outcome.changes:
        err.print(
            f"harmony-agent: replay --check: {len(outcome.changes)} of {len(outcome.replayed)} "
            "tool outputs differ from the trace",
            highlight=False,
            markup=False,
        )
        return 1
    return 0


async def cmd_trace(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .report import render_report
    from .trace import load_trace

    trace = load_trace(args.trace)
    target = Path(args.output) if args.output else Path(args.trace).with_suffix(".html")
    page = render_report(trace)
    await anyio.Path(target).write_text(page, encoding="utf-8")
    out.file.write(f"{target}\n")
    return 0


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
    return import_target(spec, "--output-schema")


def print_output(out: Console, value: Any) -> None:
    """The validated answer on stdout: pretty JSON on a terminal, one line otherwise."""
    if out.is_terminal:
        out.print_json(data=value)
    else:
        out.file.write(json.dumps(value, ensure_ascii=False) + "\n")
        out.file.flush()
