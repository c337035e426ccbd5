"""The README stays honest: its Python runs, its make targets exist, .ci/run calls make test."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_python_snippets_run():
    snippets = re.findall(r"```python\n(.*?)```", README, re.S)
    assert snippets
    for code in snippets:
        exec(compile(code, "<README>", "exec"), {"__name__": "__readme__"})


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"make (\w[\w-]*)", README)):
        assert re.search(rf"^{target}:", makefile, re.M), f"README mentions make {target}"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_cli_commands_in_readme_are_real_subcommands():
    import argparse

    from harmony_agent.cli import build_parser

    (subparsers,) = [
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    shell = "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S))
    commands = set(re.findall(r"^harmony-agent (\w+)", shell, re.M))
    assert commands and commands <= set(subparsers.choices), commands
