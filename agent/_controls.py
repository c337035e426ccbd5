"""Terminal control characters out of text that is shown to people or to the model."""

from __future__ import annotations

import re

__all__ = ["strip_controls"]

# C0 controls except tab and newline, DEL, and C1 controls: with ESC (and its 8-bit forms CSI,
# OSC, DCS) gone, no escape sequence can survive (OSC 52 clipboard writes, title changes,
# screen clears, cursor moves); CR and BS could overwrite what was printed before.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_controls(text: str) -> str:
    """``text`` without C0/C1 control characters (tab and newline kept)."""
    return _CONTROLS.sub("", text)
