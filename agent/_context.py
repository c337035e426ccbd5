"""The context budget of a run: how full the window is, compaction, and the reasoning budget.

Functions over token ids and messages, pure but for :func:`call_summarizer` (which runs a
user's summariser); the run's steps (``_run``) call them and do the I/O.

**Budget.** Every turn reports its context (prompt + output tokens) against the window, and a
warning is raised once per threshold (:data:`DEFAULT_WARNINGS`).

**Compaction** (:class:`Compaction`, the policy object of ``Agent(compaction=...)``). The
transcript is a sequence of Harmony messages, each ``<|start|>`` … ``<|end|>`` / ``<|call|>`` /
``<|return|>``; tool output is always encoded as plain text, so those special ids split it
exactly (:func:`segments`). When the next prompt would pass :meth:`Compaction.limit`, the run
compacts once, in a large step, down to :attr:`Compaction.target`:

1. the reasoning (analysis messages with no recipient) of turns older than the newest
   :attr:`Compaction.keep_recent` tool results is dropped — the Harmony rule for completed
   turns;
2. if that is not enough, their tool outputs are replaced, oldest first, by a short stub that
   says what was there and how to get it back (the tools' own state, such as the browser's
   cursors, is untouched, so reopening works).

The system and developer messages, the user's messages and every id after the compaction
point are kept token for token; each message kept is kept as its ids, never re-rendered. The
prefix cache therefore breaks once per compaction, not once per turn. A policy with
``summarize`` replaces the old turns by one user message holding the text it returns instead.

**Reasoning budget.** When one turn's analysis reaches ``max_reasoning_tokens`` (or the turn
hits ``max_tokens_per_turn`` while still reasoning), the runtime appends
:func:`forced_final_ids` — ``<|end|><|start|>assistant<|channel|>final<|message|>`` — and the
model continues from there. Those ids are the runtime's, not sampled: the trace and the
``ForcedTokens`` event say so.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from openai_harmony import Message, Role

from ._encoding import encode_text
from ._harmony import assistant_start_ids
from ._tokens import CALL, CHANNEL, CONSTRAIN, END, MESSAGE, RETURN, START
from .errors import ConfigurationError, ContextOverflowError

__all__ = [
    "DEFAULT_WARNINGS",
    "Compaction",
    "CompactionOutcome",
    "CompactionPlan",
    "Segment",
    "Summarizer",
    "apply_plan",
    "call_summarizer",
    "continuation",
    "crossed",
    "cut_while_reasoning",
    "describe_filled",
    "filled",
    "forced_final_ids",
    "overflow_error",
    "plan_compaction",
    "plan_to_target",
    "segments",
    "stub_text",
    "summary_messages",
    "warning_text",
]

#: Fractions of the window at which a run warns, once each.
DEFAULT_WARNINGS: tuple[float, ...] = (0.75, 0.9)

_TERMINATORS = frozenset({END, CALL, RETURN})
_PREFIX_ROLES = frozenset({"system", "developer"})
_ROLES = frozenset({"system", "developer", "user", "assistant"})
_CURSOR = re.compile(r"^\[(\d+)\] ")

#: A summariser: the messages being removed in, the text that replaces them out (sync or async).
Summarizer = Callable[[list[Message]], "str | Awaitable[str]"]


@dataclass(frozen=True, slots=True)
class Compaction:
    """When and how a run compacts its context (``Agent(compaction=Compaction(...))``).

    Args:
        trigger: compact when the next prompt would pass this fraction of the window (and
            always before it leaves less than ``max_tokens_per_turn`` — at most a quarter of
            the window — to answer in).
        target: compact down to this fraction of the window, so that many turns append to
            the compacted prompt before the next compaction.
        keep_recent: the newest tool results (and everything after the oldest of them) are
            kept verbatim.
        min_stub_tokens: tool outputs shorter than this are kept (a stub would save nothing).
        summarize: instead of stubs, a callable that receives the old turns' messages and
            returns the text of one user message that replaces them (e.g. a model-written
            summary). The default needs no model call.

    Example::

        from harmony_agent import Agent, Compaction
        from harmony_agent.engine import ScriptedEngine

        agent = Agent(engine=ScriptedEngine([]), compaction=Compaction(trigger=0.8, keep_recent=2))
        assert agent.compaction.limit(window=10_000, max_tokens_per_turn=1_000) == 8_000
    """

    trigger: float = 0.85
    target: float = 0.5
    keep_recent: int = 4
    min_stub_tokens: int = 48
    summarize: Summarizer | None = None

    def __post_init__(self) -> None:
        if not 0 < self.target <= self.trigger <= 1:
            raise ConfigurationError(
                f"Compaction needs 0 < target <= trigger <= 1, got target={self.target} and "
                f"trigger={self.trigger}; e.g. Compaction(trigger=0.85, target=0.5)"
            )
        if self.keep_recent < 0 or self.min_stub_tokens < 0:
            raise ConfigurationError(
                "Compaction's keep_recent and min_stub_tokens must be >= 0, got "
                f"{self.keep_recent} and {self.min_stub_tokens}"
            )
        if self.summarize is not None and not callable(self.summarize):
            raise ConfigurationError(
                f"Compaction(summarize=...) takes a callable (messages -> text), got "
                f"{self.summarize!r:.80}"
            )

    def limit(self, window: int, max_tokens_per_turn: int) -> int:
        """The prompt length past which the run compacts."""
        room = min(max_tokens_per_turn, window // 4)
        return min(int(self.trigger * window), window - room)


@dataclass(frozen=True, slots=True)
class Segment:
    """One message of a transcript: ids ``[start, end)``, who wrote it, where it went."""

    start: int
    end: int
    author: str  # a role ("assistant", "user", ...) or a tool's name ("browser.open")
    channel: str | None
    recipient: str | None

    @property
    def tokens(self) -> int:
        return self.end - self.start

    @property
    def is_tool(self) -> bool:
        return self.author not in _ROLES

    @property
    def is_reasoning(self) -> bool:
        return self.author == "assistant" and self.channel == "analysis" and not self.recipient


def _header(encoding: Any, ids: Sequence[int]) -> tuple[str, str | None, str | None]:
    """(author, channel, recipient) of a header's ids (between ``<|start|>`` and ``<|message|>``)."""
    parts: list[list[int]] = [[]]
    marks: list[int] = []
    for token in ids:
        if token in (CHANNEL, CONSTRAIN):
            marks.append(token)
            parts.append([])
        else:
            parts[-1].append(token)
    texts = [encoding.decode(p) if p else "" for p in parts]
    words = texts[0].split()
    author = words[0] if words else ""
    channel = None
    recipient = next((w[3:] for w in words[1:] if w.startswith("to=")), None)
    for mark, text in zip(marks, texts[1:], strict=True):
        tail = text.split()
        if mark == CHANNEL and tail:
            channel = tail[0]
            recipient = recipient or next((w[3:] for w in tail[1:] if w.startswith("to=")), None)
    return author, channel, recipient


