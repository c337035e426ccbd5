"""A ``--tools`` file that cannot be imported: one line on stderr that says where and why, exit
2 (bad usage), never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FILES = {
    "syn.py": "from harmony_agent import tool\n\ndef f(x:\n    return x\n",
    "boom.py": "import os\n\nraise RuntimeError('no config\\nfound')\n",
    "needs.py": "import not_installed_anywhere\n",
    "half.py": "from os import no_such_name\n",
}

RUN = [sys.executable, "-m", "harmony_agent", "run", "x", "--engine", "scripted:final.json"]
RUN += ["--no-browser", "--no-python"]


@pytest.fixture
def workdir(tmp_path):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "final.json").write_text(json.dumps(["<|channel|>final<|message|>ok<|return|>"]))
    return tmp_path


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("syn.py:f", "--tools 'syn.py:f': syn.py, line 3 has a syntax error: '(' was never closed"),
        ("syn:f", "--tools 'syn:f': syn.py, line 3 has a syntax error"),
        (
            "boom.py:f",
            "--tools 'boom.py:f': importing boom.py raised RuntimeError: no config found "
            "(boom.py, line 3)",
        ),
        ("boom:f", "importing boom raised RuntimeError: no config found (boom.py, line 3)"),
        ("needs.py:f", "raised ModuleNotFoundError: No module named 'not_installed_anywhere'"),
        ("half:f", "importing half raised ImportError: cannot import name 'no_such_name'"),
    ],
)
def test_a_tools_file_that_fails_to_import_is_one_line_and_exit_2(workdir, target, message):
    proc = subprocess.run(
        [*RUN, "--tools", target],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harmony-agent: "), proc.stderr
    assert message in lines[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-turns", "0"], "max_turns must be at least 1, got 0 (--max-turns)"),
        (["--temperature", "-1"], "temperature must be a number of at least 0"),
        (["--max-tokens", "0"], "max_tokens_per_turn must be at least 1, got 0 (--max-tokens)"),
    ],
)
def test_an_agent_setting_out_of_range_names_its_option(workdir, flags, message):
    proc = subprocess.run(
        [*RUN, *flags],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert message in line and line.endswith(f"({flags[0]})")
