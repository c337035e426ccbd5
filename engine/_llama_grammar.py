"""llama.cpp grammars (GBNF) that hold a gpt-oss final answer to a JSON schema.

llama.cpp constrains decoding with a GBNF grammar, optionally *lazy*: sampling stays free
until a trigger pattern matches the generated text, then the tokens from the start of the
match are replayed into the grammar and it holds everything after. So the grammar's root is
the final-channel header followed by the JSON, and the trigger is that header:

- **trigger**: a regular expression matching any of the header forms gpt-oss writes before a
  JSON answer (``<|channel|>final<|message|>``, ``… final json<|message|>``, ``… final
  <|constrain|>json<|message|>``). It fires only once the whole header is written, so the
  header itself is sampled freely and a ``<|channel|>finalize`` or an analysis header never
  fires it. Harmony's special tokens render as their names in llama.cpp's token pieces, so
  the pattern sees ``<|channel|>`` as text.
- **root**: ``header json``; the JSON rules are llama.cpp's own conversion of the schema.
  Once the JSON is complete the grammar allows only end-of-generation tokens
  (``<|return|>``, ``<|call|>``, ``<|endoftext|>``).
- **no special tokens inside strings**: llama.cpp matches a special token by its piece
  (``<|end|>``, ``<|channel|>``, …), which a JSON string's characters would accept, and one
  sampled inside the answer ends or breaks the Harmony message. The string character rule is
  narrowed so that ``<|`` never appears raw in a string (``<`` stays allowed before anything
  but ``|``; the escape ``\\u003c`` is always allowed), and ``.`` in a ``pattern`` excludes ``<``.

A prompt that already ends in the final header gets the JSON grammar alone, not lazy (a
trigger sees only generated text).
"""

from __future__ import annotations

import re

from ._structured import FINAL_HEADERS

__all__ = [
    "FINAL_TRIGGER",
    "JSON_RULE",
    "final_answer_grammar",
    "harden_json_grammar",
]

_REGEX_SPECIAL = frozenset("\\^$.|?*+()[]{}")
#: an ECMAScript regular expression (llama.cpp's std::regex) matching a final-answer header
FINAL_TRIGGER = (
    "(?:"
    + "|".join(
        "".join("\\" + c if c in _REGEX_SPECIAL else c for c in header) for header in FINAL_HEADERS
    )
    + ")"
)
#: the rule the schema's JSON gets in a final-answer grammar (its own ``root`` renamed)
JSON_RULE = "harmony-final-json"

_ESCAPE = r'[\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})'
# one string character, where a "<" (or a run of them) is only ever followed by a character
# other than "|": no special-token piece fits, and "<" stays usable in text
_CHAR = (
    f'char ::= [^"\\\\\\x7F\\x00-\\x1F<] | {_ESCAPE} | '
    f'"<"+ ([^"\\\\\\x7F\\x00-\\x1F<|] | {_ESCAPE})'
)
_DOT = "dot ::= [^\\x0A\\x0D<]"
# GBNF lexemes: string literals, character classes, comments, then names
_LEXEME = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*|[A-Za-z0-9_-]+')


def _literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def harden_json_grammar(gbnf: str) -> str:
    """A JSON grammar from llama.cpp's schema converter with its string characters narrowed
    so that no Harmony special token (``<|…|>``) can be sampled inside a JSON string."""
    if not re.search(r"(?m)^root ::=", gbnf):
        raise ValueError(f"not a GBNF grammar with a root rule: {gbnf[:200]!r}")
    gbnf = re.sub(r"(?m)^char ::= .*$", lambda _: _CHAR, gbnf)
    return re.sub(r"(?m)^dot ::= .*$", lambda _: _DOT, gbnf)


def final_answer_grammar(json_gbnf: str) -> str:
    """The lazy grammar's text: a final-answer header, then the JSON of ``json_gbnf`` (a
    hardened converter grammar whose ``root`` is the JSON value)."""
    if re.search(rf"(?m)^{JSON_RULE} ::=", json_gbnf):
        raise ValueError(f"the JSON grammar already defines {JSON_RULE}")

    def rename(match: re.Match[str]) -> str:
        return JSON_RULE if match.group(0) == "root" else match.group(0)

    body = _LEXEME.sub(rename, json_gbnf)  # the definition and any reference, never literals
    header = " | ".join(_literal(h) for h in FINAL_HEADERS)
    return f"root ::= ({header}) {JSON_RULE}\n{body}"
