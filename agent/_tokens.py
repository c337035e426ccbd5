"""The Harmony special-token ids of gpt-oss (o200k_harmony), defined once.

Every package imports them from here: the parser, the renderer, the engines. A leaf module:
it imports nothing of the project, so anything may import it without a cycle.
"""

from __future__ import annotations

__all__ = [
    "CALL",
    "CHANNEL",
    "CONSTRAIN",
    "DEFAULT_STOP_TOKEN_IDS",
    "END",
    "ENDOFTEXT",
    "FINAL_WORD",
    "MESSAGE",
    "MODEL_STOP_TOKEN_IDS",
    "RETURN",
    "START",
    "STOP_STRINGS",
    "VOCAB_SIZE",
]

ENDOFTEXT = 199999  # <|endoftext|>: the model's end-of-sequence id
RETURN = 200002  # <|return|>: the final answer is complete
CONSTRAIN = 200003  # <|constrain|>: a content type follows in the header
CHANNEL = 200005  # <|channel|>
START = 200006  # <|start|>: a message header begins
END = 200007  # <|end|>: a message is complete (more may follow)
MESSAGE = 200008  # <|message|>: the header ends, content begins
CALL = 200012  # <|call|>: a tool call is complete
FINAL_WORD = 17196  # "final": the final channel's name, one ordinary token

#: gpt-oss's vocabulary size (its ``vocab_size``): every id a model samples is in [0, VOCAB_SIZE).
VOCAB_SIZE = 201088

#: What the runtime stops generation on: the end of a final answer and of a tool call.
DEFAULT_STOP_TOKEN_IDS: tuple[int, ...] = (RETURN, CALL)
#: Every id that ends a gpt-oss generation (the model's own end-of-sequence id included).
MODEL_STOP_TOKEN_IDS: tuple[int, ...] = (RETURN, CALL, ENDOFTEXT)
#: The stop tokens as text, for servers that take stop strings instead of ids.
STOP_STRINGS: dict[str, int] = {"<|return|>": RETURN, "<|call|>": CALL}
