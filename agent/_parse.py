"""Streaming parse of one sampled turn, tolerant of the malformations gpt-oss produces.

harmony's ``StreamableParser(strict=False)`` decodes message contents; the headers and what
lies between messages are read here, from the token ids, and harmony only ever sees a
canonical header. Header tokens (between ``<|start|>`` — or the turn start — and
``<|message|>``) are held back until ``<|message|>`` arrives, parsed by
:func:`parse_header`, and replaced by ``[<|start|>role]<|channel|>{channel}[ to={recipient}]``.
Tolerated in a header:

* a stray suffix on the channel name (``commentary?``, ``analysis??``)
* ``<|constrain|> json`` with a space, ``<|constrain|>`` glued to the recipient
* the recipient before the channel (``assistant to=functions.f<|channel|>commentary``)
* a content type or extra words after the channel (``final json``, ``final <|constrain|>json``,
  ``analysis something``): a content type, never the recipient
* a doubled ``<|channel|>`` section, ``assistantassistant``, a missing role
  (``<|start|>to=functions.f<|channel|>...``: the assistant's)
* a final answer written into the header with no ``<|message|>``
  (``<|channel|>final {"answer": 1}<|return|>``)

Between messages: a doubled ``<|end|>``, a missing or doubled ``<|start|>`` and stray text are
skipped and noted (:attr:`TurnParser.salvaged`). When the turn still cannot be parsed,
:meth:`TurnParser.salvage` keeps the complete messages up to the last call or final answer, so
the loop acts on them instead of sampling the turn again.

The transcript keeps the ids exactly as sampled; only the parse sees the rewrite. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from openai_harmony import Message, Role, StreamableParser

from ._encoding import encode_text, third_party_error
from ._registry import NOT_A_TOOL
from ._tokens import CALL, CHANNEL, END, ENDOFTEXT, MESSAGE, RETURN, START, VOCAB_SIZE

__all__ = ["Delta", "Header", "MessageStart", "TurnParser", "parse_header"]

_ENDS = frozenset({END, RETURN, CALL})
_CHANNELS = ("analysis", "commentary", "final")
_CHANNEL_WORD = re.compile(r"[A-Za-z_]+")
_GLUED_TO = re.compile(r"(?<=\S)to=")
_REPEATED_ASSISTANT = re.compile(r"(?:assistant)+")
_FINAL_IN_HEADER = re.compile(r"\s*final")
_JSON_TYPE = re.compile(r"\s*(?:<\|constrain\|>\s*)?json\s*(?=[\[{])")


class Header(NamedTuple):
    """A message header as understood here (``None``: absent)."""

    role: str | None
    channel: str | None
    recipient: str | None
    content_type: str | None
    has_channel: bool  # a ``<|channel|>`` marker was written (its value may be empty)


def _split_channel(word: str) -> tuple[str, str]:
    """``commentary?`` → (commentary, ""); ``commentaryjson`` → (commentary, "json")."""
    for name in _CHANNELS:
        if word.startswith(name):
            extra = word[len(name) :]
            return name, extra if extra[:1].isalnum() or extra.startswith("<|") else ""
    m = _CHANNEL_WORD.match(word)
    return (m.group(0) if m else word), ""


def parse_header(text: str) -> Header:
    """Read a header text (the part before ``<|message|>``, ``<|start|>`` excluded).

    The first message's header has no role (``assistant`` is already in the prompt); later
    ones start with it. Recipients are cut at the first control token.
    """
    text = _GLUED_TO.sub(" to=", text.replace("<|start|>", " "))
    text = text.replace("<|constrain|>", " <|constrain|> ")
    head, marker, rest = text.partition("<|channel|>")
    rest = rest.replace("<|channel|>", " ")
    head_words = head.split()
    role = None
    if head_words and not head_words[0].startswith("to=") and head_words[0] != "<|constrain|>":
        role = head_words.pop(0)
        if _REPEATED_ASSISTANT.fullmatch(role):
            role = "assistant"
    rest_words = rest.split()
    channel = None
    if rest_words and rest_words[0] != "<|constrain|>" and not rest_words[0].startswith("to="):
        channel, extra = _split_channel(rest_words.pop(0))
        if extra:
            rest_words.insert(0, extra)
    others = head_words + rest_words
    recipient = content_type = None
    leftovers: list[str] = []
    i = 0
    while i < len(others):
        word = others[i]
        if word.startswith("to="):
            name = word[3:].split("<|", 1)[0]
            recipient = name or recipient
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
    return Header(role, channel, recipient, content_type, bool(marker))


def _final_in_header(text: str) -> tuple[str | None, str] | None:
    """A final answer written where the header should be: (content type, text), else None."""
    _, marker, rest = text.partition("<|channel|>")
    m = _FINAL_IN_HEADER.match(rest) if marker else None
    if m is None or "to=" in text:
        return None
    body = rest[m.end() :]
    typed = _JSON_TYPE.match(body)
    if typed is not None:
        return "json", body[typed.end() :]
    return None, body.lstrip()


# NamedTuples: made once per sampled token, so they must be cheap.
class MessageStart(NamedTuple):
    channel: str | None
    recipient: str | None
    content_type: str | None


class Delta(NamedTuple):
    channel: str | None
    recipient: str | None
    text: str


_HEADER, _CONTENT, _BETWEEN, _DONE = range(4)


class TurnParser:
    """Feeds one turn's sampled ids to harmony and reports message starts and content deltas.

    Never raises on model output: whatever cannot be parsed sets :attr:`error` (and later ids
    are ignored). :attr:`salvaged` says what was skipped or kept to make sense of the turn.
    """

    def __init__(self, encoding: Any) -> None:
        self._enc = encoding
        self._parser = StreamableParser(encoding, Role.ASSISTANT, strict=False)
        self._state = _HEADER  # the prompt ends with <|start|>assistant
        self._header: list[int] = []
        self._first = True  # the first message's role is already in the prompt
        self._start: MessageStart | None = None  # the message whose content is streaming
        self._types: list[str | None] = []  # content type of each message, as parsed here
        self._notes: list[str] = []
        self.error: str | None = None

    @property
    def messages(self) -> list[Message]:
        """The complete messages, with the content types read here."""
        messages = self._parser.messages
        for message, content_type in zip(messages, self._types, strict=False):
            if message.content_type != content_type:
                message.with_content_type(content_type)  # type: ignore[arg-type]
        return messages

    @property
    def current(self) -> tuple[str | None, str | None]:
        return self._parser.current_channel, self._parser.current_recipient

    @property
    def salvaged(self) -> str | None:
        """What was skipped or kept to understand this turn, for a warning; None if nothing."""
        return "; ".join(dict.fromkeys(self._notes)) or None

    def salvage(self) -> list[Message] | None:
        """After an :attr:`error`: the complete messages up to the last tool call or final
        answer, to act on instead of sampling the turn again; None when there is none."""
        messages = self.messages
        for i in range(len(messages) - 1, -1, -1):
            m = messages[i]
            if m.channel == "final" or (m.recipient and m.recipient not in NOT_A_TOOL):
                what = "final answer" if m.channel == "final" else f"call to {m.recipient}"
                self._notes.append(
                    f"kept the complete {what} sampled before unparseable output ({self.error})"
                )
                return messages[: i + 1]
        return None

    # --- feeding harmony -------------------------------------------------------------------

    def _text(self, text: str) -> list[int]:
        return self._enc.encode(text, disallowed_special=())

    def _content(self, token: int, out: list[MessageStart | Delta]) -> None:
        p = self._parser
        p.process(token)
        if token in _ENDS:
            self._start = None
            self._first = False
            self._state = _BETWEEN if token == END else _DONE
            return
        delta = p.last_content_delta
        if delta and self._start is not None:
            out.append(Delta(self._start.channel, self._start.recipient, delta))

    def _open(
        self, header: Header, out: list[MessageStart | Delta], *, with_channel: bool = True
    ) -> None:
        """Feed harmony the canonical header of ``header`` and ``<|message|>``."""
        ids: list[int] = []
        if not self._first:
            ids += [START, *self._text(header.role or "assistant")]
        if with_channel and header.channel:
            ids += [CHANNEL, *self._text(header.channel)]
        if header.recipient:
            ids += self._text(" to=" + header.recipient)
        ids.append(MESSAGE)
        p = self._parser
        for t in ids:
            p.process(t)
        self._types.append(header.content_type)
        self._start = MessageStart(p.current_channel, p.current_recipient, header.content_type)
        out.append(self._start)
        self._state = _CONTENT

    def _open_held(self, out: list[MessageStart | Delta]) -> None:
        """``<|message|>`` arrived: the held header becomes a canonical one."""
        tokens, self._header = self._header, []
        header = parse_header(self._enc.decode(tokens))
        if header.has_channel and not header.channel:
            raise ValueError("a message header has an empty channel")
        self._open(header, out)

    def _headerless(self, out: list[MessageStart | Delta]) -> None:
        """The message ended (or the turn stopped) before any ``<|message|>``."""
        tokens, self._header = self._header, []
        text = self._enc.decode(tokens)
        final = _final_in_header(text)
        if final is not None:
            content_type, body = final
            role = parse_header(text.partition("<|channel|>")[0]).role
            self._open(Header(role, "final", None, content_type, True), out)
            for t in encode_text(self._enc, body):
                self._content(t, out)
        elif "<|channel|>" in text:
            header = parse_header(text)
            self._open(header, out, with_channel=bool(header.channel))
        else:  # plain text without a header: the message's content
            self._open(Header(None, None, None, None, False), out)
            for t in tokens:
                self._content(t, out)

    def _step(self, token: int, out: list[MessageStart | Delta]) -> None:
        if token == ENDOFTEXT:
            # the model's end of sequence (an end-of-generation id of gpt-oss GGUFs, which
            # llama.cpp stops on): it ends the open message and the turn, as <|return|> does
            token = RETURN
        state = self._state
        if state == _CONTENT:
            self._content(token, out)
        elif state == _HEADER:
            if token == MESSAGE:
                self._open_held(out)
            elif token in _ENDS:
                if not self._header:  # `<|start|><|end|>`, or a turn of only a stop token
                    if not self._first:
                        self._notes.append("skipped an empty message")
                    self._state = _BETWEEN if token == END else _DONE
                    return
                self._headerless(out)
                self._content(token, out)
            elif token == START:
                if self._header:
                    self._notes.append("skipped text before a <|start|>")
                self._header = []
            else:
                self._header.append(token)
        elif state == _BETWEEN:
            if token == START:
                self._state = _HEADER
            elif token == RETURN or token == CALL:
                # `<|end|><|return|>`: a stop token right after a complete message (a known
                # gpt-oss/fine-tune artefact). The message is whole; the stop ends the turn.
                self._state = _DONE
            elif token == END:
                self._notes.append("skipped a doubled <|end|>")
            else:  # no <|start|>: re-sync on what follows
                self._notes.append("a message without <|start|> was read as the assistant's")
                self._state = _HEADER
                self._header = [token]
        else:
            raise ValueError("the model wrote on after its stop token")

    def feed(self, token: int) -> list[MessageStart | Delta]:
        """Process one sampled id; returns what became visible."""
        out: list[MessageStart | Delta] = []
        if self.error is not None:
            return out
        if type(token) is not int or not 0 <= token < VOCAB_SIZE:
            self.error = (
                f"token id {token!r} is not in the gpt-oss vocabulary (0 to {VOCAB_SIZE - 1}); "
                "the engine sent an id the model cannot have sampled"
            )
            return out
        try:
            self._step(token, out)
        except BaseException as exc:  # harmony's errors and panics included
            if not third_party_error(exc):
                raise
            self.error = f"{type(exc).__name__}: {exc}"
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
            if self._state == _HEADER and self._header:
                self._headerless(out)
            self._parser.process_eos()
        except BaseException as exc:
            if not third_party_error(exc):
                raise
            self.error = f"{type(exc).__name__}: {exc}"
        return out
