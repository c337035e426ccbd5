"""Live terminal view of a run's events (rich): on stderr reasoning dimmed, preambles, tool
calls with a spinner while they run, warnings, usage and cost at the end; on stdout the final
answer as it streams (Markdown on a terminal, plain text otherwise)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.status import Status
from rich.text import Text

from ._controls import strip_controls
from .events import (
    ApprovalRequested,
    Compacted,
    ErrorEvent,
    Event,
    ForcedTokens,
    PreambleDelta,
    ReasoningDelta,
    RunFinished,
    RunPaused,
    RunStarted,
    TextDelta,
    ToolCallEvent,
    ToolCallStarted,
    ToolResultEvent,
    TurnFinished,
    WarningEvent,
)

if TYPE_CHECKING:
    from .replay import ReplayOutcome

__all__ = ["AnswerStream", "EventView", "Prices", "print_replay"]


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


class AnswerStream:
    """The final answer on ``out`` as its text deltas arrive.

    Not a terminal: the deltas are written as they come, plain. A terminal: the text so far
    is shown as Markdown in a live region, which is closed (left as it is) before anything
    else is printed, so the layout stays one block after the other. :meth:`finish` settles
    the answer the run ended with: a turn whose text became something else (or no text at
    all) still ends with the final answer on ``out``.
    """

    def __init__(self, out: Console) -> None:
        self.out = out
        self._turn: int | None = None
        self._text = ""  # what the current turn streamed
        self._live: Live | None = None
        self._shown = ""  # what the open live region shows
        self._dangling = False  # plain text written without its final newline

    def add(self, turn: int, delta: str) -> None:
        delta = strip_controls(delta)
        if turn != self._turn:  # an earlier turn's text was not the answer after all
            self.close()
            self._turn, self._text = turn, ""
        self._text += delta
        if not self.out.is_terminal:
            self._write(delta)
            return
        if self._live is None:
            self._shown = ""
            self._live = Live(
                console=self.out,
                refresh_per_second=8,
                vertical_overflow="ellipsis",  # the whole answer once it is complete
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        self._shown += delta
        self._live.update(Markdown(self._shown))

    def pause(self) -> None:
        """Something is about to be printed on the terminal: close the live region as it is."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def close(self) -> None:
        """The stream ends here (an error, another turn): no half line left behind."""
        self.pause()
        if self._dangling:
            self._write("\n")

    def finish(self, final_text: str) -> None:
        """The run's answer is ``final_text``: complete what was streamed, or show it."""
        final = strip_controls(final_text)
        if self.out.is_terminal:
            if self._live is not None and self._shown != final and self._shown == self._text:
                self._live.update(Markdown(final))  # the turn's text, settled
            elif self._live is not None or self._text != final or not final:
                if self._shown != final:
                    self.pause()
                    self.out.print(Markdown(final))
            self.pause()
        elif self._text and final.startswith(self._text):
            self._write(final[len(self._text) :])
        else:
            self.close()
            self._write(final or "\n")
        self.close()
        self._turn, self._text, self._shown = None, "", ""

    def _write(self, text: str) -> None:
        if not text:
            return
        self.out.file.write(text)
        self.out.file.flush()
        self._dangling = not text.endswith("\n")


class EventView:
    """Renders events as they arrive. ``show_reasoning=False`` hides the chain of thought.
    With ``out`` (stdout), the final answer streams there as it is sampled."""

    def __init__(
        self,
        console: Console,
        *,
        show_reasoning: bool = True,
        prices: Prices | None = None,
        out: Console | None = None,
    ) -> None:
        self.console = console
        self.show_reasoning = show_reasoning
        self.prices = prices or Prices()
        self._open: str | None = None  # the kind of text currently streaming
        self._status: Status | None = None
        self._answer = AnswerStream(out) if out is not None else None

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
        if self._answer is not None:
            self._answer.close()
        if self._status is not None:
            self._status.stop()
            self._status = None
        self._break()

    def handle(self, event: Event) -> None:
        if self._answer is not None and not isinstance(event, TextDelta | TurnFinished):
            self._answer.pause()  # stderr is about to be written to
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
                if self._answer is not None:
                    self._break()
                    self._answer.add(event.turn, event.delta)
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
            case ApprovalRequested() | RunPaused():
                self.stop()  # the CLI asks, or says how to resume
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
        if self._answer is not None:
            self._answer.finish(event.final_text)  # the answer, then the usage line
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


def print_replay(console: Console, outcome: ReplayOutcome) -> None:
    """Each tool output a replay changed, as a coloured unified diff, then the count."""
    styles = {"-": "red", "+": "green", "@": "cyan"}
    for change in outcome.changes:
        console.print()
        for line in strip_controls(change.diff()).splitlines():
            header = line.startswith(("--- ", "+++ "))
            console.print(Text(line, style="bold" if header else styles.get(line[:1], "")))
    console.print(
        Text(
            f"replayed {len(outcome.replayed)} tool calls; {len(outcome.changes)} outputs "
            "differ from the trace",
            style="yellow" if outcome.changes else "dim",
        )
    )
