"""JSON the model wrote (tool arguments, answers), parsed with limits. Pure, no I/O.

``json.loads`` on model output can raise things no caller expects: a 5,000-digit integer
is a ``ValueError`` (Python's int-string limit), 1,200 nested arrays a ``RecursionError``,
and JSON nested a few hundred deep parses but then breaks whatever walks it later (schema
validation, traces, events). :func:`loads` refuses such input up front with
:class:`JSONLimitError`, whose message says what to send instead, and replaces lone UTF-16
surrogates (``"\\ud83d"``), which no UTF-8 file or stream can carry, with U+FFFD.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "JSONLimitError", "loads"]

#: Deepest nesting of arrays and objects accepted.
MAX_DEPTH = 64
#: Most digits in one integer literal.
MAX_DIGITS = 300

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class JSONLimitError(ValueError):
    """The JSON is well-formed or nearly so, but past a limit; the message says which."""


def _depth(text: str) -> int:
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _int(literal: str, max_digits: int) -> int:
    if len(literal.lstrip("-")) > max_digits:
        raise JSONLimitError(
            f"an integer has {len(literal.lstrip('-'))} digits (at most {max_digits} are "
            "accepted); send large numbers as strings"
        )
    return int(literal)


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise JSONLimitError(f"the number {literal[:40]} is out of range; send it as a string")
    return value


def _constant(name: str) -> float:
    raise JSONLimitError(f"{name} is not JSON; send a number or null")


def _clean(value: Any) -> Any:
    """Lone surrogates → U+FFFD, in keys and strings (depth already bounded)."""
    if isinstance(value, str):
        # json joins escaped pairs into one character: a surrogate left in a string is lone
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def loads(text: str, *, max_depth: int = MAX_DEPTH, max_digits: int = MAX_DIGITS) -> Any:
    """Parse ``text`` as JSON within the limits.

    Raises ``json.JSONDecodeError`` for malformed JSON and :class:`JSONLimitError` for
    nesting deeper than ``max_depth``, integers longer than ``max_digits`` and non-finite
    numbers.
    """
    depth = _depth(text)
    if depth > max_depth:
        raise JSONLimitError(
            f"the JSON is nested {depth} levels deep (at most {max_depth} are accepted); "
            "send a flatter structure"
        )
    try:
        value = json.loads(
            text,
            parse_int=lambda s: _int(s, max_digits),
            parse_float=_float,
            parse_constant=_constant,
        )
    except RecursionError:  # unbalanced brackets can still nest past the count above
        raise JSONLimitError(
            f"the JSON is nested too deeply (at most {max_depth} levels are accepted)"
        ) from None
    if _SURROGATE_ESCAPE.search(text):
        value = _clean(value)
    return value
