"""parse_header on its own: each tolerated header malformation → the header it means."""

from __future__ import annotations

import pytest
from harmony_agent._parse import Header, parse_header

CALL = Header(None, "commentary", "functions.add", "<|constrain|>json", True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "<|channel|>commentary to=functions.add <|constrain|>json", CALL, id="canonical"
        ),
        pytest.param(
            "<|channel|>commentary? to=functions.add <|constrain|>json", CALL, id="stray-?"
        ),
        pytest.param(
            "<|channel|>analysis??", Header(None, "analysis", None, None, True), id="stray-??"
        ),
        pytest.param(
            "<|channel|>commentary to=functions.add <|constrain|> json", CALL, id="constrain-space"
        ),
        pytest.param(
            "<|channel|>commentary to=functions.add<|constrain|>json", CALL, id="constrain-glued"
        ),
        pytest.param(
            " to=functions.add<|channel|>commentary <|constrain|>json",
            CALL,
            id="recipient-before-channel",
        ),
        pytest.param(
            "<|channel|>commentary to=functions.add <|constrain|>",
            CALL,
            id="constrain-without-type-means-json",
        ),
        pytest.param(
            "<|channel|>commentary to=functions.add code json",
            Header(None, "commentary", "functions.add", "json", True),
            id="extra-words-last-is-content-type",
        ),
        pytest.param(
            "<|channel|>commentary<|channel|>commentary to=functions.add json",
            Header(None, "commentary", "functions.add", "json", True),
            id="doubled-channel",
        ),
        pytest.param(
            "<|channel|>final json",
            Header(None, "final", None, "json", True),
            id="final-json-is-a-content-type",
        ),
        pytest.param(
            "<|channel|>final <|constrain|>json",
            Header(None, "final", None, "<|constrain|>json", True),
            id="final-constrain-json-is-a-content-type",
        ),
    ],
)
def test_first_message_headers(text, expected):
    assert parse_header(text) == expected


def test_a_later_message_keeps_its_role():
    # every message after the turn's first starts with its role
    assert parse_header("assistant to=functions.add<|channel|>commentary <|constrain|>json") == (
        CALL._replace(role="assistant")
    )
    assert parse_header("assistant<|channel|>final") == Header(
        "assistant", "final", None, None, True
    )


@pytest.mark.parametrize("text", ["", "assistant"])
def test_a_header_without_a_channel_has_none(text):
    header = parse_header(text)
    assert header.channel is None and header.recipient is None and not header.has_channel
