"""A pure server-sent-events framer: bytes in, the events' ``data`` payloads out.

No I/O and no timers: the HTTP engine feeds it what each network read returned and decides
what the payloads mean. Linear in the bytes fed: each byte is scanned for a line end once,
and the buffer is trimmed once per feed, so a 16 MiB line costs what 16 MiB of small lines
cost. A line longer than ``max_line`` raises :class:`SSELineTooLong` instead of growing the
buffer without end.

Per the SSE format: lines end in CRLF, LF or CR; ``data:`` lines of one event are joined with
``\\n``; a blank line ends the event; lines starting with ``:`` are comments (keep-alives)
and, like the ``event``/``id``/``retry`` fields, carry no payload.

Example::

    framer = SSEFramer()
    assert framer.feed(b'data: {"a": 1}\\n\\n: keep-alive\\n\\ndata: [DO') == ['{"a": 1}']
    assert framer.feed(b"NE]\\n\\n") == ["[DONE]"]
    assert framer.close() == []
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_LINE", "SSEFramer", "SSELineTooLong"]

#: Longest line accepted by default. A chunk of a few token ids is a few hundred bytes.
DEFAULT_MAX_LINE = 4 * 1024 * 1024
_LINE_END = re.compile(rb"[\r\n]")


class SSELineTooLong(ValueError):
    """A line of the event stream passed the framer's ``max_line`` bytes."""

    def __init__(self, max_line: int) -> None:
        super().__init__(f"an event-stream line passed {max_line} bytes without ending")
        self.max_line = max_line


class SSEFramer:
    """Splits an event stream into the ``data`` payloads of its events, as text."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be >= 1, got {max_line}")
        self.max_line = max_line
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no line end
        self._data: list[bytes] = []  # the data lines of the event being read
        self._data_size = 0

    def feed(self, data: bytes) -> list[str]:
        """The payloads of the events that ``data`` completed, in order."""
        buffer = self._buffer
        buffer += data
        payloads: list[str] = []
        start = 0  # where the current line begins
        end = len(buffer)
        while True:
            found = _LINE_END.search(buffer, max(start, self._scanned), end)
            if found is None:
                break
            at = found.start()
            width = 1
            if buffer[at] == 0x0D:  # CR: a CRLF pair, or a lone CR
                if at + 1 == end:
                    break  # the LF may be in the next feed: decide then
                if buffer[at + 1] == 0x0A:
                    width = 2
            self._line(bytes(buffer[start:at]), payloads)
            start = at + width
        self._scanned = max(start, end - 1 if end and buffer[end - 1] == 0x0D else end)
        if start:
            del buffer[:start]  # once per feed: linear overall
            self._scanned -= start
        if len(buffer) > self.max_line:
            raise SSELineTooLong(self.max_line)
        return payloads

    def close(self) -> list[str]:
        """End of stream: an event whose blank line never came is still delivered."""
        payloads: list[str] = []
        if self._buffer:
            line = bytes(self._buffer).rstrip(b"\r")
            self._buffer.clear()
            self._scanned = 0
            self._line(line, payloads)
        self._line(b"", payloads)
        return payloads

    def _line(self, line: bytes, payloads: list[str]) -> None:
        if not line:  # a blank line ends the event
            if self._data:
                payloads.append(b"\n".join(self._data).decode("utf-8", errors="replace"))
                self._data = []
                self._data_size = 0
            return
        if line.startswith(b":"):
            return  # a comment: servers send these as keep-alives
        name, colon, value = line.partition(b":")
        if name != b"data":
            return  # event / id / retry (or an unknown field): nothing to deliver
        if colon and value.startswith(b" "):
            value = value[1:]
        self._data.append(value)
        self._data_size += len(value) + 1
        if self._data_size > self.max_line:  # one event of many data lines: the same cap
            raise SSELineTooLong(self.max_line)
