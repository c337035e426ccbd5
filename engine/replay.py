"""``ReplayEngine``: plays back the model outputs recorded in a trace, turn by turn.

With the current tools, a replay re-runs a recorded run deterministically: the model's side
comes from the trace, the tools' side is computed again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harmony_agent.errors import ScriptExhaustedError

from .base import GenerationRequest
from .testing import ScriptedEngine

__all__ = ["ReplayEngine"]


class ReplayEngine(ScriptedEngine):
    """Replies with the token ids each turn of a trace sampled (a path or a loaded ``Trace``)."""

    def __init__(self, trace: str | Path | Any, *, chunk_size: int = 16) -> None:
        from harmony_agent.trace import load_trace

        self.trace = load_trace(trace) if isinstance(trace, str | Path) else trace
        super().__init__(self.trace.turn_outputs, chunk_size=chunk_size)

    async def _reply_for(self, request: GenerationRequest) -> list[int]:
        if self.remaining == 0:
            raise ScriptExhaustedError(
                f"the trace {self.trace.path} recorded {len(self.replies)} model turns and the "
                "replay asked for another: the current tools answered differently than when it "
                "was recorded"
            )
        return await super()._reply_for(request)
