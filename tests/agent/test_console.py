"""What the CLI's live view prints: terminal control sequences from tools and pages never reach
the terminal (OSC 52 clipboard writes, title changes, screen clears, C1 controls)."""

from __future__ import annotations

import io
import re

from harmony_agent._console import EventView
from harmony_agent.events import (
    PreambleDelta,
    ReasoningDelta,
    ToolCallEvent,
    ToolResultEvent,
    WarningEvent,
)
from rich.console import Console

HOSTILE = (
    "clipboard\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07 title\x1b]0;pwned\x1b\\ clear\x1b[2J\x1b[H"
    " csi\x9b2J osc\x9d0;t\x9c bell\x07 nul\x00 back\x08 cr\r del\x7f done"
)
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def render(terminal: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, color_system=None, width=200)
    view = EventView(console)
    view.handle(ReasoningDelta(run_id="r", turn=0, delta=HOSTILE))
    view.handle(PreambleDelta(run_id="r", turn=0, delta=HOSTILE))
    args = {"id": HOSTILE}
    call = {"run_id": "r", "turn": 0, "call_id": "c", "recipient": "browser.open"}
    view.handle(
        ToolCallEvent(**call, tool="open", channel="analysis", raw_arguments="{}", arguments=args)
    )
    view.handle(ToolResultEvent(**call, ok=True, output=HOSTILE, duration_s=0.01))
    view.handle(WarningEvent(run_id="r", turn=0, message=HOSTILE))
    view.stop()
    view.answer(console, HOSTILE)
    return out.getvalue()


def test_control_characters_from_tools_and_the_model_are_stripped():
    for terminal in (False, True):
        text = render(terminal)
        assert "clipboard" in text and "done" in text
        assert "\x1b]" not in text and "\x1b[2J" not in text and "pwned\x1b" not in text
        assert "\x9b" not in text and "\x9d" not in text and "\x07" not in text
        if not terminal:  # rich adds no sequences of its own here: nothing else may remain
            assert CONTROLS.findall(text) == []
