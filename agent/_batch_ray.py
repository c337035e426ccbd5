"""A batch on Ray: one actor per worker holds its agent (browser, sandboxes, engine client)
and runs up to ``concurrency`` tasks at once on its event loop (an async actor).

The driver keeps at most ``concurrency`` tasks in flight per live actor (backpressure: the
rest wait here, not in Ray's queues), takes each result as it finishes and hands it to the
same writer as the other runners. An actor that dies mid-task is replaced and its tasks go
to the live actors; each task is tried at most ``MAX_TRIES`` times, then recorded as
failed; the results file writes one result per task.

Needs the ``ray`` extra: ``pip install 'harmony-agent[ray]'``.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ._batch_core import AgentFactory, BatchTask, run_one
from .errors import ConfigurationError

__all__ = ["MAX_TRIES", "run_on_ray"]

MAX_TRIES = 3
_WAIT_S = 0.5  # how long one ray.wait blocks a worker thread before looking up again
_PROBE_S = 5.0  # how long an address may take to accept a connection


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            "running a batch on Ray needs Ray: pip install 'harmony-agent[ray]'"
        ) from None
    return ray


def _probe(address: str) -> None:
    """Fail fast, with the reason, when nothing listens at ``address`` (``ray.init`` would
    retry for minutes)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(
            f"the Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, or auto)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_S):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"the Ray cluster at {address} does not answer ({exc}); start it with "
            "`ray start --head`, or check the address (HOST:6379 for the head node, "
            "ray://HOST:10001 for Ray Client)"
        ) from None


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address`` or start a local Ray; True when this call started it."""
    if ray.is_initialized():
        return False
    if address:
        _probe(address)
        try:
            ray.init(address=address, log_to_driver=False)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError
            raise ConfigurationError(
                f"cannot join the Ray cluster at {address}: {type(exc).__name__}: {exc}"
            ) from None
        return True
    # a local Ray for this batch, on loopback only; its workers import what this process can
    ray.init(
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}},
    )
    return True


class _Worker:
    """The actor: an agent built once, tasks run on its event loop."""

    def __init__(self, make_agent: AgentFactory, traces_dir: Path | None) -> None:
        self.make_agent = make_agent
        self.traces_dir = traces_dir
        self.agent: Any = None

    async def run(self, task: BatchTask) -> dict[str, Any]:
        if self.agent is None:  # built on the actor's own loop, where its tools will run
            self.agent = self.make_agent()
        return await run_one(self.agent, task, traces_dir=self.traces_dir)

    def pid(self) -> int:
        return os.getpid()


async def run_on_ray(
    todo: Sequence[BatchTask],
    make_agent: AgentFactory,
    record: Callable[[dict[str, Any]], Any],
    workers: int,
    concurrency: int,
    traces_dir: Path | None,
    address: str | None,
) -> None:
    """Run ``todo`` on ``workers`` Ray actors; ``record`` gets every result here, once."""
    ray = _import_ray()
    started = await anyio.to_thread.run_sync(_connect, ray, address)
    remote = ray.remote(_Worker).options(max_concurrency=concurrency, num_cpus=1)
    actors: list[Any] = []
    try:

        def spawn() -> Any:
            actor = remote.remote(make_agent, traces_dir)
            actors.append(actor)
            return actor

        for _ in range(workers):
            spawn()
        pending = list(reversed(todo))  # popped from the end: in order
        tries: dict[str, int] = {}
        flying: dict[Any, tuple[BatchTask, Any]] = {}  # ref → (task, actor)
        load: dict[Any, int] = dict.fromkeys(actors, 0)

        def submit() -> None:
            while pending and load:
                actor = min(load, key=load.__getitem__)
                if load[actor] >= concurrency:
                    return  # every actor is busy: the rest wait here (backpressure)
                task = pending.pop()
                tries[task.id] = tries.get(task.id, 0) + 1
                flying[actor.run.remote(task)] = (task, actor)
                load[actor] += 1

        submit()
        while flying:
            ready, _ = await anyio.to_thread.run_sync(
                lambda: ray.wait(list(flying), num_returns=1, timeout=_WAIT_S),
                abandon_on_cancel=True,
            )
            for ref in ready:
                task, actor = flying.pop(ref)
                if actor in load:
                    load[actor] -= 1
                try:
                    result = await anyio.to_thread.run_sync(ray.get, ref)
                except ray.exceptions.RayActorError as exc:
                    if actor in load:  # the actor died: replace it once, for all its tasks
                        del load[actor]
                        ray.kill(actor, no_restart=True)
                        load[spawn()] = 0
                    if tries[task.id] < MAX_TRIES:
                        pending.append(task)  # goes to another actor
                    else:
                        await record(_died(task, exc))
                    continue
                except ray.exceptions.RayError as exc:
                    await record(_died(task, exc))
                    continue
                await record(result)
            submit()
    finally:
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        if started:
            await anyio.to_thread.run_sync(ray.shutdown)


def _died(task: BatchTask, exc: BaseException) -> dict[str, Any]:
    return {
        "record": "result",
        "id": task.id,
        "line": task.line,
        "ok": False,
        "error": f"WorkerDied: the Ray worker running this task failed {MAX_TRIES} times "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
    }