def segments(encoding: Any, ids: Sequence[int]) -> list[Segment]:
    """The complete messages of ``ids``, in order; the open tail (``<|start|>assistant`` and any
    forced continuation) is not one."""
    out: list[Segment] = []
    start: int | None = None
    header_end: int | None = None
    for i, token in enumerate(ids):
        if token == START and start is None:
            start, header_end = i, None
        elif token == MESSAGE and start is not None and header_end is None:
            header_end = i
        elif token in _TERMINATORS and start is not None and header_end is not None:
            author, channel, recipient = _header(encoding, ids[start + 1 : header_end])
            out.append(Segment(start, i + 1, author, channel, recipient))
            start = None
    return out


def filled(encoding: Any, ids: Sequence[int]) -> dict[str, int]:
    """What fills ``ids``, in tokens: the prefix, user messages, reasoning, the model's calls and
    answers, and each tool's outputs (``"tool output: browser.open"``)."""
    out: dict[str, int] = {}
    counted = 0
    for seg in segments(encoding, ids):
        if seg.author in _PREFIX_ROLES:
            kind = "system and developer messages"
        elif seg.author == "user":
            kind = "user messages"
        elif seg.is_reasoning:
            kind = "reasoning"
        elif seg.author == "assistant":
            kind = "tool calls and answers"
        else:
            kind = f"tool output: {seg.author}"
        out[kind] = out.get(kind, 0) + seg.tokens
        counted += seg.tokens
    if len(ids) > counted:
        out["the next message's header"] = len(ids) - counted
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def describe_filled(parts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in parts.items())


