"""Streaming parse of one sampled turn, tolerant of the header malformations gpt-oss produces.

Sampled ids go to harmony's ``StreamableParser(strict=False)``. Header tokens (between
``<|start|>`` — or the turn start — and ``<|message|>``) are held back until ``<|message|>``
arrives: harmony only parses the header there anyway, and holding them lets us rewrite the
known malformations into the canonical header first:

* a stray suffix on the channel name (``commentary?``, ``analysis??``)
* ``<|constrain|> json`` with a space, ``<|constrain|>`` glued to the recipient
* the recipient before the channel (``assistant to=functions.f<|channel|>commentary``)
* extra words between the recipient and the content type
* a doubled ``<|channel|>`` section

The transcript keeps the ids exactly as sampled; only the parse sees the rewrite. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from openai_harmony import HarmonyError, Message, Role, StreamableParser

from ._tokens import CALL, END, MESSAGE, RETURN, START

__all__ = ["Delta", "MessageStart", "TurnParser", "normalize_header"]

_ENDS = frozenset({END, RETURN, CALL})

_CHANNEL_WORD = re.compile(r"[A-Za-z_]+")


def normalize_header(header: str) -> str:
    """Canonical form of a header text (the part before ``<|message|>``), or it unchanged.

    ``header`` starts with the role for every message but the turn's first (whose role,
    ``assistant``, is already in the prompt).
    """
    if "<|channel|>" not in header:
        return header
    head, _, rest = header.partition("<|channel|>")
    rest = rest.replace("<|channel|>", " ").replace("<|constrain|>", " <|constrain|> ")
    head_words = head.replace("<|constrain|>", " <|constrain|> ").split()
    role = head_words.pop(0) if head_words and not head_words[0].startswith("to=") else ""
    rest_words = rest.split()
    channel = ""
    if rest_words:
        m = _CHANNEL_WORD.match(rest_words[0])
        channel = m.group(0) if m else rest_words[0]
    others = head_words + rest_words[1:]
    recipient = content_type = None
    leftovers: list[str] = []
    i = 0
    while i < len(others):
        word = others[i]
        if word.startswith("to="):
            recipient = word
        elif word == "<|constrain|>":
            nxt = others[i + 1] if i + 1 < len(others) else None
            if nxt is not None and not nxt.startswith("to="):
                content_type = "<|constrain|>" + nxt
                i += 1
            else:
                content_type = "<|constrain|>json"
        else:
            leftovers.append(word)
        i += 1
    if content_type is None and leftovers:
        content_type = leftovers[-1]
    out = role + "<|channel|>" + channel
    if recipient:
        out += " " + recipient
    if content_type:
        out += " " + content_type
    return out


# NamedTuples: made once per sampled token, so they must be cheap.
class MessageStart(NamedTuple):
    channel: str | None
    recipient: str | None
    content_type: str | None


class Delta(NamedTuple):
    channel: str | None
    recipient: str | None
    text: str


class TurnParser:
    """Feeds one turn's sampled ids to harmony and reports message starts and content deltas."""

    def __init__(self, encoding: Any) -> None:
        self._enc = encoding
        self._parser = StreamableParser(encoding, Role.ASSISTANT, strict=False)
        self._header: list[int] | None = []  # the prompt ends with <|start|>assistant
        self._start: MessageStart | None = None  # the message whose content is streaming
        self._last: int | None = None
        self.error: str | None = None

    @property
    def messages(self) -> list[Message]:
        return self._parser.messages

    @property
    def current(self) -> tuple[str | None, str | None]:
        return self._parser.current_channel, self._parser.current_recipient

    def _process(self, token: int, out: list[MessageStart | Delta]) -> None:
        # The parser's `state` property decodes its whole state from JSON (cost grows with the
        # message), so the header/content state is tracked here from the tokens instead.
        p = self._parser
        p.process(token)
        if self._start is not None:
            if token in _ENDS:
                self._start = None
                return
            delta = p.last_content_delta
            if delta:
                out.append(Delta(self._start.channel, self._start.recipient, delta))
        elif token == MESSAGE:
            self._start = MessageStart(
                p.current_channel, p.current_recipient, p.current_content_type
            )
            out.append(self._start)

    def _flush_header(self, out: list[MessageStart | Delta], fix: bool) -> None:
        tokens, self._header = self._header or [], None
        if fix and tokens:
            raw = self._enc.decode(tokens)
            fixed = normalize_header(raw)
            if fixed != raw:
                tokens = self._enc.encode(fixed, allowed_special="all")
        for t in tokens:
            self._process(t, out)

    def feed(self, token: int) -> list[MessageStart | Delta]:
        """Process one sampled id; returns what became visible."""
        out: list[MessageStart | Delta] = []
        if self.error is not None:
            return out
        last, self._last = self._last, token
        if last == END and (token == RETURN or token == CALL):
            # `<|end|><|return|>`: a stop token right after a complete message (a known
            # gpt-oss/fine-tune artefact). The message is whole; the stop just ends the turn.
            return out
        try:
            if self._header is not None:
                if token == MESSAGE:
                    self._flush_header(out, fix=True)
                    self._process(token, out)
                elif token in _ENDS:  # no header at all: plain text
                    self._flush_header(out, fix=False)
                    self._process(token, out)
                else:
                    self._header.append(token)
                return out
            self._process(token, out)
            if token == START:
                self._header = []
        except HarmonyError as exc:
            self.error = str(exc)
        return out

    def feed_many(self, tokens: Sequence[int]) -> list[MessageStart | Delta]:
        """Process a chunk of ids; consecutive deltas of one message come back joined."""
        if len(tokens) == 1:
            return self.feed(tokens[0])
        out: list[MessageStart | Delta] = []
        for token in tokens:
            out.extend(self.feed(token))
        if len(out) < 2:
            return out
        joined: list[MessageStart | Delta] = [out[0]]
        for item in out[1:]:
            prev = joined[-1]
            if (
                isinstance(item, Delta)
                and isinstance(prev, Delta)
                and (item.channel, item.recipient) == (prev.channel, prev.recipient)
            ):
                joined[-1] = Delta(prev.channel, prev.recipient, prev.text + item.text)
            else:
                joined.append(item)
        return joined

    def finish_eos(self) -> list[MessageStart | Delta]:
        """Generation stopped without a stop token (length): close the open message."""
        out: list[MessageStart | Delta] = []
        if self.error is not None:
            return out
        try:
            if self._header:
                self._flush_header(out, fix=False)
            self._parser.process_eos()
        except HarmonyError as exc:
            self.error = str(exc)
        return out
