"""The turn parser on raw Harmony text: every tolerated form, streamed token by token and whole.

Each form runs through ``Agent.run`` on a ScriptedEngine (the real encoding and parser) with
chunks of one token and with the whole reply in one chunk, and must give the same result.
"""

from __future__ import annotations

import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent._parse import Header, TurnParser, parse_header
from harmony_agent._tokens import VOCAB_SIZE
from harmony_agent.engine import ScriptedEngine

FINAL = "<|channel|>final<|message|>done<|return|>"
CALL_BODY = '{"a":2,"b":3}'
STREAMS = pytest.mark.parametrize("chunk", [1, 10_000], ids=["token-by-token", "whole"])


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class _Unchecked(ScriptedEngine):
    """Token-id replies passed through as they are (no check of the ids)."""

    def __init__(self, replies, *, chunk_size):
        super().__init__(["placeholder"] * len(replies), chunk_size=chunk_size)
        enc = load_encoding()
        self.replies = [
            enc.encode(r, allowed_special="all") if isinstance(r, str) else list(r) for r in replies
        ]

    async def _reply_for(self, request):
        reply = self.replies[self._next]
        self._next += 1
        return list(reply)


def run(replies, chunk):
    engine = ScriptedEngine(replies, chunk_size=chunk)
    agent = Agent(tools=[add], engine=engine, conversation_start_date="2026-01-01")
    result = agent.run_sync("t")
    warnings = [e.message for e in result.events if e.type == "warning"]
    text = "".join(e.delta for e in result.events if e.type == "text_delta")
    return result, engine, warnings, text


# --- content types are never recipients ------------------------------------------------------

TYPED_FINALS = {
    "final-json": ('<|channel|>final json<|message|>{"answer": 1}<|return|>', "json"),
    "final-constrain-json": (
        '<|channel|>final <|constrain|>json<|message|>{"answer": 1}<|return|>',
        "<|constrain|>json",
    ),
    "final-constrain-space-json": (
        '<|channel|>final <|constrain|> json<|message|>{"answer": 1}<|return|>',
        "<|constrain|>json",
    ),
}


@STREAMS
@pytest.mark.parametrize("form", TYPED_FINALS)
def test_a_final_with_a_content_type_is_the_final_answer(form, chunk):
    reply, content_type = TYPED_FINALS[form]
    result, engine, warnings, text = run([reply], chunk)
    assert result.final_text == text == '{"answer": 1}'
    assert result.tool_calls == [] and warnings == [] and len(engine.requests) == 1
    final = result.messages[-1]
    assert (final.channel, final.recipient, final.content_type) == ("final", None, content_type)


@STREAMS
@pytest.mark.parametrize(
    "header, event",
    [
        ("commentary json", "preamble_delta"),
        ("commentary <|constrain|>json", "preamble_delta"),
        ("analysis something", "reasoning_delta"),
        ("analysis some more words", "reasoning_delta"),
    ],
)
def test_words_after_other_channels_are_a_content_type(header, event, chunk):
    reply = f"<|channel|>{header}<|message|>Thinking.<|end|><|start|>assistant" + FINAL
    result, engine, warnings, _ = run([reply], chunk)
    assert result.final_text == "done" and result.tool_calls == [] and warnings == []
    assert "".join(e.delta for e in result.events if e.type == event) == "Thinking."
    assert result.messages[-2].recipient is None
    assert len(engine.requests) == 1


@STREAMS
def test_a_call_keeps_its_content_type(chunk):
    reply = f"<|channel|>commentary to=functions.add json<|message|>{CALL_BODY}<|call|>"
    result, _, _, _ = run([reply, FINAL], chunk)
    (call,) = result.tool_calls
    assert call.ok and call.output == "5"
    msg = next(m for m in result.messages if m.recipient == "functions.add")
    assert msg.content_type == "json"


# --- a final answer written into the header --------------------------------------------------