def stub_text(tool: str, output: str, tokens: int) -> str:
    """The stub that replaces a tool output: what was there and how to get it back."""
    cursor = _CURSOR.match(output)
    what = f"cursor {cursor.group(1)}, " if cursor and tool.startswith("browser.") else ""
    if tool.startswith("browser."):
        how = "open it again if needed"
    elif tool == "python":
        how = "run the code again if needed"
    else:
        how = f"call {tool} again if needed"
    return f"[{tool} result ({what}{tokens:,} tokens) removed to save context — {how}]"


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """What one compaction removes: segment indices to drop and to stub (index → stub text),
    or the range of segments a summary replaces."""

    drop: frozenset[int] = frozenset()
    stub: dict[int, str] = field(default_factory=dict)
    summary_range: tuple[int, int] | None = None
    tokens_before: int = 0
    tokens_after: int = 0  # estimated; exact after apply_plan

    @property
    def empty(self) -> bool:
        return not self.drop and not self.stub and self.summary_range is None


@dataclass(frozen=True, slots=True)
class CompactionOutcome:
    """A compaction carried out: the new prompt ids and messages, and what it removed."""

    prompt_ids: list[int]
    messages: list[Message]
    tokens_before: int
    tokens_after: int
    removed: tuple[str, ...]
    dropped_reasoning: int
    stubbed_outputs: int
    summarized: bool


def _boundary(segs: Sequence[Segment], keep_recent: int) -> int:
    """The index of the first segment kept verbatim: the turns of the newest ``keep_recent``
    tool results and everything after them."""
    tools = [i for i, s in enumerate(segs) if s.is_tool]
    if len(tools) <= keep_recent:
        return 0
    return tools[len(tools) - keep_recent - 1] + 1 if keep_recent else tools[-1] + 1


def plan_compaction(
    encoding: Any,
    ids: Sequence[int],
    policy: Compaction,
    window: int,
    *,
    keep_recent: int | None = None,
) -> CompactionPlan:
    """What to remove from ``ids`` to get under ``policy.target`` of the window (pure)."""
    segs = segments(encoding, ids)
    keep = policy.keep_recent if keep_recent is None else keep_recent
    end = _boundary(segs, keep)
    first = next((i for i, s in enumerate(segs) if s.author not in _PREFIX_ROLES), len(segs))
    old = [i for i in range(first, end) if segs[i].author not in _PREFIX_ROLES | {"user"}]
    size = len(ids)
    if not old:
        return CompactionPlan(tokens_before=size, tokens_after=size)
    if policy.summarize is not None:
        lo, hi = old[0], old[-1] + 1
        removed = sum(segs[i].tokens for i in range(lo, hi) if segs[i].author != "user")
        return CompactionPlan(
            summary_range=(lo, hi), tokens_before=size, tokens_after=size - removed
        )
    goal = int(policy.target * window)
    drop = frozenset(i for i in old if segs[i].is_reasoning)
    after = size - sum(segs[i].tokens for i in drop)
    stub: dict[int, str] = {}
    for i in old:
        if after <= goal:
            break
        seg = segs[i]
        if not seg.is_tool or seg.tokens < policy.min_stub_tokens:
            continue
        content = _content(ids, seg)
        text = stub_text(seg.author, encoding.decode(content), seg.tokens)
        stub[i] = text
        after -= len(content) - len(encode_text(encoding, text))  # the header stays
    return CompactionPlan(drop=drop, stub=stub, tokens_before=size, tokens_after=after)


def plan_to_target(
    encoding: Any, ids: Sequence[int], policy: Compaction, window: int
) -> CompactionPlan:
    """The plan of one large step: keep fewer recent turns verbatim until the target is
    reached, but the newest tool result always (the model has not read it yet)."""
    goal = int(policy.target * window)
    best = plan_compaction(encoding, ids, policy, window)
    for keep in range(policy.keep_recent - 1, min(policy.keep_recent, 1) - 1, -1):
        if best.tokens_after <= goal:
            break
        best = plan_compaction(encoding, ids, policy, window, keep_recent=keep)
    return best


