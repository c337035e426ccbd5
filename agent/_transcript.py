"""The append-only token transcript of a run.

One list of ids only ever grows. Each engine request gets a :class:`PromptView` of the first
``n`` ids — a read-only sequence, not a copy — so preparing the next turn costs what was
appended, however long the context already is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import overload

__all__ = ["PromptView", "Transcript"]


class PromptView(Sequence[int]):
    """The first ``len(self)`` ids of a transcript, frozen at the time the view was taken."""

    __slots__ = ("_ids", "_n")

    def __init__(self, ids: list[int], n: int) -> None:
        self._ids = ids
        self._n = n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...
    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            return self._ids[: self._n][index]
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError("prompt index out of range")
        return self._ids[index]

    def __iter__(self) -> Iterator[int]:
        return islice(self._ids, self._n)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(other) == self._n and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def tolist(self) -> list[int]:
        return self._ids[: self._n]

    def __repr__(self) -> str:
        return f"PromptView(len={self._n})"


class Transcript:
    """Append-only ids: ``extend`` to add, ``view()`` for the prompt as it stands now."""

    __slots__ = ("_ids",)

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._ids = list(ids)

    def __len__(self) -> int:
        return len(self._ids)

    def extend(self, ids: Iterable[int]) -> None:
        self._ids.extend(ids)

    def view(self) -> PromptView:
        return PromptView(self._ids, len(self._ids))
