"""A trace as one self-contained HTML page: a timeline of turns, reasoning (collapsible), tool
calls with arguments, results and durations, tokens per turn, cached ratio, errors highlighted.
No scripts, no external resources: the page opens anywhere, offline.

Turns are numbered from 0, as in events, traces, results and error messages."""

from __future__ import annotations

import datetime as _dt
import html
import json
from dataclasses import dataclass, field
from typing import Any

from .events import (
    Compacted,
    ErrorEvent,
    ForcedTokens,
    PreambleDelta,
    ReasoningDelta,
    RunFinished,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
    TurnFinished,
    WarningEvent,
)
from .trace import Trace

__all__ = ["render_report"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:20px} header .meta{opacity:.75;font-size:13px}
main{max-width:1000px;margin:0 auto;padding:20px}
.totals{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:18px}
.stat{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px #0002}
.stat b{display:block;font-size:18px}
.answer{background:#fff;border-left:4px solid #2e8b57;padding:12px 16px;border-radius:6px;
 margin-bottom:20px;white-space:pre-wrap}
.turn{background:#fff;border-radius:8px;box-shadow:0 1px 2px #0002;margin:0 0 14px;padding:12px 16px}
.turn h2{font-size:15px;margin:0 0 8px;display:flex;justify-content:space-between}
.turn h2 span{font-weight:normal;color:#667;font-size:12px}
details.reasoning{color:#556;background:#f3f4f8;border-radius:6px;padding:6px 10px;margin:6px 0}
details.reasoning .thought{white-space:pre-wrap}
details.reasoning summary{cursor:pointer;font-size:12px;color:#778}
.preamble{font-style:italic;color:#245;margin:6px 0}
.call{border:1px solid #c9d4ee;border-radius:6px;margin:8px 0}
.call .head{background:#eef2fb;padding:5px 10px;font-family:ui-monospace,monospace;font-size:13px}
.call pre,.result pre{margin:0;padding:8px 10px;white-space:pre-wrap;word-break:break-word;
 font:12px/1.4 ui-monospace,monospace;max-height:320px;overflow:auto}
.result{border-top:1px solid #c9d4ee}
.result .head{padding:4px 10px;font-size:12px;background:#effaf2;color:#1d6b3a}
.result.error .head{background:#fdecec;color:#a31515}
.final{white-space:pre-wrap;margin:6px 0;padding:6px 10px;border-left:3px solid #2e8b57}
.warning{color:#8a6100;background:#fff7e0;padding:4px 10px;border-radius:4px;margin:4px 0}
.error-box{color:#fff;background:#c62828;padding:10px 14px;border-radius:6px;margin:10px 0}
"""


@dataclass
class _Call:
    call: ToolCallEvent
    result: ToolResultEvent | None = None


@dataclass
class _Turn:
    number: int
    reasoning: list[str] = field(default_factory=list)
    preamble: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    calls: list[_Call] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    finished: TurnFinished | None = None


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _pretty(value: Any, raw: str) -> str:
    if value is None:
        return raw
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def _turns(trace: Trace) -> tuple[list[_Turn], list[ErrorEvent], RunFinished | None]:
    turns: dict[int, _Turn] = {}
    errors: list[ErrorEvent] = []
    finished: RunFinished | None = None

    def turn(n: int) -> _Turn:
        return turns.setdefault(n, _Turn(n))

    for ev in trace.events:
        match ev:
            case ReasoningDelta():
                turn(ev.turn).reasoning.append(ev.delta)
            case PreambleDelta():
                turn(ev.turn).preamble.append(ev.delta)
            case TextDelta():
                turn(ev.turn).text.append(ev.delta)
            case ToolCallEvent():
                turn(ev.turn).calls.append(_Call(ev))
            case ToolResultEvent():
                for c in turn(ev.turn).calls:
                    if c.call.call_id == ev.call_id:
                        c.result = ev
            case TurnFinished():
                turn(ev.turn).finished = ev
            case WarningEvent():
                turn(max(ev.turn, 0)).warnings.append(ev.message)
            case Compacted():
                turn(ev.turn).warnings.append(
                    f"context compacted before this turn: {ev.tokens_before:,} → "
                    f"{ev.tokens_after:,} tokens ({', '.join(ev.removed[:8])}"
                    f"{', …' if len(ev.removed) > 8 else ''})"
                )
            case ForcedTokens():
                turn(ev.turn).warnings.append(
                    f"{ev.reason} reached: the runtime appended {ev.text!r} (not sampled)"
                )
            case ErrorEvent():
                errors.append(ev)
            case RunFinished():
                finished = ev
            case _:
                pass  # run started, tool call started: nothing to show
    return [turns[k] for k in sorted(turns)], errors, finished


def _render_turn(t: _Turn) -> str:
    parts = []
    f = t.finished
    info = ""
    if f is not None:
        cached = f.cached_prompt_tokens
        ratio = f" ({cached / f.prompt_tokens:.0%} cached)" if cached and f.prompt_tokens else ""
        info = (
            f"{f.prompt_tokens} in{ratio} · {f.output_tokens} out · {f.duration_s * 1000:.0f} ms"
            f" · {_e(f.finish_reason)}"
        )
    parts.append(
        f'<section class="turn" id="turn-{t.number}"><h2>Turn {t.number}<span>{info}</span></h2>'
    )
    if t.reasoning:
        parts.append(
            '<details class="reasoning"><summary>reasoning</summary>'
            f"<div class=thought>{_e(''.join(t.reasoning))}</div></details>"
        )
    if t.preamble:
        parts.append(f'<div class="preamble">{_e("".join(t.preamble))}</div>')
    for c in t.calls:
        call, result = c.call, c.result
        parts.append('<div class="call">')
        parts.append(f'<div class="head">→ {_e(call.recipient)}</div>')
        parts.append(f"<pre>{_e(_pretty(call.arguments, call.raw_arguments))}</pre>")
        if result is not None:
            cls = "result" if result.ok else "result error"
            label = "ok" if result.ok else f"error: {result.error_kind}"
            parts.append(
                f'<div class="{cls}"><div class="head">{_e(label)} · '
                f"{result.duration_s * 1000:.0f} ms</div><pre>{_e(result.output)}</pre></div>"
            )
        parts.append("</div>")
    for w in t.warnings:
        parts.append(f'<div class="warning">warning: {_e(w)}</div>')
    if t.text:
        parts.append(f'<div class="final">{_e("".join(t.text))}</div>')
    parts.append("</section>")
    return "".join(parts)


def render_report(trace: Trace) -> str:
    """The HTML page for ``trace``."""
    turns, errors, finished = _turns(trace)
    when = _dt.datetime.fromtimestamp(trace.header.get("time", 0), _dt.UTC)
    prompt = sum(t.finished.prompt_tokens for t in turns if t.finished)
    cached = sum(t.finished.cached_prompt_tokens or 0 for t in turns if t.finished)
    output = sum(t.finished.output_tokens for t in turns if t.finished)
    n_calls = sum(len(t.calls) for t in turns)
    n_failed = sum(1 for t in turns for c in t.calls if c.result is not None and not c.result.ok)
    stats = [
        ("turns", len(turns)),
        ("tool calls", f"{n_calls} ({n_failed} failed)"),
        ("input tokens", prompt),
        ("cached", f"{cached} ({cached / prompt:.0%})" if prompt else "0"),
        ("output tokens", output),
        ("status", "answered" if finished else ("error" if errors else "incomplete")),
    ]
    body = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Trace {_e(trace.run_id)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(trace.task)}</h1><div class=meta>run {_e(trace.run_id)} · "
        f"{when:%Y-%m-%d %H:%M:%S} UTC · {len(trace.events)} events</div></header><main>",
        '<div class="totals">',
        *(f'<div class="stat"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in stats),
        "</div>",
    ]
    if finished is not None:
        body.append(f'<div class="answer"><b>Answer</b>\n{_e(finished.final_text)}</div>')
    for err in errors:
        body.append(f'<div class="error-box"><b>{_e(err.error)}</b>: {_e(err.message)}</div>')
    body.extend(_render_turn(t) for t in turns)
    body.append("</main></body></html>")
    return "\n".join(body)
