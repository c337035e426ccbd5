"""The batch runner: tasks file in, results file out (fsynced as they finish), resumable,
bad lines reported by number, per-task failures recorded, session affinity per task, and
worker processes (one dying mid-task)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent.batch import BatchTask, read_tasks, run_batch
from harmony_agent.engine import FunctionEngine, GenerationRequest
from harmony_agent.errors import ConfigurationError

pytestmark = pytest.mark.anyio
SEEN_SESSIONS: list[str | None] = []


@tool
def word_count(text: str) -> int:
    """Count the words of a text."""
    if "die" in text.split():
        os._exit(3)  # a worker process that dies mid-task
    return len(text.split())


def offline_model(request: GenerationRequest, turn: int) -> str:
    """Calls word_count on the task, then answers with the count; "boom" fails the engine."""
    SEEN_SESSIONS.append(request.session_id)
    prompt = load_encoding().decode(list(request.prompt_ids))
    task = prompt.rsplit("<|start|>user<|message|>", 1)[1].split("<|end|>", 1)[0]
    if "boom" in task:
        raise RuntimeError("the engine fell over")
    if "<|start|>functions.word_count" not in prompt:
        return (
            "<|channel|>commentary to=functions.word_count <|constrain|>json<|message|>"
            + json.dumps({"text": task})
            + "<|call|>"
        )
    count = prompt.rsplit("<|message|>", 1)[1].split("<|end|>", 1)[0]
    return f"<|channel|>final<|message|>{count} words.<|return|>"


def make_agent() -> Agent:
    """Importable by name: worker processes build their agent with it."""
    return Agent(tools=[word_count], engine=FunctionEngine(offline_model), reasoning_effort="low")


def write_tasks(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def results_of(path: Path) -> tuple[dict, list[dict]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return records[0], records[1:]


async def test_a_batch_runs_reports_bad_lines_and_resumes(tmp_path):
    tasks = write_tasks(
        tmp_path / "tasks.jsonl",
        [
            '{"id": "a", "task": "one two three"}',
            '{"task": "four five"}',
            "not json at all",
            '{"id": "c", "task": "six", "settings": {"max_turns": 0}}',
            '{"id": "d", "task": "seven eight", "settings": {"seed": 3, "reasoning_effort": "high"}}',
        ],
    )
    out = tmp_path / "results.jsonl"
    summary = await run_batch(tasks, make_agent, out, concurrency=4)
    assert (summary.ok, summary.failed, summary.skipped) == (3, 0, 0)
    assert [b.line for b in summary.bad_lines] == [3, 4]
    assert "line 3: " in str(summary.bad_lines[0]) and "JSON" in summary.bad_lines[0].reason
    assert "settings.max_turns" in summary.bad_lines[1].reason
    header, rows = results_of(out)
    assert header["record"] == "header" and header["format"] == "harmony-agent-batch"
    answers = {r["id"]: r["answer"] for r in rows}
    digest_id = next(i for i in answers if i not in ("a", "d"))
    assert answers == {"a": "3 words.", digest_id: "2 words.", "d": "2 words."}
    assert all(r["ok"] and r["turns"] == 2 and r["tool_calls"] == 1 for r in rows)

    again = await run_batch(tasks, make_agent, out)
    assert (again.ok, again.skipped) == (0, 3)
    assert len(results_of(out)[1]) == 3  # nothing written twice


async def test_a_failing_task_is_recorded_and_the_rest_runs(tmp_path):
    out = tmp_path / "r.jsonl"
    summary = await run_batch(["count these words", "boom now", "and these"], make_agent, out)
    assert (summary.ok, summary.failed) == (2, 1)
    failed = [r for r in results_of(out)[1] if not r["ok"]]
    assert len(failed) == 1 and "the engine fell over" in failed[0]["error"]
    # a rerun skips what is recorded; retry_failed runs the failed one again (and it fails again)
    assert (
        await run_batch(["count these words", "boom now", "and these"], make_agent, out)
    ).skipped == 3
    retried = await run_batch(
        ["count these words", "boom now", "and these"], make_agent, out, retry_failed=True
    )
    assert (retried.skipped, retried.failed) == (2, 1)


async def test_results_of_another_batch_are_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    await run_batch(["one task"], make_agent, out)
    with pytest.raises(ConfigurationError, match="results of another batch"):
        await run_batch(["another task"], make_agent, out)
    other = tmp_path / "notes.jsonl"
    other.write_text('{"hello": 1}\n')
    with pytest.raises(ConfigurationError, match="not a harmony-agent results file"):
        await run_batch(["one task"], make_agent, other)


async def test_a_half_written_last_line_is_cut_and_its_task_runs_again(tmp_path):
    out = tmp_path / "r.jsonl"
    tasks = [{"id": "x", "task": "a b"}, {"id": "y", "task": "c d e"}]
    await run_batch(tasks, make_agent, out)
    text = out.read_text()
    out.write_text(text[: text.rindex('{"record": "result"')] + '{"record": "resu')  # crash
    summary = await run_batch(tasks, make_agent, out)
    assert (summary.ok, summary.skipped) == (1, 1)
    _header, rows = results_of(out)  # every line is whole again
    assert sorted(r["id"] for r in rows) == ["x", "y"]


async def test_every_request_of_a_task_carries_its_id_as_session(tmp_path):
    SEEN_SESSIONS.clear()
    tasks = [{"id": "t1", "task": "a"}, {"id": "t2", "task": "b c"}]
    await run_batch(tasks, make_agent, tmp_path / "r.jsonl", concurrency=2)
    assert sorted(SEEN_SESSIONS) == ["t1", "t1", "t2", "t2"]  # two turns each


async def test_tasks_in_code_are_checked():
    with pytest.raises(ConfigurationError, match=r"task 2: .*task"):
        await run_batch(["fine", {"text": "no task key"}], make_agent, "unused.jsonl")


def test_read_tasks_flags_a_duplicate_id(tmp_path):
    path = write_tasks(
        tmp_path / "t.jsonl", ['{"id": "a", "task": "x"}', '{"id": "a", "task": "y"}']
    )
    tasks, bad = read_tasks(path)
    assert tasks == [BatchTask("a", "x", line=1)]
    assert bad[0].line == 2 and "already used on line 1" in bad[0].reason


@pytest.mark.slow
async def test_two_worker_processes_and_one_that_dies(tmp_path):
    tasks = [{"id": f"t{i}", "task": " ".join(["w"] * (i + 1))} for i in range(6)]
    tasks.append({"id": "dies", "task": "this worker will die"})
    out = tmp_path / "r.jsonl"
    with anyio.fail_after(120):
        summary = await run_batch(tasks, make_agent, out, workers=2, concurrency=2)
    rows = {r["id"]: r for r in results_of(out)[1]}
    assert rows["dies"]["ok"] is False and "WorkerDied" in rows["dies"]["error"]
    assert "exit code 3" in rows["dies"]["error"]
    done = [r for r in rows.values() if r["ok"]]
    assert {r["answer"] for r in done} <= {f"{n} words." for n in range(1, 7)}
    assert all(r["worker"] != os.getpid() for r in rows.values())
    # tasks in flight on the dead worker are failed records; a rerun with retry_failed
    # runs exactly those (the dying one fails again) and writes nothing twice for the rest
    assert summary.ok + summary.failed == 7
    again = await run_batch(tasks, make_agent, out, workers=2, concurrency=2, retry_failed=True)
    assert again.skipped == summary.ok
