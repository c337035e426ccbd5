"""The CLI's approval modes: --approve ask in a pseudo-terminal, --approve none then
`harmony-agent resume --approve / --reject`, and the usage-limit flags."""

from __future__ import annotations

import json
import subprocess
import sys

import pexpect
import pytest
from harmony_agent.trace import load_trace

CALL = (
    "<|channel|>analysis<|message|>I should add.<|end|><|start|>assistant"
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>'
)
FINAL = "<|channel|>final<|message|>The sum is 5.<|return|>"
DECLINED = "<|channel|>final<|message|>You declined, so I did not add.<|return|>"

TOOLS = '''
from pathlib import Path
from harmony_agent import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    with Path("ran.txt").open("a") as f:
        f.write(f"{a}+{b}\\n")
    return a + b
'''

BASE = ["--tools", "mytools:add", "--no-browser", "--no-python"]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "mytools.py").write_text(TOOLS)
    (tmp_path / "call.json").write_text(json.dumps([CALL, FINAL]))
    (tmp_path / "first.json").write_text(json.dumps([CALL]))
    (tmp_path / "final.json").write_text(json.dumps([FINAL]))
    (tmp_path / "declined.json").write_text(json.dumps([DECLINED]))
    return tmp_path


def cli(workdir, *args):
    return subprocess.run(
        [sys.executable, "-m", "harmony_agent", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ran(workdir) -> list[str]:
    path = workdir / "ran.txt"
    return path.read_text().splitlines() if path.exists() else []


def spawn(workdir, *args) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "harmony_agent", *args],
        cwd=str(workdir),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
        env={"PATH": "/usr/bin:/bin", "TERM": "dumb", "NO_COLOR": "1"},
    )


def test_approve_ask_shows_the_arguments_and_runs_on_yes(workdir):
    child = spawn(
        workdir, "run", "2+3?", "--engine", "scripted:call.json", *BASE, "--approve", "ask"
    )
    child.expect("approve functions.add")
    child.expect(r'"a": 2,\s+"b": 3')  # the arguments, shown before anything runs
    child.expect(r"run it\? \[y\]es / \[n\]o")
    assert ran(workdir) == []
    child.sendline("y")
    child.expect("The sum is 5.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert ran(workdir) == ["2+3"]


def test_approve_ask_declines_with_a_reason(workdir):
    (workdir / "call.json").write_text(json.dumps([CALL, DECLINED]))
    child = spawn(
        workdir,
        "run",
        "2+3?",
        "--engine",
        "scripted:call.json",
        *BASE,
        "--approve",
        "ask",
        "--json",
    )
    child.expect(r"run it\? ")
    child.sendline("not with my numbers")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and ran(workdir) == []
    events = [json.loads(line) for line in child.before.splitlines() if line.startswith("{")]
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["error_kind"] == "rejected" and "not with my numbers" in result["output"]


def test_approve_ask_needs_a_terminal(workdir):
    proc = cli(workdir, "run", "2+3?", "--engine", "scripted:call.json", *BASE, "--approve", "ask")
    assert proc.returncode == 2 and ran(workdir) == []
    assert "--approve ask needs a terminal" in proc.stderr


def test_approve_none_pauses_then_resume_approve(workdir):
    proc = cli(
        workdir, "run", "2+3?", "--engine", "scripted:first.json", *BASE, "--approve", "none",
        "--trace", "run.jsonl",
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "" and ran(workdir) == []
    trace = load_trace(workdir / "run.jsonl")
    (pending,) = trace.resume_state().pending
    assert f"harmony-agent resume run.jsonl --approve {pending.call_id}" in proc.stderr
    assert 'functions.add {"a": 2, "b": 3}' in proc.stderr
    paused_ids = trace.resume_state().prompt_ids

    proc = cli(workdir, "resume", "run.jsonl", "--engine", "scripted:final.json", *BASE,
               "--approve", pending.call_id)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "The sum is 5.\n" and ran(workdir) == ["2+3"]
    done = load_trace(workdir / "run.jsonl")
    assert done.finished and done.resumed == 1
    # the resumed turn's prompt extends the paused state's ids (the call was not re-sampled)
    turns = [e for e in done.events if e.type == "turn_finished"]
    assert len(turns) == 2
    step = done.steps[-1]
    assert step["output_ids"] == [] and step["prompt_len"] > len(paused_ids)


def test_approve_none_writes_a_trace_when_none_is_named(workdir):
    proc = cli(
        workdir, "run", "2+3?", "--engine", "scripted:first.json", *BASE, "--approve", "none"
    )
    assert proc.returncode == 3, proc.stderr
    (written,) = workdir.glob("harmony-agent-*.jsonl")
    assert f"harmony-agent resume {written.name} --approve" in proc.stderr


def test_resume_reject_with_a_reason(workdir):
    cli(workdir, "run", "2+3?", "--engine", "scripted:first.json", *BASE, "--approve", "none",
        "--trace", "run.jsonl")  # fmt: skip
    call_id = load_trace(workdir / "run.jsonl").resume_state().pending[0].call_id
    proc = cli(workdir, "resume", "run.jsonl", "--engine", "scripted:declined.json", *BASE,
               "--reject", f"{call_id}:use a calculator", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["error_kind"] == "rejected" and "use a calculator" in result["output"]
    assert ran(workdir) == []


def test_resume_of_a_paused_run_without_a_decision_or_with_a_wrong_id(workdir):
    cli(workdir, "run", "2+3?", "--engine", "scripted:first.json", *BASE, "--approve", "none",
        "--trace", "run.jsonl")  # fmt: skip
    call_id = load_trace(workdir / "run.jsonl").resume_state().pending[0].call_id
    proc = cli(workdir, "resume", "run.jsonl", "--engine", "scripted:final.json", *BASE)
    assert proc.returncode == 2
    assert (
        f"waiting for approval of {call_id}" in proc.stderr
        and f"--approve {call_id}" in proc.stderr
    )
    proc = cli(workdir, "resume", "run.jsonl", "--engine", "scripted:final.json", *BASE,
               "--approve", "other-9")  # fmt: skip
    assert proc.returncode == 2 and "name other-9, which the run is not waiting on" in proc.stderr
    proc = cli(workdir, "resume", "run.jsonl", "--engine", "scripted:final.json",
               "--tools", "mytools:add", "--no-browser", "--python", "--approve", call_id)  # fmt: skip
    assert proc.returncode == 2 and "saved by a different agent" in proc.stderr
    assert ran(workdir) == []


def test_usage_limit_flags(workdir):
    proc = cli(
        workdir, "run", "2+3?", "--engine", "scripted:call.json", *BASE, "--max-tool-calls", "0"
    )
    assert proc.returncode == 1
    assert "UsageLimitExceeded: usage limit max_tool_calls=0 reached" in proc.stderr
    assert "(--max-tool-calls)" in proc.stderr and ran(workdir) == []
    proc = cli(workdir, "run", "2+3?", "--engine", "scripted:call.json", *BASE,
               "--max-cost", "0.00000001")  # fmt: skip
    assert proc.returncode == 1 and "max_cost_usd" in proc.stderr and "(--max-cost)" in proc.stderr
