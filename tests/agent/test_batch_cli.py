"""``harmony-agent batch`` end to end in a subprocess: results file, bad lines by number on
stderr, a rerun that skips what is done, worker processes, a refused results file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FINAL = "<|channel|>final<|message|>done<|return|>"


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "replies.json").write_text(json.dumps([FINAL] * 20))
    (tmp_path / "tasks.jsonl").write_text(
        '{"id": "a", "task": "first"}\n'
        '{"id": "b", "task": 42}\n'
        '{"id": "c", "task": "third", "settings": {"temperature": 0.5}}\n'
        '{"task": "fourth"}\n'
    )
    return tmp_path


def cli(workdir, *args):
    return subprocess.run(
        [sys.executable, "-m", "harmony_agent", "batch", "tasks.jsonl", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
    )


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


BASE = ["--engine", "scripted:replies.json", "--no-browser", "--no-python"]


def test_batch_writes_results_reports_bad_lines_and_resumes(workdir):
    proc = cli(workdir, "-o", "out.jsonl", *BASE)
    assert proc.returncode == 1, proc.stderr  # a bad line is not a success
    assert "tasks.jsonl: line 2: task: Input should be a valid string" in proc.stderr
    assert "3 answered, 0 failed, 0 already done, 1 bad lines" in proc.stderr
    assert proc.stdout == ""
    results = rows(workdir / "out.jsonl")
    ids = {r["id"] for r in results}
    assert len(results) == 3 and {"a", "c"} <= ids  # the fourth's id: a digest of its task
    assert all(r["ok"] and r["answer"] == "done" for r in results)

    again = cli(workdir, "-o", "out.jsonl", "--json", *BASE)
    summary = json.loads(again.stdout)
    assert (summary["ok"], summary["skipped"], summary["bad_lines"][0]["line"]) == (0, 3, 2)
    assert len(rows(workdir / "out.jsonl")) == 3


def test_batch_refuses_the_results_of_another_batch(workdir):
    assert cli(workdir, "-o", "out.jsonl", *BASE).returncode == 1
    (workdir / "tasks.jsonl").write_text('{"task": "something else"}\n')
    proc = cli(workdir, "-o", "out.jsonl", *BASE)
    assert proc.returncode == 2
    assert "holds the results of another batch" in proc.stderr and "(-o)" in proc.stderr


def test_a_missing_tasks_file_is_a_usage_error(workdir):
    (workdir / "tasks.jsonl").unlink()
    proc = cli(workdir, "-o", "out.jsonl", *BASE)
    assert proc.returncode == 2 and "the tasks file tasks.jsonl does not exist" in proc.stderr


@pytest.mark.slow
def test_batch_over_two_worker_processes(workdir):
    proc = cli(workdir, "-o", "out.jsonl", "--workers", "2", "-j", "2", "--traces", "traces", *BASE)
    assert proc.returncode == 1, proc.stderr  # the bad line
    results = rows(workdir / "out.jsonl")
    assert len(results) == 3 and all(r["ok"] for r in results)
    assert {r["trace"] for r in results} == {f"traces/{r['id']}.jsonl" for r in results}
    assert all((workdir / r["trace"]).is_file() for r in results)


@pytest.mark.parametrize("command", ["batch", "export"])
def test_help(workdir, command):
    proc = subprocess.run(
        [sys.executable, "-m", "harmony_agent", command, "--help"],
        cwd=workdir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and f"usage: harmony-agent {command}" in proc.stdout
