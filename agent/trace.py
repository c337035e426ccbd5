"""Run traces: JSON lines written as the run goes, enough to resume, replay and view it.

One record per line, each a JSON object with a ``record`` kind:

* ``header`` — first line: format name and version, run id, task, the conversation the first
  prompt rendered (harmony message dicts) and that prompt's token ids; ``adapter``, the LoRA
  adapter the run samples with, when it has one.
* ``event`` — every event of the run (``harmony_agent.events``), token ids of each turn in
  its ``turn_finished`` event.
* ``step`` — after each completed tool step: the ids the model sampled, the ids appended
  (tool message + ``<|start|>assistant``), the messages this step added, the tool call, usage.
  A run that pauses for approval writes a step with the call's ids, nothing appended, and the
  ``pending`` call; the resumed run's first step appends its result (no sampled ids).
  A step whose ids the runtime forced (the reasoning budget closed the analysis and opened
  the final channel) has ``"forced": true``: its ``appended_ids`` were not sampled.
* ``compaction`` — the context was compacted (the one deliberate prefix break): the whole
  new prompt's ids and messages, tokens before and after, what was removed. Later steps
  continue from that prompt.
* ``resumed`` — a run went on from the last step (``harmony-agent resume``), with its
  ``adapter`` when it has one.

Records are buffered between steps and written, flushed and fsynced at every step boundary
(turn finished, tool result, run finished, error), so whatever completed survives a crash.
A half-written last line (the process died mid-write) is ignored on load.

One file holds one run (and its resumptions): a new run refuses a path that already holds
another run unless told to overwrite it (``TraceWriter(path, overwrite=True)``, the CLI's
``--force``). Lone UTF-16 surrogates are written as ``\\uXXXX`` escapes and values nested
past :data:`MAX_DEPTH` as a placeholder string, so no model output can break a write.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import anyio.to_thread
from openai_harmony import Message

from ._state import RunState
from .errors import ConfigurationError
from .events import Compacted, Event, event_from_dict, event_to_dict
from .result import RunUsage, ToolCallRecord, ToolCallRequest

__all__ = ["FORMAT", "MAX_DEPTH", "VERSION", "Trace", "TraceError", "TraceWriter", "load_trace"]

FORMAT = "harmony-agent-trace"
VERSION = 1
_FLUSH_ON = frozenset(
    {"turn_finished", "tool_result", "run_finished", "run_paused", "error", "run_started"}
)


class TraceError(ConfigurationError):
    """A trace file is missing, corrupt, or from an incompatible version."""


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return str(value)


#: Values nested deeper than this are written as a placeholder string.
MAX_DEPTH = 200
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _bounded(value: Any, depth: int = 0) -> Any:
    """``value`` with whatever lies deeper than :data:`MAX_DEPTH` replaced by a string."""
    if isinstance(value, dict | list | tuple):
        if depth >= MAX_DEPTH:
            return f"<nested deeper than {MAX_DEPTH} levels: not recorded>"
        if isinstance(value, dict):
            return {str(k): _bounded(v, depth + 1) for k, v in value.items()}
        return [_bounded(v, depth + 1) for v in value]
    return value


def _dump(record: dict[str, Any]) -> str:
    try:
        text = json.dumps(record, ensure_ascii=False, default=_json_default)
    except RecursionError:
        text = json.dumps(_bounded(record), ensure_ascii=False, default=_json_default)
    # A lone surrogate can only sit inside a JSON string; its escape reads back the same.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _shallow(obj: Any) -> dict[str, Any]:
    # not dataclasses.asdict: it deep-copies by recursion, which deep arguments overflow
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


class TraceWriter:
    """Writes a run to ``path``; a resumed run (same run id) continues the same file.

    A path that already holds another run is refused with :class:`TraceError`, unless
    ``overwrite`` is true: then the file is replaced.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self._pending: list[str] = []
        self._messages_written = 0
        self._refused = False  # the file belongs to another run: write nothing to it
        self._calls_written = 0

    def _write_sync(self, lines: list[str], mode: str = "a") -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open(mode, encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise TraceError(f"cannot write trace {self.path}: {exc}") from None

    async def _flush(self, mode: str = "a") -> None:
        lines, self._pending = self._pending, []
        if lines:
            await anyio.to_thread.run_sync(self._write_sync, lines, mode)

    def _holder_sync(self) -> str | None:
        """The run id whose header starts the file; "" for a file that holds something else,
        None when there is no file or it is empty."""
        try:
            with self.path.open("rb") as f:
                first = f.readline(1 << 24)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TraceError(f"cannot read trace {self.path}: {exc}") from None
        if not first.strip():
            return None
        try:
            header = json.loads(first)
        except ValueError:
            return ""
        if not isinstance(header, dict) or header.get("record") != "header":
            return ""
        return str(header.get("run_id", ""))

    async def start(self, state: RunState) -> None:
        holder = await anyio.to_thread.run_sync(self._holder_sync)
        kind = "resumed" if holder is not None and holder == state.run_id else "header"
        mode = "a"
        if kind == "header" and holder is not None:
            if not self.overwrite:
                self._refused = True
                what = f"run {holder}" if holder else "something that is not a trace"
                raise TraceError(
                    f"{self.path} already holds {what}; a trace file holds one run. Write to "
                    "another file, or overwrite this one (--force on the command line, "
                    "TraceWriter(path, overwrite=True) in code)."
                )
            mode = "w"
        self._messages_written = len(state.messages)
        self._calls_written = len(state.tool_calls)
        record: dict[str, Any] = {
            "record": kind,
            "format": FORMAT,
            "version": VERSION,
            "run_id": state.run_id,
            "task": state.task,
            "time": time.time(),
            "next_turn": state.next_turn,
        }
        if state.adapter is not None:
            record["adapter"] = state.adapter
        if kind == "header":
            record["messages"] = [m.to_dict() for m in state.messages]
            record["prompt_ids"] = list(state.prompt_ids)
        self._pending.append(_dump(record))
        await self._flush(mode)

    async def event(self, event: Event) -> None:
        if self._refused:
            return
        self._pending.append(_dump({"record": "event", "event": event_to_dict(event)}))
        if event.type in _FLUSH_ON:
            await self._flush()

    async def step(self, state: RunState, output_ids: list[int], appended_ids: list[int]) -> None:
        if self._refused:
            return
        new = state.messages[self._messages_written :]
        self._messages_written = len(state.messages)
        # a pause step adds no call; its resumed step adds the call
        new_calls = state.tool_calls[self._calls_written :]
        self._calls_written = len(state.tool_calls)
        call = new_calls[-1] if new_calls else None
        self._pending.append(
            _dump(
                {
                    "record": "step",
                    "turn": state.next_turn - 1,
                    "output_ids": list(output_ids),
                    "appended_ids": list(appended_ids),
                    "messages": [m.to_dict() for m in new],
                    "tool_call": _shallow(call) if call is not None else None,
                    "usage": asdict(state.usage),
                    "prompt_len": len(state.prompt_ids),
                    "pending": [p.to_dict() for p in state.pending],
                    "wall_s": state.wall_s,
                }
            )
        )
        await self._flush()

    async def forced(self, state: RunState, output_ids: list[int], forced_ids: list[int]) -> None:
        """A step whose appended ids the runtime forced (not sampled, no tool call)."""
        if self._refused:
            return
        new = state.messages[self._messages_written :]
        self._messages_written = len(state.messages)
        self._pending.append(
            _dump(
                {
                    "record": "step",
                    "turn": state.next_turn - 1,
                    "output_ids": list(output_ids),
                    "appended_ids": list(forced_ids),
                    "forced": True,
                    "messages": [m.to_dict() for m in new],
                    "tool_call": None,
                    "usage": asdict(state.usage),
                    "prompt_len": len(state.prompt_ids),
                }
            )
        )
        await self._flush()

    async def compacted(self, state: RunState, event: Compacted) -> None:
        """The transcript was replaced by its compacted form: record the whole of it."""
        if self._refused:
            return
        self._messages_written = len(state.messages)
        self._pending.append(
            _dump(
                {
                    "record": "compaction",
                    "turn": state.next_turn,
                    "prompt_ids": list(state.prompt_ids),
                    "messages": [m.to_dict() for m in state.messages],
                    "tokens_before": event.tokens_before,
                    "tokens_after": event.tokens_after,
                    "removed": list(event.removed),
                    "usage": asdict(state.usage),
                }
            )
        )
        await self._flush()


@dataclass
class Trace:
    """A loaded trace."""

    path: Path
    header: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: step and compaction records, in order (what resuming replays)
    records: list[dict[str, Any]] = field(default_factory=list)
    resumed: int = 0
    truncated_tail: bool = False
    #: the LoRA adapter the run sampled with last (header, or the latest resumption)
    adapter: str | None = None

    @property
    def run_id(self) -> str:
        return self.header["run_id"]

    @property
    def task(self) -> str:
        return self.header["task"]

    @property
    def finished(self) -> bool:
        return any(e.type == "run_finished" for e in self.events)

    @property
    def turn_outputs(self) -> list[list[int]]:
        """The ids the model sampled in each turn, in order (what a ReplayEngine plays back)."""
        return [list(e.output_ids) for e in self.events if e.type == "turn_finished"]

    def initial_state(self, *, run_id: str | None = None) -> RunState:
        """The run as it stood before its first turn (what a replay starts from)."""
        return RunState(
            run_id=run_id or self.run_id,
            task=self.task,
            messages=[Message.from_dict(m) for m in self.header["messages"]],
            prompt_ids=list(self.header["prompt_ids"]),
            adapter=self.header.get("adapter"),
        )

    def resume_state(self) -> RunState:
        """The run as it stood after its last complete step."""
        if self.finished:
            raise TraceError(
                f"{self.path}: this run already finished with an answer; nothing to resume "
                "(use `harmony-agent replay` to run it again)"
            )
        messages = [Message.from_dict(m) for m in self.header["messages"]]
        prompt = list(self.header["prompt_ids"])
        calls: list[ToolCallRecord] = []
        usage = RunUsage()
        next_turn = 0
        pending: list[ToolCallRequest] = []
        wall_s = 0.0
        for step in self.records:
            if step["record"] == "compaction":
                prompt = list(step["prompt_ids"])
                messages = [Message.from_dict(m) for m in step["messages"]]
                usage = RunUsage(**step["usage"])
                next_turn = step["turn"]
                continue
            prompt += step["output_ids"] + step["appended_ids"]
            if len(prompt) != step["prompt_len"]:
                raise TraceError(
                    f"{self.path}: step of turn {step['turn']} does not continue the previous "
                    "one (token counts disagree); the trace is corrupt"
                )
            messages += [Message.from_dict(m) for m in step["messages"]]
            if step["tool_call"] is not None:
                calls.append(ToolCallRecord(**step["tool_call"]))
            usage = RunUsage(**step["usage"])
            next_turn = step["turn"] + 1
            pending = [ToolCallRequest(**p) for p in step.get("pending", ())]
            wall_s = float(step.get("wall_s", wall_s))
        return RunState(
            run_id=self.run_id,
            task=self.task,
            messages=messages,
            prompt_ids=prompt,
            next_turn=next_turn,
            tool_calls=calls,
            usage=usage,
            pending=pending,
            wall_s=wall_s,
            adapter=self.adapter,
        )

    @property
    def paused(self) -> bool:
        """Whether the run stopped waiting for approval of a call (its last step is a pause)."""
        return bool(self.steps) and bool(self.steps[-1].get("pending")) and not self.finished


def load_trace(path: str | Path) -> Trace:
    """Read a trace; :class:`TraceError` with the reason when it cannot be used."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TraceError(f"trace {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from None
    if not lines:
        raise TraceError(f"trace {path} is empty")
    records: list[dict[str, Any]] = []
    truncated = False
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the process died while writing this line
                truncated = True
                break
            raise TraceError(
                f"trace {path} line {number} is not JSON; the file is corrupt"
            ) from None
        if not isinstance(record, dict) or "record" not in record:
            raise TraceError(f"trace {path} line {number} is not a trace record")
        records.append(record)
    header = records[0] if records else {}
    if header.get("format") != FORMAT or header.get("record") != "header":
        raise TraceError(f"{path} is not a harmony-agent trace (no header on line 1)")
    if header.get("version") != VERSION:
        raise TraceError(
            f"trace {path} has format version {header.get('version')}, this harmony-agent "
            f"reads version {VERSION}; use the harmony-agent release that wrote it"
        )
    trace = Trace(path, header, truncated_tail=truncated, adapter=_adapter(header))
    for number, record in enumerate(records[1:], start=2):
        kind = record["record"]
        try:
            if kind == "event":
                trace.events.append(event_from_dict(record["event"]))
            elif kind == "step":
                trace.steps.append(record)
                trace.records.append(record)
            elif kind == "compaction":
                trace.records.append(record)
            elif kind == "resumed":
                trace.resumed += 1
                trace.adapter = _adapter(record)
            else:
                raise ValueError(f"unknown record kind {kind!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"trace {path} line {number}: {exc}") from None
    return trace


def _adapter(record: dict[str, Any]) -> str | None:
    adapter = record.get("adapter")
    if adapter is not None and not isinstance(adapter, str):
        raise TraceError(f"the trace's adapter must be a name (a string), got {adapter!r}")
    return adapter
