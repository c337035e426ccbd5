"""Live terminal view of a run's events (rich, on stderr): reasoning dimmed, preambles,
tool calls with a spinner while they run, warnings, usage and cost at the end."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.status import Status
from rich.text import Text

from ._controls import strip_controls
from .events import (
    Compacted,
    ErrorEvent,
    Event,
    ForcedTokens,
    PreambleDelta,
    ReasoningDelta,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallEvent,
    ToolCallStarted,
    ToolResultEvent,
    TurnFinished,
    WarningEvent,
)

__all__ = ["EventView", "Prices"]


@dataclass(frozen=True, slots=True)
class Prices:
    """US dollars per million tokens."""

    input: float = 0.07
    cached: float = 0.04
    output: float = 0.30

    def cost(self, prompt: int, cached: int, output: int) -> float:
        fresh = max(prompt - cached, 0)
        return (fresh * self.input + cached * self.cached + output * self.output) / 1e6


def _short(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = strip_controls(text)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


class EventView:
    """Renders events as they arrive. ``show_reasoning=False`` hides the chain of thought."""

    def __init__(
        self, console: Console, *, show_reasoning: bool = True, prices: Prices | None = None
    ) -> None:
        self.console = console
        self.show_reasoning = show_reasoning
        self.prices = prices or Prices()
        self._open: str | None = None  # the kind of text currently streaming
        self._status: Status | None = None

    def _break(self) -> None:
        if self._open is not None:
            self.console.print()
            self._open = None

    def _stream(self, kind: str, text: str, style: str) -> None:
        if self._open != kind:
            self._break()
            label = {"reasoning": "thinking", "preamble": "assistant", "text": "answer"}[kind]
            self.console.print(Text(f"{label}: ", style="bold " + style), end="")
            self._open = kind
        self.console.print(Text(strip_controls(text), style=style), end="")

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        self._break()

    def handle(self, event: Event) -> None:
        match event:
            case RunStarted():
                tools = ", ".join(event.tools) or "no tools"
                self.console.print(Text(f"run {event.run_id} · tools: {tools}", style="dim"))
            case ReasoningDelta():
                if self.show_reasoning:
                    self._stream("reasoning", event.delta, "dim")
            case PreambleDelta():
                self._stream("preamble", event.delta, "italic cyan")
            case TextDelta():
                pass  # the answer goes to stdout at the end
            case ToolCallStarted() | TurnFinished():
                self._break()
            case ToolCallEvent():
                self._tool_call(event)
            case ToolResultEvent():
                self._tool_result(event)
            case WarningEvent():
                self._break()
                self.console.print(
                    Text(f"warning: {strip_controls(event.message)}", style="yellow")
                )
            case Compacted():
                self._break()
                self.console.print(
                    Text(
                        f"context compacted: {event.tokens_before:,} → {event.tokens_after:,} "
                        f"of {event.context_window:,} tokens ({event.dropped_reasoning} "
                        f"reasonings dropped, {event.stubbed_outputs} tool outputs stubbed)",
                        style="magenta",
                    )
                )
            case ForcedTokens():
                self._break()
                self.console.print(
                    Text(f"{event.reason} reached: the model is made to answer", style="magenta")
                )
            case ErrorEvent():
                self.stop()  # the CLI prints the one-line reason itself
            case RunFinished():
                self._run_finished(event)

    def _tool_call(self, event: ToolCallEvent) -> None:
        self._break()
        args = event.arguments if event.arguments is not None else event.raw_arguments
        self.console.print(
            Panel(
                Text(_short(args, 1200)),
                title=f"→ {event.recipient}",
                title_align="left",
                border_style="blue",
                expand=False,
            )
        )
        self._status = self.console.status(f"running {event.recipient} …")
        self._status.start()

    def _tool_result(self, event: ToolResultEvent) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        mark, style = ("✓", "green") if event.ok else ("✗", "red")
        title = f"{mark} {event.recipient} · {event.duration_s * 1000:.0f} ms"
        if event.error_kind:
            title += f" · {event.error_kind}"
        self.console.print(
            Panel(
                Text(_short(event.output, 800)),
                title=title,
                title_align="left",
                border_style=style,
                expand=False,
            )
        )

    def _run_finished(self, event: RunFinished) -> None:
        self.stop()
        cost = self.prices.cost(
            event.prompt_tokens, event.cached_prompt_tokens, event.output_tokens
        )
        self.console.print(
            Text(
                f"{event.turns} turns · input {event.prompt_tokens} "
                f"(cached {event.cached_prompt_tokens}) · output {event.output_tokens} "
                f"tokens · ${cost:.6f}",
                style="dim",
            )
        )

    def answer(self, out: Console, text: str) -> None:
        """The final answer on stdout: Markdown on a terminal, plain text otherwise."""
        text = strip_controls(text)  # a pipe often ends at a terminal too (cat, less -R)
        if out.is_terminal:
            out.print(Markdown(text))
        else:
            out.file.write(text + ("" if text.endswith("\n") else "\n"))
            out.file.flush()
