"""``harmony-agent replay`` as a CI gate: each changed call with a diff, ``--json`` with a
summary line, and ``--check`` exiting 1 when a tool output differs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

REPLIES = [
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":1,"b":2}<|call|>',
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":3,"b":4}<|call|>',
    "<|channel|>final<|message|>3 and 7.<|return|>",
]

TOOLS = '''
from harmony_agent import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
'''

CHANGED = '''
from harmony_agent import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers (wrongly for a above 2)."""
    return a + b + (a > 2)
'''


def cli(workdir, *args):
    return subprocess.run(
        [sys.executable, "-m", "harmony_agent", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def recorded(tmp_path):
    (tmp_path / "replies.json").write_text(json.dumps(REPLIES))
    (tmp_path / "mytools.py").write_text(TOOLS)
    (tmp_path / "changed.py").write_text(CHANGED)
    proc = cli(
        tmp_path,
        "run",
        "sums",
        "--engine",
        "scripted:replies.json",
        "--no-browser",
        "--no-python",
        "--tools",
        "mytools:add",
        "--trace",
        "run.jsonl",
    )
    assert proc.returncode == 0, proc.stderr
    return tmp_path


def replay(workdir, tools, *flags):
    return cli(
        workdir, "replay", "run.jsonl", "--no-browser", "--no-python", "--tools", tools, *flags
    )


def test_unchanged_tools_pass_the_check(recorded):
    proc = replay(recorded, "mytools:add", "--check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "3 and 7.\n"
    assert "replayed 2 tool calls; 0 outputs differ from the trace" in proc.stderr


def test_a_changed_output_is_shown_as_a_diff_and_fails_the_check(recorded):
    proc = replay(recorded, "changed:add", "--check")
    assert proc.returncode == 1
    err = proc.stderr.splitlines()
    header = next(line for line in err if line.startswith("--- recorded call 1"))
    assert "(functions.add, turn 1, id " in header
    at = err.index(header)
    assert err[at + 1 : at + 5] == ["+++ replayed", "@@ -1 +1 @@", "-7", "+8"]
    assert "replayed 2 tool calls; 1 outputs differ from the trace" in proc.stderr
    assert err[-1] == "harmony-agent: replay --check: 1 of 2 tool outputs differ from the trace"
    # without --check the replay reports the same and exits 0
    plain = replay(recorded, "changed:add")
    assert plain.returncode == 0 and "-7" in plain.stderr.splitlines()


def test_json_ends_with_a_replay_summary(recorded):
    proc = replay(recorded, "changed:add", "--json", "--check")
    assert proc.returncode == 1
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records[-2]["type"] == "run_finished"
    summary = records[-1]
    assert summary["type"] == "replay_summary" and summary["finished"] is True
    assert (summary["replayed_calls"], summary["changed"]) == (2, 1)
    (change,) = summary["changes"]
    assert (change["index"], change["turn"], change["recipient"]) == (1, 1, "functions.add")
    assert (change["recorded"], change["replayed"]) == ("7", "8")
    trace = [json.loads(line) for line in (recorded / "run.jsonl").read_text().splitlines()]
    calls = [
        r["event"]["call_id"] for r in trace if r.get("event", {}).get("type") == "tool_result"
    ]
    assert change["call_id"] == calls[1]
    assert "-7\n+8" in change["diff"]


def test_a_tool_gone_since_the_recording_changes_every_call(recorded):
    (recorded / "none.py").write_text("TOOLS = []\n")
    proc = replay(recorded, "none:TOOLS", "--check")
    assert proc.returncode == 1
    assert proc.stderr.count("--- recorded call") == 2
    assert "(the text is the same" not in proc.stderr and "+there is no tool named" in proc.stderr
    assert "2 outputs differ" in proc.stderr