def _content(ids: Sequence[int], seg: Segment) -> list[int]:
    """The content ids of a segment (between ``<|message|>`` and its terminator)."""
    body = ids[seg.start : seg.end]
    return list(body[list(body).index(MESSAGE) + 1 : -1])


def _tool_ordinals(kinds: Sequence[bool]) -> list[int]:
    return [i for i, is_tool in enumerate(kinds) if is_tool]


def apply_plan(
    encoding: Any,
    ids: Sequence[int],
    messages: Sequence[Message],
    plan: CompactionPlan,
    summary: str | None = None,
) -> CompactionOutcome:
    """Carry out ``plan`` on the transcript ``ids`` and on ``messages`` alike.

    Messages are matched to segments by position among the tool results (each tool step adds
    one of each), so both say the same thing after compaction.
    """
    segs = segments(encoding, ids)
    tail_start = segs[-1].end if segs else 0
    out: list[int] = list(ids[: segs[0].start]) if segs else []
    removed: list[str] = []
    lo, hi = plan.summary_range or (-1, -1)
    for i, seg in enumerate(segs):
        piece = ids[seg.start : seg.end]
        if lo <= i < hi:
            if i == lo:
                out += [START, *encoding.encode("user", disallowed_special=()), MESSAGE]
                out += [*encode_text(encoding, summary or ""), END]
            if seg.author != "user":
                removed.append(f"{seg.author} {seg.channel or ''}".strip() + f" ({seg.tokens:,})")
                continue
        if i in plan.drop:
            removed.append(f"reasoning ({seg.tokens:,})")
            continue
        if i in plan.stub:
            head = list(piece[: list(piece).index(MESSAGE) + 1])
            out += [*head, *encode_text(encoding, plan.stub[i]), END]
            removed.append(f"{seg.author} output ({seg.tokens:,})")
            continue
        out += piece
    out += ids[tail_start:]
    new_messages = _apply_to_messages(segs, messages, plan, summary)
    return CompactionOutcome(
        prompt_ids=out,
        messages=new_messages,
        tokens_before=len(ids),
        tokens_after=len(out),
        removed=tuple(removed),
        dropped_reasoning=len(plan.drop),
        stubbed_outputs=len(plan.stub),
        summarized=plan.summary_range is not None,
    )


def _is_tool_message(m: Message) -> bool:
    return m.author.role == Role.TOOL


def _message_index(
    segs: Sequence[Segment], messages: Sequence[Message]
) -> Callable[[int], int] | None:
    """Maps a segment index to the index of its message, counted back from the next tool
    result (each tool step adds one tool segment and one tool message); None when the two
    do not match."""
    seg_tools = _tool_ordinals([s.is_tool for s in segs])
    msg_tools = _tool_ordinals([_is_tool_message(m) for m in messages])
    if len(seg_tools) != len(msg_tools):
        return None
    anchor = dict(zip(seg_tools, msg_tools, strict=True))

    def index(seg_i: int) -> int:
        nxt = next((t for t in seg_tools if t >= seg_i), None)
        if nxt is None:
            return len(messages) - (len(segs) - seg_i)
        return anchor[nxt] - (nxt - seg_i)

    return index


def _apply_to_messages(
    segs: Sequence[Segment],
    messages: Sequence[Message],
    plan: CompactionPlan,
    summary: str | None,
) -> list[Message]:
    index = _message_index(segs, messages)
    if index is None:  # cannot match them: keep the messages as they were
        return list(messages)
    drop = {index(i) for i in plan.drop}
    stub = {index(i): text for i, text in plan.stub.items()}
    lo, hi = plan.summary_range or (-1, -1)
    mlo, mhi = (index(lo), index(hi - 1) + 1) if plan.summary_range else (-1, -1)
    out: list[Message] = []
    for i, m in enumerate(messages):
        if mlo <= i < mhi:
            if i == mlo:
                out.append(Message.from_role_and_content(Role.USER, summary or ""))
            if m.author.role != Role.USER:
                continue
        if i in drop and m.channel == "analysis":
            continue
        if i in stub and _is_tool_message(m):
            replaced = Message.from_author_and_content(m.author, stub[i])
            if m.recipient:
                replaced = replaced.with_recipient(m.recipient)
            if m.channel:
                replaced = replaced.with_channel(m.channel)
            out.append(replaced)
            continue
        out.append(m)
    return out


