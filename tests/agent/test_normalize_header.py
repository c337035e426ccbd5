"""normalize_header on its own: each tolerated header malformation → the canonical header."""

from __future__ import annotations

import pytest
from harmony_agent._parse import normalize_header

CANONICAL = "<|channel|>commentary to=functions.add <|constrain|>json"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(CANONICAL, CANONICAL, id="canonical-unchanged"),
        pytest.param(
            "<|channel|>commentary? to=functions.add <|constrain|>json", CANONICAL, id="stray-?"
        ),
        pytest.param("<|channel|>analysis??", "<|channel|>analysis", id="stray-??-no-recipient"),
        pytest.param(
            "<|channel|>commentary to=functions.add <|constrain|> json",
            CANONICAL,
            id="constrain-space-json",
        ),
        pytest.param(
            "<|channel|>commentary to=functions.add<|constrain|>json",
            CANONICAL,
            id="constrain-glued-to-recipient",
        ),
        pytest.param(
            " to=functions.add<|channel|>commentary <|constrain|>json",
            CANONICAL,
            id="recipient-before-channel",
        ),
        pytest.param(
            "<|channel|>commentary to=functions.add <|constrain|>",
            CANONICAL,
            id="constrain-without-type-means-json",
        ),
        pytest.param(
            "<|channel|>commentary to=functions.add code json",
            "<|channel|>commentary to=functions.add json",
            id="extra-words-last-is-content-type",
        ),
        pytest.param(
            "<|channel|>commentary<|channel|>commentary to=functions.add json",
            "<|channel|>commentary to=functions.add json",
            id="doubled-channel",
        ),
    ],
)
def test_first_message_headers(header, expected):
    assert normalize_header(header) == expected


def test_a_later_message_keeps_its_role():
    # every message after the turn's first starts with its role
    assert normalize_header(
        "assistant to=functions.add<|channel|>commentary <|constrain|>json"
    ) == ("assistant<|channel|>commentary to=functions.add <|constrain|>json")
    assert normalize_header("assistant<|channel|>final") == "assistant<|channel|>final"


@pytest.mark.parametrize("header", ["", "plain text with no header", "assistant"])
def test_a_header_without_a_channel_is_left_alone(header):
    assert normalize_header(header) == header


def test_normalizing_twice_changes_nothing_more():
    for header in (
        "<|channel|>commentary? to=functions.add<|constrain|> json",
        " to=browser.search<|channel|>analysis <|constrain|>json",
    ):
        once = normalize_header(header)
        assert normalize_header(once) == once
