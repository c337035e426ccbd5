"""The CLI end to end in a subprocess: answer on stdout, activity on stderr, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

REPLIES = [
    "<|channel|>analysis<|message|>I should add.<|end|><|start|>assistant"
    '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
    "<|channel|>final<|message|>**5**<|return|>",
]

TOOLS = '''
from harmony_agent import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()
'''


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "replies.json").write_text(json.dumps(REPLIES))
    (tmp_path / "mytools.py").write_text(TOOLS)
    (tmp_path / "one.json").write_text(json.dumps(REPLIES[:1]))
    (tmp_path / "bad.json").write_text(json.dumps({"replies": [1, 2]}))
    return tmp_path


def cli(workdir, *args):
    return subprocess.run(
        [sys.executable, "-m", "harmony_agent", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plain_run_prints_the_answer_on_stdout(workdir):
    proc = cli(
        workdir, "run", "2+3?", "--engine", "scripted:replies.json", "--tools", "mytools:add"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "**5**\n"
    assert "I should add." in proc.stderr  # reasoning, dimmed, on stderr
    assert "functions.add" in proc.stderr and "✓" in proc.stderr
    assert "2 turns" in proc.stderr and "$" in proc.stderr


def test_json_prints_one_event_per_line(workdir):
    proc = cli(
        workdir,
        "run",
        "2+3?",
        "--engine",
        "scripted:replies.json",
        "--tools",
        "mytools.py:add",
        "--effort",
        "high",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    call = next(e for e in events if e["type"] == "tool_call")
    assert call["arguments"] == {"a": 2, "b": 3}
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["output"] == "5" and result["ok"] is True
    assert events[-1]["final_text"] == "**5**"


def test_plain_functions_are_wrapped_as_tools(workdir):
    (workdir / "r.json").write_text(
        json.dumps(
            [
                '<|channel|>commentary to=functions.shout <|constrain|>json<|message|>{"text":"hi"}<|call|>',
                "<|channel|>final<|message|>done<|return|>",
            ]
        )
    )
    proc = cli(
        workdir, "run", "x", "--engine", "scripted:r.json", "--tools", "mytools:shout", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert '"output": "HI"' in proc.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--engine", "scripted:missing.json"], 2, "does not exist"),
        (["--engine", "scripted:replies.json", "--tools", "nope:x"], 2, "cannot import nope"),
        (
            ["--engine", "scripted:replies.json", "--tools", "mytools:missing"],
            2,
            "no attribute 'missing'",
        ),
        (["--engine", "scripted:replies.json", "--tools", "mytools"], 2, "expected MODULE:ATTR"),
        # the scripted model calls add, then the script runs out of replies
        (["--engine", "scripted:one.json", "--tools", "mytools:add"], 1, "ScriptExhaustedError"),
        (["--engine", "scripted:bad.json"], 2, "must hold a JSON list of strings"),
    ],
)
def test_errors_are_one_line_and_non_zero(workdir, args, code, message):
    proc = cli(workdir, "run", "2+3?", *args)
    assert proc.returncode == code
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("harmony-agent: ") and message in last
    assert proc.stdout == ""


def test_help_lists_every_option(workdir):
    proc = cli(workdir, "run", "--help")
    assert proc.returncode == 0
    for option in (
        "--engine",
        "--tools",
        "--effort",
        "--json",
        "--max-turns",
        "--model",
        "--api-key-env",
        "--instructions",
    ):
        assert option in proc.stdout


def test_trace_resume_replay_and_view(workdir):
    (workdir / "two.json").write_text(json.dumps(REPLIES[:1]))
    (workdir / "rest.json").write_text(json.dumps(REPLIES[1:]))
    # the first attempt dies when the engine runs out after the tool step
    proc = cli(
        workdir,
        "run",
        "2+3?",
        "--engine",
        "scripted:two.json",
        "--tools",
        "mytools:add",
        "--trace",
        "run.jsonl",
    )
    assert proc.returncode == 1
    proc = cli(
        workdir, "resume", "run.jsonl", "--engine", "scripted:rest.json", "--tools", "mytools:add"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "**5**\n" and "resuming run" in proc.stderr
    proc = cli(workdir, "replay", "run.jsonl", "--tools", "mytools:add")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "**5**\n"
    assert "replayed 1 tool calls; 0 outputs differ" in proc.stderr
    proc = cli(workdir, "trace", "view", "run.jsonl", "-o", "report.html")
    assert proc.returncode == 0, proc.stderr
    page = (workdir / "report.html").read_text()
    assert "functions.add" in page and "<details" in page


def test_resume_of_a_finished_run_and_a_missing_trace(workdir):
    proc = cli(
        workdir,
        "run",
        "2+3?",
        "--engine",
        "scripted:replies.json",
        "--tools",
        "mytools:add",
        "--trace",
        "done.jsonl",
    )
    assert proc.returncode == 0
    proc = cli(workdir, "resume", "done.jsonl", "--engine", "scripted:replies.json")
    assert proc.returncode == 2 and "already finished" in proc.stderr
    proc = cli(workdir, "trace", "view", "nope.jsonl")
    assert proc.returncode == 2 and "does not exist" in proc.stderr.strip().splitlines()[-1]


def test_chat_keeps_the_conversation(workdir):
    (workdir / "chat.json").write_text(
        json.dumps(
            [
                "<|channel|>analysis<|message|>private<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>",
                "<|channel|>final<|message|>You said hi before.<|return|>",
            ]
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "harmony_agent", "chat", "--engine", "scripted:chat.json", "--json"],
        cwd=workdir,
        input="hi\nwhat did I say?\n\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    finals = [
        json.loads(x)["final_text"]
        for x in proc.stdout.splitlines()
        if json.loads(x)["type"] == "run_finished"
    ]
    assert finals == ["Hello!", "You said hi before."]


@pytest.mark.parametrize(
    "command", [["run"], ["chat"], ["resume"], ["replay"], ["trace", "view"], []]
)
def test_every_command_has_help(workdir, command):
    proc = cli(workdir, *command, "--help")
    assert proc.returncode == 0 and "usage: harmony-agent" in proc.stdout


def test_builtin_tools_are_declared_unless_disabled(workdir):
    (workdir / "final.json").write_text(json.dumps(["<|channel|>final<|message|>ok<|return|>"]))
    with_tools = cli(workdir, "run", "x", "--engine", "scripted:final.json", "--json")
    assert with_tools.returncode == 0, with_tools.stderr
    started = json.loads(with_tools.stdout.splitlines()[0])
    assert {"browser.search", "browser.open", "browser.find", "python"} <= set(started["tools"])
    without = cli(
        workdir,
        "run",
        "x",
        "--engine",
        "scripted:final.json",
        "--json",
        "--no-browser",
        "--no-python",
    )
    assert json.loads(without.stdout.splitlines()[0])["tools"] == []
    bad = cli(workdir, "run", "x", "--engine", "scripted:final.json", "--search-dir", "nope")
    assert bad.returncode == 2 and "--search-dir" in bad.stderr


@pytest.mark.browser
def test_cli_browses_with_local_search(workdir):
    site = workdir / "site"
    site.mkdir()
    (site / "page.html").write_text(
        "<html><head><meta charset=utf-8><title>Otters</title></head>"
        "<body><p>Sea otters hold hands while they sleep.</p></body></html>"
    )
    (workdir / "browse.json").write_text(
        json.dumps(
            [
                '<|channel|>analysis to=browser.search code<|message|>{"query": "otters sleep"}<|call|>',
                "<|channel|>final<|message|>They hold hands.<|return|>",
            ]
        )
    )
    proc = cli(
        workdir,
        "run",
        "x",
        "--engine",
        "scripted:browse.json",
        "--no-python",
        "--json",
        "--search-dir",
        "site",
        "--search-base-url",
        "http://otters.example/",
    )
    assert proc.returncode == 0, proc.stderr
    result = next(json.loads(x) for x in proc.stdout.splitlines() if '"tool_result"' in x)
    assert "【0†Otters†otters.example】" in result["output"]


SLOW_TOOLS = '''
import time
from pathlib import Path
from harmony_agent import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    Path("started").touch()
    time.sleep(60)
    return a + b
'''


def test_ctrl_c_mid_run_keeps_the_trace_resumable(workdir):
    import signal
    import time

    (workdir / "slowtools.py").write_text(SLOW_TOOLS)
    args = ["run", "2+3?", "--engine", "scripted:one.json", "--tools", "slowtools:add"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harmony_agent", *args, "--trace", "run.jsonl"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (workdir / "started").exists():  # the tool is running: Ctrl-C now
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("harmony-agent: interrupted")
    assert stdout == ""
    # what completed before the interrupt is on disk; the interrupted tool step is not, so
    # resume goes on from the last complete step (here: the start of the run)
    records = [json.loads(line) for line in (workdir / "run.jsonl").read_text().splitlines()]
    kinds = [r.get("event", {}).get("type", r["record"]) for r in records]
    assert kinds[0] == "header" and "turn_finished" in kinds and "tool_result" not in kinds
    proc2 = cli(
        workdir,
        "resume",
        "run.jsonl",
        "--engine",
        "scripted:replies.json",
        "--tools",
        "mytools:add",
    )
    assert proc2.returncode == 0, proc2.stderr
    assert proc2.stdout == "**5**\n" and "resuming run" in proc2.stderr


def test_run_refuses_a_used_trace_path_unless_forced(workdir):
    args = ("run", "2+3?", "--engine", "scripted:replies.json", "--tools", "mytools:add")
    args += ("--trace", "run.jsonl")
    assert cli(workdir, *args).returncode == 0
    proc = cli(workdir, *args)
    assert proc.returncode == 2
    assert "already holds run" in proc.stderr and "--force" in proc.stderr
    proc = cli(workdir, *args, "--force")
    assert proc.returncode == 0, proc.stderr
    proc = cli(workdir, "replay", "run.jsonl", "--tools", "mytools:add")
    assert proc.returncode == 0, proc.stderr  # one run in the file: replay reads it
