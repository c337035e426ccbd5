"""What the batch runner is made of: tasks and their settings, the results file, one task's
run, the in-process runner. :mod:`harmony_agent.batch` (the public API), the worker processes
(``_batch_procs``) and the Ray actors (``_batch_ray``) all import it, and it imports none of
them."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
from harmony_agent.engine.base import Chunk, Engine, GenerationRequest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigurationError

RESULTS_FORMAT = "harmony-agent-batch"
RESULTS_VERSION = 1

AgentFactory = Callable[[], Any]  # () -> Agent


class TaskSettings(BaseModel):
    """Per-task settings; ``None`` keeps the agent's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instructions: str | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    max_turns: int | None = Field(default=None, ge=1)
    max_tokens_per_turn: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    #: the LoRA adapter the task samples with (the engine must serve it)
    adapter: str | None = Field(default=None, min_length=1)


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1)
    id: str | None = Field(default=None, min_length=1)
    settings: TaskSettings = TaskSettings()


@dataclass(frozen=True)
class BatchTask:
    """One task of a batch."""

    id: str
    task: str
    settings: TaskSettings = field(default_factory=TaskSettings)
    line: int = 0


@dataclass(frozen=True)
class BadLine:
    """A line of the tasks file that could not be used, and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def _digest(task: str, settings: TaskSettings) -> str:
    text = json.dumps([task, settings.model_dump(exclude_none=True)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _from_text(text: str, line: int) -> BatchTask:
    try:
        parsed = _Line.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(
            f"{problems} (expected a JSON object like "
            '{"task": "...", "id": "...", "settings": {"max_turns": 5}})'
        ) from None
    return BatchTask(
        parsed.id or _digest(parsed.task, parsed.settings), parsed.task, parsed.settings, line
    )


def read_tasks(path: str | Path) -> tuple[list[BatchTask], list[BadLine]]:
    """The tasks of a JSON-lines file, and its lines that are not tasks (blank lines and
    lines starting with ``#`` are skipped). Two tasks with one id: the second is a bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigurationError(f"the tasks file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the tasks file {path}: {exc}") from None
    tasks: list[BatchTask] = []
    bad: list[BadLine] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            task = _from_text(text, number)
        except ValueError as exc:
            bad.append(BadLine(number, str(exc)))
            continue
        if task.id in seen:
            bad.append(
                BadLine(number, f"the id {task.id!r} is already used on line {seen[task.id]}")
            )
            continue
        seen[task.id] = number
        tasks.append(task)
    return tasks, bad


def as_tasks(tasks: Iterable[BatchTask | str | dict[str, Any]]) -> list[BatchTask]:
    """Tasks given in code: strings, dicts shaped like a tasks-file line, or BatchTasks."""
    out: list[BatchTask] = []
    for i, item in enumerate(tasks, start=1):
        if isinstance(item, BatchTask):
            out.append(item)
        elif isinstance(item, str):
            out.append(_from_text(json.dumps({"task": item}), i))
        elif isinstance(item, dict):
            try:
                out.append(_from_text(json.dumps(item), i))
            except ValueError as exc:
                raise ConfigurationError(f"task {i}: {exc}") from None
        else:
            raise ConfigurationError(f"task {i}: expected a string or a dict, got {item!r:.80}")
    ids = [t.id for t in out]
    if len(set(ids)) != len(ids):
        raise ConfigurationError("two tasks have the same id; give each task its own id")
    return out


def fingerprint(tasks: Sequence[BatchTask]) -> str:
    """What names a batch: a digest of its tasks (ids, texts, settings), in order."""
    h = hashlib.sha256()
    for t in tasks:
        h.update(json.dumps([t.id, t.task, t.settings.model_dump(exclude_none=True)]).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


# --- the results file ----------------------------------------------------------------------


class ResultsFile:
    """The results of one batch, appended as they come (fsynced), read back on a rerun."""

    def __init__(self, path: str | Path, batch: str, tasks_name: str = "") -> None:
        self.path = Path(path)
        self.batch = batch
        self.tasks_name = tasks_name
        self.done: dict[str, dict[str, Any]] = {}  # id → its last record

    def open(self) -> None:
        """Read what a previous run of this batch wrote (refusing another batch's file),
        cut a half-written last line, and write the header to a new file."""
        if self.path.exists() and self.path.stat().st_size > 0:
            raw = self.path.read_bytes()
            end = raw.rfind(b"\n") + 1
            if end < len(raw):  # the process died mid-line: that record never finished
                with self.path.open("r+b") as f:
                    f.truncate(end)
            lines = raw[:end].decode("utf-8", errors="replace").splitlines()
            header = _json_or_none(lines[0]) if lines else None
            if not header or header.get("format") != RESULTS_FORMAT:
                raise ConfigurationError(
                    f"{self.path} is not a harmony-agent results file; choose another output "
                    "file (-o) or move this one away"
                )
            if header.get("batch") != self.batch:
                raise ConfigurationError(
                    f"{self.path} holds the results of another batch (its tasks were "
                    f"{header.get('tasks', '?')}, batch {header.get('batch')}; these tasks are "
                    f"batch {self.batch}); choose another output file (-o) or delete it to "
                    "start over"
                )
            for text in lines[1:]:
                record = _json_or_none(text)
                if record and record.get("record") == "result" and "id" in record:
                    self.done[record["id"]] = record
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._append(
            [{"record": "header", "format": RESULTS_FORMAT, "version": RESULTS_VERSION,
              "batch": self.batch, "tasks": self.tasks_name,
              "time": time.time()}]
        )  # fmt: skip

    def _append(self, records: list[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())

    async def write(self, record: dict[str, Any]) -> bool:
        """Append one result (off the event loop); False when the task already has one
        (a task retried elsewhere after its worker died is written once)."""
        if record["id"] in self.done and self.done[record["id"]].get("ok"):
            return False
        self.done[record["id"]] = record
        await anyio.to_thread.run_sync(self._append, [record])
        return True


def _json_or_none(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# --- running tasks ---------------------------------------------------------------------------


class _Session(Engine):
    """The engine a task's agent sees: the shared engine, with the task's id as the session
    id of every request (affinity to one replica, across the task's turns and reruns).
    Closing it leaves the shared engine open."""

    def __init__(self, engine: Engine, session_id: str) -> None:
        self._engine = engine
        self._session_id = session_id

    @property  # type: ignore[override]
    def context_window(self) -> int | None:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self._engine.context_window

    def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        # the shared engine's own generator, not one of ours around it: no extra hop per chunk
        return self._engine.generate(dataclasses.replace(request, session_id=self._session_id))


def agent_for(agent: Any, task: BatchTask, session_prefix: str = "") -> Any:
    """``agent`` with the task's settings and session id; tools and engine stay shared."""
    s = task.settings
    clone = copy.copy(agent)
    for name in ("max_turns", "max_tokens_per_turn", "temperature", "top_p", "seed", "adapter"):
        value = getattr(s, name)
        if value is not None:
            setattr(clone, name, value)
    if s.reasoning_effort is not None:
        clone.settings = dataclasses.replace(agent.settings, reasoning_effort=s.reasoning_effort)
        clone._prefix = None  # the system message changed: render it again
    if s.instructions is not None:
        clone.instructions = s.instructions
        clone._prefix = None
    clone.engine = _Session(agent.engine, f"{session_prefix}{task.id}")
    return clone


async def run_one(
    agent: Any, task: BatchTask, *, traces_dir: Path | None = None, session_prefix: str = ""
) -> dict[str, Any]:
    """Run one task; its result record (an error is recorded, never raised)."""
    started = time.perf_counter()
    record: dict[str, Any] = {"record": "result", "id": task.id, "line": task.line}
    trace = traces_dir / f"{task.id}.jsonl" if traces_dir is not None else None
    try:
        result = await agent_for(agent, task, session_prefix).run(task.task, trace=trace)
    except Exception as exc:  # a task's failure is its record, never the batch's end
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    else:
        usage = result.usage
        record.update(
            ok=True,
            answer=result.final_text,
            run_id=result.run_id,
            turns=usage.turns,
            tool_calls=len(result.tool_calls),
            prompt_tokens=usage.prompt_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens if usage.cache_reported else None,
            output_tokens=usage.output_tokens,
            truncated=result.truncated,
        )
    record["duration_s"] = round(time.perf_counter() - started, 3)
    record["worker"] = os.getpid()
    if trace is not None:
        record["trace"] = str(trace)
    return record


def loop_options() -> dict[str, Any]:
    """anyio backend options: uvloop when it is installed (cheaper per streamed event)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


async def _from_list(tasks: Sequence[BatchTask]) -> AsyncIterator[BatchTask]:
    for task in tasks:
        yield task


async def run_in_process(
    tasks: Sequence[BatchTask] | AsyncIterator[BatchTask],
    agent: Any,
    record: Callable[[dict[str, Any]], Any],
    concurrency: int,
    traces_dir: Path | None,
    on_start: Callable[[BatchTask], Any] | None = None,
) -> None:
    """Run ``tasks`` on one agent, ``concurrency`` at once, handing each result to
    ``record``; the feed waits while every slot is busy (backpressure)."""
    source = _from_list(tasks) if isinstance(tasks, Sequence) else tasks
    send, receive = anyio.create_memory_object_stream[BatchTask](0)

    async def feed() -> None:
        async with send:
            async for task in source:
                await send.send(task)

    async def work(tasks_in: Any) -> None:
        async with tasks_in:
            async for task in tasks_in:
                if on_start is not None:
                    await on_start(task)
                await record(await run_one(agent, task, traces_dir=traces_dir))

    async with anyio.create_task_group() as tg:
        tg.start_soon(feed)
        with receive:
            for _ in range(concurrency):
                tg.start_soon(work, receive.clone())
