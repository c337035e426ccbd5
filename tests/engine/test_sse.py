"""The SSE framer alone: bytes in, payloads out, however the bytes are split."""

from __future__ import annotations

import pytest
from harmony_agent.engine._sse import SSEFramer, SSELineTooLong

STREAM = (
    b": connected\n\n"
    b'data: {"a": 1}\n\n'
    b"event: ping\nid: 7\nretry: 100\n\n"
    b"data: first\ndata: second\n\n"
    b"data:no-space\r\n\r\n"
    b"data: cr\r\r"
    b": keep-alive\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = ['{"a": 1}', "first\nsecond", "no-space", "cr", "[DONE]"]


def feed_all(framer, pieces):
    out = []
    for piece in pieces:
        out += framer.feed(piece)
    return out + framer.close()


def test_whole_stream():
    assert feed_all(SSEFramer(), [STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_any_split_gives_the_same_payloads(size):
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_all(SSEFramer(), pieces) == EXPECTED


def test_crlf_split_between_feeds_is_one_line_end():
    framer = SSEFramer()
    assert framer.feed(b"data: x\r") == []
    assert framer.feed(b"\n\r") == ["x"]  # LF ends the CR's line end; CR ends the event
    assert framer.feed(b"\n") == []  # the LF of that CRLF, not a second blank line
    assert framer.feed(b"data: y\n\n") == ["y"]


def test_vertical_tab_and_form_feed_are_not_line_ends():
    assert feed_all(SSEFramer(), [b"data: a\x0bb\x0cc\n\n"]) == ["a\x0bb\x0cc"]


def test_comments_only_give_nothing():
    assert feed_all(SSEFramer(), [b": keep-alive\n\n" * 100]) == []


def test_an_event_without_its_blank_line_is_delivered_at_the_end():
    framer = SSEFramer()
    assert framer.feed(b"data: tail") == []
    assert framer.close() == ["tail"]


def test_undecodable_bytes_are_replaced_not_raised():
    assert feed_all(SSEFramer(), [b"data: \xff\xfe\n\n"]) == ["\ufffd\ufffd"]


def test_a_line_over_the_cap_raises():
    framer = SSEFramer(max_line=1000)
    framer.feed(b"data: " + b"x" * 900)
    with pytest.raises(SSELineTooLong, match="passed 1000 bytes"):
        framer.feed(b"x" * 200)


def test_many_data_lines_of_one_event_share_the_cap():
    framer = SSEFramer(max_line=1000)
    with pytest.raises(SSELineTooLong):
        framer.feed(b"data: xxxxxxxxxx\n" * 200)


def test_a_long_line_under_the_cap_arrives_whole():
    framer = SSEFramer(max_line=1 << 20)
    line = b"data: " + b"y" * 500_000 + b"\n\n"
    pieces = [line[i : i + 4096] for i in range(0, len(line), 4096)]
    assert feed_all(framer, pieces) == ["y" * 500_000]


def test_the_buffer_holds_only_the_unfinished_line():
    # what makes it linear: complete lines leave the buffer on the feed that ends them
    framer = SSEFramer()
    framer.feed(b"data: 1\n\n" * 1000 + b"data: par")
    assert bytes(framer._buffer) == b"data: par"


def test_bad_cap():
    with pytest.raises(ValueError, match="max_line"):
        SSEFramer(max_line=0)
