"""Many agent runs: a tasks file in, a results file out, resumable, over processes or Ray.

A tasks file is JSON lines, one task each::

    {"task": "What is the capital of Peru?"}
    {"id": "q2", "task": "Summarise example.com", "settings": {"max_turns": 8, "seed": 1}}

``task`` is required; ``id`` defaults to a digest of the task and its settings (stable across
reruns); ``settings`` may set ``instructions``, ``reasoning_effort``, ``max_turns``,
``max_tokens_per_turn``, ``temperature``, ``top_p``, ``seed`` and ``adapter`` (a LoRA adapter's
name) for that task. A bad line is reported with its number and skipped; the rest runs.

The results file is JSON lines too: a header naming the batch (a digest of the tasks file),
then one record per task as it finishes, flushed and fsynced, so a crash or Ctrl-C loses only
the runs in flight. Running the same batch again skips the tasks already in the file; a
results file of another batch is refused. A task that fails is recorded with its error and
never stops the batch.

Each task's requests carry the task id as their session id, so a router with session
affinity keeps all turns of a task (and its reruns) on one replica's prefix cache.

Example::

    import tempfile
    from pathlib import Path

    from harmony_agent import Agent
    from harmony_agent.batch import run_batch_sync
    from harmony_agent.engine import ScriptedEngine

    def make_agent():
        return Agent(engine=ScriptedEngine(["<|channel|>final<|message|>Hi<|return|>"] * 2))

    results = Path(tempfile.mkdtemp()) / "results.jsonl"
    summary = run_batch_sync(["hello", "again"], make_agent, results)
    assert (summary.ok, summary.failed) == (2, 0)
    again = run_batch_sync(["hello", "again"], make_agent, results)  # all done: skipped
    assert again.skipped == 2

Processes (``workers=N``): each worker process builds its own agent with ``make_agent`` (so
its own browser, sandboxes and engine client) and runs up to ``concurrency`` tasks at once;
``make_agent`` must be importable by name (a module-level function, or a
``functools.partial`` of one). Ray: :mod:`harmony_agent._batch_ray`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread

from .errors import ConfigurationError

__all__ = [
    "BadLine",
    "BatchSummary",
    "BatchTask",
    "ResultsFile",
    "TaskSettings",
    "read_tasks",
    "run_batch",
    "run_batch_sync",
]

from ._batch_core import (  # noqa: F401 — re-exported: the batch API and its parts
    RESULTS_FORMAT,
    RESULTS_VERSION,
    AgentFactory,
    BadLine,
    BatchTask,
    ResultsFile,
    TaskSettings,
    agent_for,
    as_tasks,
    fingerprint,
    loop_options,
    read_tasks,
    run_in_process,
    run_one,
)


@dataclass
class BatchSummary:
    """How a batch went."""

    total: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tasks_per_s(self) -> float:
        ran = self.ok + self.failed
        return ran / self.seconds if self.seconds > 0 else 0.0


class _Progress:
    """A rich progress bar on stderr: done, throughput, failures, ETA (or nothing)."""

    def __init__(self, total: int, show: bool) -> None:
        self.failed = 0
        self.started = time.perf_counter()
        self.done = 0
        self._progress = None
        if show:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.2f} tasks/s"),
                TextColumn("[red]{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._bar = self._progress.add_task("batch", total=total, rate=0.0, failed=0)

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if self._progress is not None:
            rate = self.done / max(1e-9, time.perf_counter() - self.started)
            self._progress.update(self._bar, advance=1, rate=rate, failed=self.failed)


async def run_batch(
    tasks: Iterable[BatchTask | str | dict[str, Any]] | str | Path,
    make_agent: AgentFactory,
    output: str | Path,
    *,
    concurrency: int = 16,
    workers: int = 1,
    traces_dir: str | Path | None = None,
    retry_failed: bool = False,
    progress: bool = False,
    ray_address: str | Literal[False] | None = False,
) -> BatchSummary:
    """Run every task not already in ``output``; results appended as they finish.

    ``tasks``: a tasks file (JSON lines) or the tasks themselves. ``make_agent()`` builds the
    agent (once per process). ``concurrency``: runs at once per process. ``workers``: worker
    processes (1: this process). ``traces_dir``: write each run's trace there as
    ``ID.jsonl`` (for ``harmony-agent export``). ``retry_failed``: run the tasks recorded as
    failed again. ``ray_address``: run on Ray (``None``: a local Ray, or the address of a
    cluster); ``workers`` actors then.
    """
    if concurrency < 1 or workers < 1:
        raise ConfigurationError(
            f"concurrency and workers must be at least 1, got {concurrency} and {workers}"
        )
    bad: list[BadLine] = []
    name = ""
    if isinstance(tasks, str | Path):
        name = str(tasks)
        task_list, bad = await anyio.to_thread.run_sync(read_tasks, tasks)
    else:
        task_list = as_tasks(tasks)
    results = ResultsFile(output, fingerprint(task_list), Path(name).name if name else "(in code)")
    await anyio.to_thread.run_sync(results.open)
    todo = [
        t
        for t in task_list
        if t.id not in results.done or (retry_failed and not results.done[t.id].get("ok"))
    ]
    summary = BatchSummary(total=len(task_list), skipped=len(task_list) - len(todo), bad_lines=bad)
    trace_path = Path(traces_dir) if traces_dir is not None else None
    if trace_path is not None:
        trace_path.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with _Progress(len(todo), progress) as bar:

        async def record(result: dict[str, Any]) -> None:
            if await results.write(result):
                bar.advance(result["ok"])
                if result["ok"]:
                    summary.ok += 1
                else:
                    summary.failed += 1

        if ray_address is not False:
            from ._batch_ray import run_on_ray

            await run_on_ray(
                todo, make_agent, record, workers, concurrency, trace_path, ray_address
            )
        elif workers == 1:
            agent = make_agent()
            try:
                await run_in_process(todo, agent, record, concurrency, trace_path)
            finally:
                with anyio.CancelScope(shield=True):
                    await agent.engine.aclose()  # built here for this batch: closed here
        else:
            from ._batch_procs import run_in_processes

            await run_in_processes(todo, make_agent, record, workers, concurrency, trace_path)
    summary.seconds = time.perf_counter() - started
    return summary


def run_batch_sync(*args: Any, **kwargs: Any) -> BatchSummary:
    """:func:`run_batch` for synchronous code (uvloop when it is installed)."""
    return anyio.run(functools.partial(run_batch, *args, **kwargs), backend_options=loop_options())
