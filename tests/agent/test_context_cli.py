"""The CLI's context options: --max-reasoning-tokens, --context-window, --no-compaction."""

from __future__ import annotations

import json
import subprocess
import sys

LONG = "<|channel|>analysis<|message|>" + " ".join(["thinking hard"] * 200)
TOOLS = '''
from harmony_agent import tool

@tool
def dump() -> str:
    """A long output."""
    return " ".join(f"w{i}" for i in range(150))
'''


def cli(workdir, *args):
    return subprocess.run(
        [sys.executable, "-m", "harmony_agent", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_max_reasoning_tokens_makes_the_model_answer(tmp_path):
    (tmp_path / "replies.json").write_text(json.dumps([LONG, "Forty-two.<|return|>"]))
    proc = cli(
        tmp_path, "run", "Think.", "--engine", "scripted:replies.json",
        "--max-reasoning-tokens", "30", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    (forced,) = [e for e in events if e["type"] == "forced_tokens"]
    assert forced["reason"] == "max_reasoning_tokens"
    assert events[-1]["type"] == "run_finished" and events[-1]["final_text"] == "Forty-two."
    plain = cli(
        tmp_path, "run", "Think.", "--engine", "scripted:replies.json",
        "--max-reasoning-tokens", "30",
    )  # fmt: skip
    assert plain.stdout == "Forty-two.\n"
    assert "max_reasoning_tokens reached" in plain.stderr


def test_context_window_and_no_compaction(tmp_path):
    call = "<|channel|>commentary to=functions.dump <|constrain|>json<|message|>{}<|call|>"
    (tmp_path / "replies.json").write_text(
        json.dumps([call] * 5 + ["<|channel|>final<|message|>done<|return|>"])
    )
    (tmp_path / "mytools.py").write_text(TOOLS)
    args = ["run", "go", "--engine", "scripted:replies.json", "--tools", "mytools:dump"]
    proc = cli(tmp_path, *args, "--context-window", "2000", "--no-compaction")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "context window 2000, with compaction off" in last
    assert "tool output: functions.dump" in last
    compacting = cli(tmp_path, *args, "--context-window", "2000", "--json")
    events = [json.loads(line) for line in compacting.stdout.splitlines()]
    assert any(e["type"] == "compacted" for e in events), compacting.stderr
    assert events[-1]["type"] == "run_finished" and events[-1]["final_text"] == "done"
