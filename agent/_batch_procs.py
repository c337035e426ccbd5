"""A batch over worker processes: each builds its own agent (browser, sandboxes, engine
client) and runs up to ``concurrency`` tasks at once on its own event loop.

The driver feeds tasks through a bounded queue (a worker takes the next one when it has a
free slot: backpressure, and the work spreads by speed, not by count) and writes the results
that come back; it is the only writer of the results file. A worker that dies has its tasks
in flight recorded as failed, with the exit code; ``retry_failed`` runs them again.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ._batch_core import AgentFactory, BatchTask, loop_options, run_in_process

__all__ = ["run_in_processes"]

_POLL_S = 0.2  # how often a blocked queue read looks up (cancellation, dead workers)


def _worker_main(
    make_agent: AgentFactory,
    tasks: Any,
    results: Any,
    concurrency: int,
    traces_dir: Path | None,
) -> None:
    anyio.run(
        _worker, make_agent, tasks, results, concurrency, traces_dir, backend_options=loop_options()
    )


async def _worker(
    make_agent: AgentFactory, tasks: Any, results: Any, concurrency: int, traces_dir: Path | None
) -> None:
    pid = os.getpid()
    agent = make_agent()

    async def incoming() -> AsyncIterator[BatchTask]:
        while True:
            # Read on this (the event loop's) thread, never blocking: a queue read holds the
            # queue's lock, which all workers share, and a worker that dies mid-task (on this
            # thread) must never die holding it, or the other workers wait on it forever.
            try:
                task = tasks.get_nowait()
            except queue.Empty:
                await anyio.sleep(_POLL_S / 4)
                continue
            if task is None:
                return
            yield task

    async def started(task: BatchTask) -> None:
        results.put(("started", pid, task.id))

    async def record(result: dict[str, Any]) -> None:
        results.put(("result", pid, result))

    try:
        await run_in_process(incoming(), agent, record, concurrency, traces_dir, started)
    finally:
        with anyio.CancelScope(shield=True):
            await agent.engine.aclose()
        results.put(("exit", pid, None))


async def run_in_processes(
    todo: Sequence[BatchTask],
    make_agent: AgentFactory,
    record: Callable[[dict[str, Any]], Any],
    workers: int,
    concurrency: int,
    traces_dir: Path | None,
) -> None:
    """Run ``todo`` over ``workers`` processes; ``record`` gets every result here."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    tasks = context.Queue(maxsize=workers * concurrency)
    # Written synchronously by the writer's own thread (no feeder thread that a dying worker
    # could leave holding the shared write lock); this process is its only reader.
    results = context.SimpleQueue()
    procs = [
        context.Process(
            target=_worker_main,
            args=(make_agent, tasks, results, concurrency, traces_dir),
            name=f"harmony-agent-batch-{i}",
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    in_flight: dict[int, dict[str, BatchTask]] = {p.pid: {} for p in procs if p.pid}
    by_id = {t.id: t for t in todo}
    exited: set[int] = set()

    def put(item: BatchTask | None) -> bool:
        """Wait for room in the queue; False when every worker is gone."""
        while True:
            try:
                tasks.put(item, True, _POLL_S)
                return True
            except queue.Full:
                if all(not p.is_alive() for p in procs):
                    return False

    async def feed() -> None:
        for task in todo:
            if not await anyio.to_thread.run_sync(put, task, abandon_on_cancel=True):
                return
        for _ in procs:
            if not await anyio.to_thread.run_sync(put, None, abandon_on_cancel=True):
                return

    async def died(proc: Any) -> None:
        exited.add(proc.pid)
        for task_id in list(in_flight.get(proc.pid, {})):
            await record(
                {
                    "record": "result",
                    "id": task_id,
                    "line": by_id[task_id].line,
                    "ok": False,
                    "error": f"WorkerDied: the worker process {proc.pid} died (exit code "
                    f"{proc.exitcode}) while running this task; rerun with retry_failed",
                    "worker": proc.pid,
                }
            )
        in_flight.pop(proc.pid, None)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            while len(exited) < len(procs):
                try:
                    kind, pid, payload = await anyio.to_thread.run_sync(
                        _next_result, results, abandon_on_cancel=True
                    )
                except queue.Empty:
                    for proc in procs:
                        if proc.pid not in exited and not proc.is_alive():
                            await died(proc)
                    continue
                if kind == "started":
                    in_flight.setdefault(pid, {})[payload] = by_id[payload]
                elif kind == "result":
                    in_flight.get(pid, {}).pop(payload["id"], None)
                    await record(payload)
                else:  # "exit": a clean end
                    exited.add(pid)
            tg.cancel_scope.cancel()  # every worker is gone: nothing left to feed
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            await anyio.to_thread.run_sync(proc.join, 10)


def _next_result(results: Any) -> Any:
    """The next message of ``results`` (a SimpleQueue with this process its only reader);
    ``queue.Empty`` after ``_POLL_S`` without one."""
    deadline = time.monotonic() + _POLL_S
    while results.empty():
        if time.monotonic() >= deadline:
            raise queue.Empty
        time.sleep(0.01)
    return results.get()
