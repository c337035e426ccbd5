"""The batch on a local Ray (2 CPUs, loopback only): actors with their own agents, results
written once each, an actor that dies mid-task (its task retried on another), and the
errors for Ray missing and for an address that does not answer."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent.batch import run_batch
from harmony_agent.engine import FunctionEngine, GenerationRequest
from harmony_agent.errors import ConfigurationError

pytestmark = [pytest.mark.ray, pytest.mark.anyio]


@tool
def word_count(text: str) -> int:
    """Count the words of a text."""
    words = text.split()
    if words and words[0] == "die-once":
        marker = Path(words[1])
        if not marker.exists():  # the first actor to run this task dies; the retry lives
            marker.write_text(str(os.getpid()))
            os._exit(3)
    return len(words)


def offline_model(request: GenerationRequest, turn: int) -> str:
    prompt = load_encoding().decode(list(request.prompt_ids))
    if "<|start|>functions.word_count" not in prompt:
        task = prompt.rsplit("<|start|>user<|message|>", 1)[1].split("<|end|>", 1)[0]
        return (
            "<|channel|>commentary to=functions.word_count <|constrain|>json<|message|>"
            + json.dumps({"text": task})
            + "<|call|>"
        )
    count = prompt.rsplit("<|message|>", 1)[1].split("<|end|>", 1)[0]
    return f"<|channel|>final<|message|>{count} words.<|return|>"


def make_agent() -> Agent:
    return Agent(tools=[word_count], engine=FunctionEngine(offline_model), reasoning_effort="low")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_an_address_that_does_not_answer_is_a_clear_error(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConfigurationError, match=f"the Ray cluster at {address} does not answer"):
        await run_batch(["x"], make_agent, tmp_path / "r.jsonl", ray_address=address)


async def test_ray_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'harmony-agent\[ray\]'"):
        await run_batch(["x"], make_agent, tmp_path / "r.jsonl", ray_address=None)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}},
    )
    yield ray
    ray.shutdown()


async def test_a_batch_on_ray_with_an_actor_that_dies_mid_task(tmp_path, local_ray):
    marker = tmp_path / "died"
    tasks = [{"id": f"t{i}", "task": " ".join(["w"] * (i + 1))} for i in range(5)]
    tasks.insert(2, {"id": "dies", "task": f"die-once {marker}"})
    out = tmp_path / "r.jsonl"
    summary = await run_batch(tasks, make_agent, out, workers=2, concurrency=2, ray_address=None)
    assert (summary.ok, summary.failed) == (6, 0)
    rows = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert sorted(r["id"] for r in rows) == sorted(t["id"] for t in tasks)  # each once
    by_id = {r["id"]: r for r in rows}
    assert by_id["dies"]["answer"] == "2 words." and marker.exists()
    assert by_id["dies"]["worker"] != int(marker.read_text())  # retried on another actor
    assert all(r["worker"] != os.getpid() for r in rows)  # ran in actors, not here

    again = await run_batch(tasks, make_agent, out, workers=2, ray_address=None)
    assert (again.ok, again.skipped) == (0, 6)
