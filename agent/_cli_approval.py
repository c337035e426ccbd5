"""The CLI's approval: ``--approve ask`` (y/n in the terminal), ``all`` and ``none`` (pause,
keep the trace, say how to resume), and ``resume``'s ``--approve`` / ``--reject``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import anyio.to_thread
from rich.console import Console

from ._hooks import Approver, Decision
from .agent import RunStream
from .errors import ConfigurationError
from .events import RunPaused
from .result import ToolCallRequest

__all__ = ["EXIT_PAUSED", "approver_for", "decisions_for", "paused", "trace_for_pause"]

#: exit code of a run that paused, waiting for approval of a tool call
EXIT_PAUSED = 3


def _approve_all(ctx: Any, call: ToolCallRequest) -> Decision:
    return True


def _ask_in_terminal(err: Console) -> Approver:
    """An approver that shows each call and asks y/n on the terminal (stderr and stdin)."""

    def ask(call: ToolCallRequest) -> Decision:
        shown = call.arguments if call.arguments is not None else call.raw_arguments
        text = shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False, indent=2)
        err.print(f"[bold yellow]approve[/] {call.recipient} [dim](call {call.call_id})[/]")
        err.print(text, markup=False, highlight=False)
        while True:
            err.print("run it? [y]es / [n]o / or type a reason to decline: ", end="", markup=False)
            line = sys.stdin.readline()
            if not line:  # EOF: nobody is there to approve
                return "no answer (end of input)"
            answer = line.strip()
            if answer.lower() in ("y", "yes"):
                return True
            if answer.lower() in ("n", "no"):
                return False
            if answer:
                return answer

    async def approver(ctx: Any, call: ToolCallRequest) -> Decision:
        return await anyio.to_thread.run_sync(ask, call, abandon_on_cancel=True)

    return approver


def approver_for(args: argparse.Namespace, err: Console) -> Approver | None:
    """How calls that need approval are decided: asked (ask), run (all) or paused (none)."""
    mode = args.approve_mode or "all"
    if mode == "ask":
        if not sys.stdin.isatty():
            raise ConfigurationError(
                "--approve ask needs a terminal to ask in (stdin is not one); use --approve "
                "none to pause at the first call and resume with `harmony-agent resume`"
            )
        return _ask_in_terminal(err)
    return _approve_all if mode == "all" else None


def trace_for_pause(args: argparse.Namespace, err: Console) -> None:
    """A paused run must be written somewhere to be resumed: a trace by default."""
    if args.approve_mode == "none" and not args.trace:
        args.trace = f"harmony-agent-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        err.print(f"[dim]writing the run to {args.trace} (--approve none pauses it)[/]")


def paused(args: argparse.Namespace, err: Console, event: RunPaused, stream: RunStream) -> int:
    err.print(f"[bold yellow]paused[/]: waiting for approval; the run is in {args.trace}")
    for call in stream.result.interruptions:
        shown = call.arguments if call.arguments is not None else call.raw_arguments
        arguments = shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False)
        err.print(f"  call {call.call_id}: {call.recipient} {arguments}", markup=False)
        err.print(
            f"  resume: harmony-agent resume {args.trace} --approve {call.call_id}"
            f"   (or --reject {call.call_id}:REASON), with the same --engine and --tools",
            markup=False,
            highlight=False,
        )
    return EXIT_PAUSED


def decisions_for(args: argparse.Namespace, pending: list[ToolCallRequest]) -> dict[str, Decision]:
    """--approve / --reject as ``Agent.resume``'s decisions, checked against the pending calls."""
    decisions: dict[str, Decision] = dict.fromkeys(args.approve_ids, True)
    for item in args.reject:
        call_id, _, reason = item.partition(":")
        decisions[call_id] = reason or False
    waiting = ", ".join(f"{p.call_id} ({p.recipient} {p.raw_arguments})" for p in pending)
    if pending and not decisions:
        first = pending[0].call_id
        raise ConfigurationError(
            f"the run is paused, waiting for approval of {waiting}: pass --approve {first} "
            f"or --reject {first}[:REASON]"
        )
    if decisions and not pending:
        raise ConfigurationError(
            "the run is not waiting for approval of any call; drop --approve/--reject"
        )
    unknown = sorted(set(decisions) - {p.call_id for p in pending})
    if unknown:
        raise ConfigurationError(
            f"--approve/--reject name {', '.join(unknown)}, which the run is not waiting on; "
            f"it waits on {waiting}"
        )
    return decisions