@STREAMS
@pytest.mark.parametrize(
    "reply, answer",
    [
        ('<|channel|>final {"answer": 1}<|return|>', '{"answer": 1}'),
        ("<|channel|>finalTEXT<|return|>", "TEXT"),
        ('<|channel|>final json {"answer": 1}<|return|>', '{"answer": 1}'),
        (
            "<|channel|>commentary<|message|>Let me see.<|end|><|start|>assistant"
            '<|channel|>final {"answer": 1}<|return|>',
            '{"answer": 1}',
        ),
        (
            "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>finalTEXT<|return|>",
            "TEXT",
        ),
    ],
    ids=["json", "glued-text", "json-type", "after-preamble", "after-analysis"],
)
def test_a_final_answer_in_the_header_is_recovered(reply, answer, chunk):
    result, engine, warnings, text = run([reply], chunk)
    assert result.final_text == text == answer
    assert warnings == [] and len(engine.requests) == 1
    assert result.messages[-1].channel == "final"


# --- a missing role is the assistant's ---------------------------------------------------------


@STREAMS
@pytest.mark.parametrize(
    "reply",
    [
        f"<|start|>to=functions.add<|channel|>commentary json<|message|>{CALL_BODY}<|call|>",
        "<|channel|>analysis<|message|>Add.<|end|>"
        f"<|start|>to=functions.add<|channel|>commentary <|constrain|>json<|message|>{CALL_BODY}<|call|>",
        "<|channel|>analysis<|message|>Add.<|end|>"
        f"<|start|>assistantassistant<|channel|>commentary to=functions.add json<|message|>{CALL_BODY}<|call|>",
        f"<|start|>assistant<|channel|>commentary to=functions.add json<|message|>{CALL_BODY}<|call|>",
    ],
    ids=["first-message", "after-analysis", "assistantassistant", "scripted-start-assistant"],
)
def test_a_message_without_its_role_is_the_assistants_call(reply, chunk):
    result, engine, warnings, _ = run([reply, FINAL], chunk)
    (call,) = result.tool_calls
    assert call.ok, call.output
    assert call.recipient == "functions.add" and call.output == "5"
    assert warnings == [] and len(engine.requests) == 2


# --- salvage instead of re-sampling -------------------------------------------------------------

AFTER_ANALYSIS = "<|channel|>analysis<|message|>x<|end|>"


@STREAMS
@pytest.mark.parametrize(
    "reply, note",
    [
        ("<|channel|>final<|message|>The answer is 5.<|end|><|end|><|return|>", "doubled <|end|>"),
        (
            AFTER_ANALYSIS
            + "stray<|start|>assistant<|channel|>final<|message|>The answer is 5.<|return|>",
            "a message without <|start|>",
        ),
        (
            AFTER_ANALYSIS + "<|channel|>final<|message|>The answer is 5.<|return|>",
            "a message without <|start|>",
        ),
        (
            AFTER_ANALYSIS
            + "<|start|>stray<|start|>assistant<|channel|>final<|message|>The answer is 5.<|return|>",
            "skipped text before a <|start|>",
        ),
        (
            "<|channel|>final<|message|>The answer is 5.<|end|>"
            "<|start|>assistant<|channel|><|message|>junk<|return|>",
            "kept the complete final answer",
        ),
        (
            "<|channel|>final<|message|>The answer is 5.<|end|><|start|>assistant<|message|>",
            None,
        ),
    ],
    ids=[
        "end-end",
        "stray-text",
        "missing-start",
        "stray-then-start",
        "empty-channel",
        "cut-after-final",
    ],
)
def test_a_complete_final_answer_is_kept(reply, note, chunk):
    result, engine, warnings, _ = run([reply], chunk)
    assert result.final_text == "The answer is 5."
    assert len(engine.requests) == 1  # not sampled again
    if note is not None:
        (warning,) = warnings
        assert warning.startswith("salvaged: ") and note in warning


@STREAMS
@pytest.mark.parametrize(
    "reply",
    [
        AFTER_ANALYSIS + "<|start|><|start|>assistant<|channel|>commentary to=functions.add "
        f"json<|message|>{CALL_BODY}<|call|>",
        f"<|channel|>commentary to=functions.add json<|message|>{CALL_BODY}<|end|>"
        "<|start|>assistant<|channel|><|message|>junk<|call|>",
    ],
    ids=["doubled-start", "junk-after-call"],
)
def test_a_complete_call_is_kept_and_run(reply, chunk):
    result, engine, _, _ = run([reply, FINAL], chunk)
    (call,) = result.tool_calls
    assert call.ok and call.output == "5"
    assert result.final_text == "done" and len(engine.requests) == 2


