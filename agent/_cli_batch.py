"""The CLI's ``batch`` and ``export`` commands."""

from __future__ import annotations

import argparse
import functools
import json
from typing import Any

import anyio
import anyio.to_thread
from rich.console import Console

from ._cli_commands import _agent
from ._cli_load import make_engine

__all__ = ["batch_agent", "cmd_batch", "cmd_export"]


def batch_agent(args: argparse.Namespace) -> Any:
    """The agent of one batch worker (a module-level function: worker processes and Ray
    actors build theirs with it from the parsed options)."""
    engine = make_engine(args.engine, model=args.model, api_key_env=args.api_key_env)
    return _agent(args, engine)


async def cmd_batch(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .batch import run_batch

    summary = await run_batch(
        args.tasks,
        functools.partial(batch_agent, args),
        args.output,
        concurrency=args.concurrency,
        workers=args.workers,
        traces_dir=args.traces,
        retry_failed=args.retry_failed,
        progress=not args.json,
        ray_address=False if args.ray is None else (args.ray or None),
    )
    for bad in summary.bad_lines:
        err.print(f"[yellow]{args.tasks}: {bad} (skipped)[/]", highlight=False)
    if args.json:
        record = {
            "total": summary.total,
            "ok": summary.ok,
            "failed": summary.failed,
            "skipped": summary.skipped,
            "bad_lines": [{"line": b.line, "reason": b.reason} for b in summary.bad_lines],
            "seconds": round(summary.seconds, 3),
        }
        out.file.write(json.dumps(record) + "\n")
    else:
        err.print(
            f"{summary.ok} answered, {summary.failed} failed, {summary.skipped} already done, "
            f"{len(summary.bad_lines)} bad lines in {summary.seconds:.1f} s "
            f"({summary.tasks_per_s:.2f} tasks/s) -> {args.output}",
            highlight=False,
        )
    return 0 if summary.failed == 0 and not summary.bad_lines else 1


async def cmd_export(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .export import export

    report = await anyio.to_thread.run_sync(
        lambda: export(
            args.traces, args.format, args.output, include_unfinished=args.include_unfinished
        )
    )
    for reason in report.left_out:
        err.print(f"[yellow]left out: {reason}[/]", highlight=False)
    err.print(
        f"{report.written} runs -> {args.output} ({len(report.left_out)} left out)",
        highlight=False,
    )
    return 0 if not report.left_out else 1