def summary_messages(
    encoding: Any, ids: Sequence[int], messages: Sequence[Message], plan: CompactionPlan
) -> list[Message]:
    """The messages a summariser is given: those the plan's summary replaces."""
    if plan.summary_range is None:
        return []
    segs = segments(encoding, ids)
    index = _message_index(segs, messages)
    lo, hi = plan.summary_range
    if index is None:
        return []
    return [m for m in messages[index(lo) : index(hi - 1) + 1] if m.author.role != Role.USER]


async def call_summarizer(summarize: Summarizer, messages: list[Message]) -> str:
    """The summary text from a user's callable: awaited when async, else run in a worker
    thread (it may make a model call of its own)."""
    if inspect.iscoroutinefunction(summarize):
        text = await summarize(messages)
    else:
        text = await anyio.to_thread.run_sync(summarize, messages)
        if inspect.isawaitable(text):
            text = await text
    if not isinstance(text, str):
        raise ConfigurationError(
            f"Compaction(summarize=...) must return the summary text (a str), got "
            f"{type(text).__name__}"
        )
    return text


def cut_while_reasoning(sampled: Any, last: Message | None) -> bool:
    """A turn that stopped on a token limit stopped inside its analysis, before any answer or
    call (``sampled`` is the turn's ``Sampled``)."""
    if sampled.reasoning_cut:
        return True
    if last is None or last.channel != "analysis" or last.recipient:
        return False
    return not any(m.channel == "final" for m in sampled.messages)


def continuation(encoding: Any, prompt: Sequence[int]) -> list[int]:
    """The ids after the prompt's last ``<|start|>assistant``: empty normally, the forced
    ``<|channel|>final<|message|>`` when the model continues an answer the runtime opened."""
    opener = assistant_start_ids(encoding)
    n = len(opener)
    for i in range(len(prompt) - n, -1, -1):
        if prompt[i] == START and list(prompt[i : i + n]) == opener:
            return list(prompt[i + n :])
    return []


def forced_final_ids(encoding: Any, output: Sequence[int]) -> list[int]:
    """What closes the analysis a turn was cut in and opens the final channel:
    ``<|end|><|start|>assistant<|channel|>final<|message|>`` (no ``<|end|>`` when the cut
    fell right after one)."""
    close = [] if output and output[-1] == END else [END]
    final = encoding.encode("final", disallowed_special=())
    return [*close, *assistant_start_ids(encoding), CHANNEL, *final, MESSAGE]


def overflow_error(
    encoding: Any, prompt: Sequence[int], window: int, how: str
) -> ContextOverflowError:
    """The error for a prompt that leaves no room to answer, saying what fills it."""
    parts = filled(encoding, prompt)
    return ContextOverflowError(
        f"the prompt is {len(prompt)} tokens and the context window {window}, {how}: "
        f"no room left to answer. It holds: {describe_filled(parts)}. Start a new run, "
        "shorten the tools' outputs, lower keep_recent or summarize in the Compaction "
        "policy, or raise context_window if the model allows it.",
        filled=parts,
    )


def warning_text(tokens: int, window: int, threshold: float, policy: Compaction | None) -> str:
    then = (
        "the run compacts it at the policy's limit"
        if policy is not None
        else "compaction is off: the run ends when it is full"
    )
    return (
        f"context {tokens / window:.0%} full ({tokens:,} of {window:,} tokens, past the "
        f"{threshold:.0%} warning); {then}"
    )


def crossed(thresholds: Sequence[float], warned: set[float], fill: float) -> list[float]:
    """The thresholds ``fill`` passes that have not been warned about yet."""
    return [t for t in sorted(thresholds) if fill >= t and t not in warned]
