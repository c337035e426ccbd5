from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The tiny random gpt-oss with planted chains, built once per session (never committed)."""
    from harmony_agent._encoding import load_encoding

    from .tiny_gptoss import build, chains

    enc = load_encoding()
    return build(
        tmp_path_factory.mktemp("tiny-gptoss"),
        chains(lambda s: enc.encode(s, allowed_special="all")),
    )
