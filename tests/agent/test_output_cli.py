"""``harmony-agent run --output-schema`` end to end in a subprocess: the validated JSON on
stdout (one line without a terminal), the rest on stderr, bad schemas as usage errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

ANSWER = '{"name": "Oslo", "population": 709000}'
REPLIES = [
    "<|channel|>analysis<|message|>Oslo.<|end|><|start|>assistant"
    '<|channel|>final json<|message|>{"name":"Oslo","population":"many"}<|return|>',
    f"<|channel|>final <|constrain|>json<|message|>{ANSWER}<|return|>",
]
SCHEMA = {
    "title": "City",
    "type": "object",
    "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["name", "population"],
}
MODELS = '''
import pydantic

class City(pydantic.BaseModel):
    """A city."""
    name: str
    population: int

class Tree(pydantic.BaseModel):
    children: list["Tree"]
'''


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "replies.json").write_text(json.dumps(REPLIES))
    (tmp_path / "bad-twice.json").write_text(json.dumps([REPLIES[0], REPLIES[0]]))
    (tmp_path / "city.schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "models.py").write_text(MODELS)
    return tmp_path


def cli(workdir, *args):
    return subprocess.run(
        [sys.executable, "-m", "harmony_agent", "run", "Biggest city in Norway?", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("schema", ["city.schema.json", "models:City", "models.py:City"])
def test_prints_the_validated_json_on_one_line(workdir, schema):
    proc = cli(workdir, "--engine", "scripted:replies.json", "--output-schema", schema)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '{"name": "Oslo", "population": 709000}\n'
    assert "does not match" in proc.stderr  # the repair turn, reported on stderr
    assert "cannot constrain decoding" in proc.stderr


def test_json_events_carry_the_output(workdir):
    args = ["--engine", "scripted:replies.json", "--output-schema", "models:City", "--json"]
    proc = cli(workdir, *args)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[-1]["type"] == "run_finished"
    assert events[-1]["output"] == {"name": "Oslo", "population": 709000}


def test_an_answer_that_never_matches_exits_1(workdir):
    proc = cli(workdir, "--engine", "scripted:bad-twice.json", "--output-schema", "models:City")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "OutputValidationError" in proc.stderr and "$.population" in proc.stderr


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("missing.json", "cannot read it"),
        ("list.json", "a JSON schema is an object, got list"),
        ("models:Nope", "models has no attribute 'Nope'"),
        ("models:Tree", "recursive"),
        ("nomodule", "expected MODULE:ATTR"),
    ],
)
def test_bad_schemas_are_usage_errors(workdir, schema, message):
    proc = cli(workdir, "--engine", "scripted:replies.json", "--output-schema", schema)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.startswith("harmony-agent: ")


def test_pretty_json_on_a_terminal():
    import io

    from harmony_agent._cli_commands import print_output
    from rich.console import Console

    buffer = io.StringIO()
    print_output(Console(file=buffer, force_terminal=True, no_color=True), {"a": [1, 2]})
    plain = re.sub(r"\x1b\[[0-9;]*m", "", buffer.getvalue())  # highlighting aside
    assert plain == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'
