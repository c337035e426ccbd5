"""``ReplayEngine``: plays back the ids a recorded run sampled, turn by turn.

With the current tools, a replay re-runs a recorded run deterministically: the model's side
comes from the recording, the tools' side is computed again. The engine takes plain token
lists, or anything with a ``turn_outputs`` attribute holding them (a loaded
:class:`harmony_agent.trace.Trace` is one), so it knows nothing of the trace format.

Example::

    from harmony_agent.engine import ReplayEngine

    engine = ReplayEngine([[200005, 17196, 200008, 12194, 200002]], source="my recording")
    assert engine.remaining == 1
    # a trace file: ReplayEngine(harmony_agent.trace.load_trace("run.jsonl"))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from harmony_agent.errors import ConfigurationError, ScriptExhaustedError

from .base import GenerationRequest
from .testing import ScriptedEngine

__all__ = ["RecordedTurns", "ReplayEngine"]


@runtime_checkable
class RecordedTurns(Protocol):
    """A recording the engine can play: the sampled ids of each turn, in order."""

    @property
    def turn_outputs(self) -> Sequence[Sequence[int]]: ...


class ReplayEngine(ScriptedEngine):
    """Replies with the token ids each recorded turn sampled."""

    def __init__(
        self,
        turns: Sequence[Sequence[int]] | RecordedTurns,
        *,
        source: str | None = None,
        chunk_size: int = 16,
    ) -> None:
        if isinstance(turns, str | os.PathLike):
            raise ConfigurationError(
                f"ReplayEngine takes the sampled ids of each turn or a loaded trace, got the "
                f"path {os.fspath(turns)!r}; load it first: "
                "ReplayEngine(harmony_agent.trace.load_trace(path))"
            )
        if isinstance(turns, RecordedTurns):
            path = getattr(turns, "path", None)
            source = source or (f"the trace {path}" if path is not None else None)
            outputs = turns.turn_outputs
        else:
            outputs = turns
        if not isinstance(outputs, Sequence) or not all(
            isinstance(t, Sequence) and not isinstance(t, str) for t in outputs
        ):
            raise ConfigurationError(
                "ReplayEngine takes a list of token-id lists (one per recorded turn)"
            )
        self.source = source or "the recording"
        super().__init__([list(t) for t in outputs], chunk_size=chunk_size)

    async def _reply_for(self, request: GenerationRequest) -> list[int]:
        if self.remaining == 0:
            raise ScriptExhaustedError(
                f"{self.source} recorded {len(self.replies)} model turns and the replay asked "
                "for another: the current tools answered differently than when it was recorded"
            )
        return await super()._reply_for(request)
