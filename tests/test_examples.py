"""Every example runs, offline, as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_function_calling():
    proc = run_example("function_calling.py")
    assert proc.returncode == 0, proc.stderr
    assert "functions.search_flights" in proc.stdout and '"seats_left":4' in proc.stdout
    assert "confirmation SK831-LOVELACE" in proc.stdout


def test_custom_tool():
    proc = run_example("custom_tool.py")
    assert proc.returncode == 0, proc.stderr
    assert '{"notes":["Meeting moved to Friday"]}' in proc.stdout  # the `note` alias was accepted


def test_mcp_tools():
    proc = run_example("mcp_tools.py")
    assert proc.returncode == 0, proc.stderr
    assert 'functions.notes__search_notes({"query":"paris"}) -> [{"id":1,' in proc.stdout
    assert '-> {"id":4,"text":"Pack an umbrella for Paris","tags":["travel"]}' in proc.stdout
    # exclude= kept the destructive tool away from the model
    assert "declared: functions.notes__add_note, functions.notes__search_notes\n" in proc.stdout


def test_approval_pauses_saves_and_resumes():
    proc = run_example("approval.py")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("waiting for approval: ") and '"eur":450' in line for line in lines)
    assert "paused state saved to paused-run.json" in proc.stdout
    assert "payments made: ['450 EUR to NO93 8601 1117 947 (INV-7)']" in proc.stdout
    assert lines[-1] == "Paid INV-7: 450 EUR sent."


def test_approval_rejected_tells_the_model():
    proc = run_example("approval.py", "--reject", "over budget")
    assert proc.returncode == 0, proc.stderr
    assert "The user declined this tool call; it was not run. Reason: over budget." in proc.stdout
    assert "payments made: none" in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("I did not pay INV-7")


def test_batch(tmp_path):
    tasks = [f"count these {n} words please" for n in range(40)]
    (tmp_path / "tasks.txt").write_text("\n".join(tasks))
    proc = run_example("batch.py", "tasks.txt", "-o", "out.jsonl", "-j", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all(r["ok"] for r in rows)
    assert rows[3] == {**rows[3], "task": tasks[3], "answer": "5 words.", "tool_calls": 1}
    assert "40/40 runs answered" in proc.stderr


def test_batch_runs_as_is(tmp_path):
    proc = run_example("batch.py", cwd=tmp_path)  # no arguments: the sample tasks
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert rows and all(r["ok"] and r["tool_calls"] == 1 for r in rows)
    assert f"{len(rows)}/{len(rows)} runs answered" in proc.stderr


def test_every_example_says_how_to_use_a_real_engine():
    for path in EXAMPLES.glob("*.py"):
        header = path.read_text().split('"""')[1]
        assert "--engine" in header, path.name


@pytest.mark.sandbox
def test_python_analysis_writes_a_file_the_host_reads():
    proc = run_example("python_analysis.py")
    assert proc.returncode == 0, proc.stderr
    assert "[files written to /mnt/data: growth.csv" in proc.stdout
    assert proc.stdout.strip().endswith("growth.csv: 10,1628.89")


@pytest.mark.browser
def test_form_filling_sends_the_form():
    proc = run_example("form_filling.py")
    assert proc.returncode == 0, proc.stderr
    assert "done?name=Ada+Lovelace&size=a3" in proc.stdout.splitlines()[-1]


@pytest.mark.browser
@pytest.mark.sandbox
def test_research_agent_cites_the_lines_it_read():
    proc = run_example("research_agent.py")
    assert proc.returncode == 0, proc.stderr
    assert "([Varra Lighthouse](http://127.0.0.1:" in proc.stdout
    assert "L12-L14: The lighthouse was built in 1873" in proc.stdout
