"""A pure server-sent-events framer: bytes in, the events' ``data`` payloads out.

No I/O and no timers: the HTTP engine feeds it what each network read returned and decides
what the payloads mean. Linear in the bytes fed: each read is searched once for its last line end,
and only the unfinished line is kept, so a 16 MiB line that arrives in many reads costs what
16 MiB of small lines cost. A line longer than ``max_line`` raises :class:`SSELineTooLong` instead of growing the
buffer without end.

Per the SSE format: lines end in CRLF, LF or CR; ``data:`` lines of one event are joined with
``\\n``; a blank line ends the event; lines starting with ``:`` are comments (keep-alives)
and, like the ``event``/``id``/``retry`` fields, carry no payload.

Example::

    from harmony_agent.engine._sse import SSEFramer

    framer = SSEFramer()
    assert framer.feed(b'data: {"a": 1}\\n\\n: keep-alive\\n\\ndata: [DO') == ['{"a": 1}']
    assert framer.feed(b"NE]\\n\\n") == ["[DONE]"]
    assert framer.close() == []
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_LINE", "SSEFramer", "SSELineTooLong"]

#: Longest line accepted by default. A chunk of a few token ids is a few hundred bytes.
DEFAULT_MAX_LINE = 4 * 1024 * 1024


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
        self._buffer = bytearray()  # the line being read (no line end in it)
        self._after_cr = False  # the last feed ended on CR: a leading LF belongs to it
        self._data: list[bytes] = []  # the data lines of the event being read
        self._data_size = 0

    def feed(self, data: bytes) -> list[str]:
        """The payloads of the events that ``data`` completed, in order."""
        if self._after_cr and data[:1] == b"\n":
            data = data[1:]
        self._after_cr = False
        # Only ``data`` is searched for the last line end: what is buffered holds none.
        end = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if end < 0:
            self._buffer += data
            if len(self._buffer) > self.max_line:
                raise SSELineTooLong(self.max_line)
            return []
        complete = bytes(self._buffer) + data[: end + 1] if self._buffer else data[: end + 1]
        self._buffer = bytearray(data[end + 1 :])
        if len(self._buffer) > self.max_line:
            raise SSELineTooLong(self.max_line)
        self._after_cr = end == len(data) - 1 and data[end:] == b"\r"
        payloads: list[str] = []
        for line in complete.splitlines():  # CRLF, LF or CR
            if line.startswith(b"data"):
                self._data_line(line)
            elif not line:  # a blank line ends the event
                if self._data:
                    payloads.append(b"\n".join(self._data).decode("utf-8", errors="replace"))
                    self._data = []
                    self._data_size = 0
            # else: a comment (``:`` — servers send these as keep-alives), or an event / id /
            # retry field: nothing to deliver
        return payloads

    def close(self) -> list[str]:
        """End of stream: an event whose blank line never came is still delivered."""
        tail = b"\n\n" if self._buffer else b"\n"
        self._after_cr = False
        return self.feed(tail)

    def _data_line(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if name != b"data":
            return  # a field whose name only starts with "data"
        if colon and value.startswith(b" "):
            value = value[1:]
        self._data.append(value)
        self._data_size += len(value) + 1
        if self._data_size > self.max_line:  # one event of many data lines: the same cap
            raise SSELineTooLong(self.max_line)