@STREAMS
@pytest.mark.parametrize(
    "reply",
    [
        "<|channel|>final<|message|>The answer is 5.<|endoftext|>",
        "<|channel|>final<|message|>The answer is 5.<|end|><|endoftext|>",
        AFTER_ANALYSIS
        + "<|start|>assistant<|channel|>final<|message|>The answer is 5.<|endoftext|>",
    ],
    ids=["after-content", "after-end", "after-analysis"],
)
def test_endoftext_ends_the_answer_as_return_does(reply, chunk):
    # <|endoftext|> is an end-of-generation id of gpt-oss GGUFs (llama.cpp stops on it): the
    # message it ends is whole, with no stray special token in the answer's text
    result, engine, warnings, _ = run([reply], chunk)
    assert result.final_text == "The answer is 5."
    assert len(engine.requests) == 1 and warnings == []


@STREAMS
def test_nothing_usable_is_sampled_again(chunk):
    broken = AFTER_ANALYSIS + "<|start|>assistant<|channel|><|message|>junk<|return|>"
    result, engine, warnings, _ = run([broken, FINAL], chunk)
    assert result.final_text == "done" and len(engine.requests) == 2
    assert any("sampling the turn again" in w and "empty channel" in w for w in warnings)


@STREAMS
def test_an_id_outside_the_vocabulary_is_a_parse_error_not_a_crash(chunk):
    enc = load_encoding()
    # an unfinished header with an impossible id, cut by max_tokens (finish "length")
    cut = [*enc.encode("<|channel|>comment", allowed_special="all"), 2**40, VOCAB_SIZE]
    # ScriptedEngine refuses such ids at its edge (as every engine does); this one hands
    # them to the parser unchecked, as an engine with no edge check would.
    engine = _Unchecked([cut, FINAL], chunk_size=chunk)
    agent = Agent(tools=[add], engine=engine, conversation_start_date="2026-01-01")
    result = agent.run_sync("t")
    warnings = [e.message for e in result.events if e.type == "warning"]
    assert result.final_text == "done" and len(engine.requests) == 2
    assert any("not in the gpt-oss vocabulary" in w for w in warnings)


# --- the parser directly -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, header",
    [
        ("<|channel|>final json", Header(None, "final", None, "json", True)),
        (
            "<|channel|>final <|constrain|>json",
            Header(None, "final", None, "<|constrain|>json", True),
        ),
        ("<|channel|>analysis something", Header(None, "analysis", None, "something", True)),
        (
            "assistant to=functions.f<|channel|>commentary <|constrain|>json",
            Header("assistant", "commentary", "functions.f", "<|constrain|>json", True),
        ),
        (
            "to=functions.f<|channel|>commentary json",
            Header(None, "commentary", "functions.f", "json", True),
        ),
        (
            "assistantassistant<|channel|>commentary? to=functions.f<|constrain|>json",
            Header("assistant", "commentary", "functions.f", "<|constrain|>json", True),
        ),
        ("<|channel|>commentaryjson", Header(None, "commentary", None, "json", True)),
        ("<|channel|>", Header(None, None, None, None, True)),
    ],
)
def test_parse_header(text, header):
    assert parse_header(text) == header


def test_token_by_token_and_whole_give_the_same_messages():
    enc = load_encoding()
    replies = [
        reply
        for reply, _ in TYPED_FINALS.values()
        if isinstance(reply, str)  # every typed final, and a mixed turn
    ] + [
        AFTER_ANALYSIS
        + '<|channel|>commentary json<|message|>hm<|end|><|start|>assistant<|channel|>final {"a": 1}<|return|>'
    ]
    for reply in replies:
        ids = enc.encode(reply, allowed_special="all")
        one, whole = TurnParser(enc), TurnParser(enc)
        for t in ids:
            one.feed(t)
        whole.feed_many(ids)
        assert [m.to_dict() for m in one.messages] == [m.to_dict() for m in whole.messages]
        assert one.error is whole.error is None


@STREAMS
def test_a_turn_of_only_a_stop_token_is_an_empty_answer(chunk):
    result, _, warnings, _ = run(["<|return|>"], chunk)
    assert result.final_text == "" and result.messages[-1].author.role.value == "user"
    assert warnings == ["the model stopped without writing anything"]
