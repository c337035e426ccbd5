"""Deterministic fuzz of the agent loop (``bench/fuzz.py``, fixed seed, 2,000 cases).

Mutated and truncated completions go through ``Agent.run`` with the real encoding, parser,
tools and trace serialisation. Every case must end with a result or an error from
``harmony_agent.errors``, within its time limit, with each prompt a prefix of the next and
every event serialisable as JSON and UTF-8. ``make fuzz`` runs the same cases, more of them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import anyio

FUZZ = Path(__file__).resolve().parent.parent / "bench" / "fuzz.py"


def _load():
    spec = importlib.util.spec_from_file_location("harmony_agent_fuzz", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fuzz_2000_cases(tmp_path):
    fuzz = _load()
    out = anyio.run(fuzz.fuzz, 2000, 20261201, tmp_path)
    assert out.cases == 2000
    report = "\n".join(out.examples)
    assert sum(out.unhandled.values()) == 0, f"{dict(out.unhandled)}\n{report}"
    assert out.hangs == 0, report
    assert sum(out.violations.values()) == 0, f"{dict(out.violations)}\n{report}"
    # the cases reach both ends: answers, and typed errors the caller sees
    assert out.answered > 1000 and sum(out.typed_errors.values()) > 50


def test_the_cases_are_the_same_for_a_seed():
    import random

    fuzz = _load()
    first = [fuzz.make_case(random.Random(7)) for _ in range(3)]
    again = [fuzz.make_case(random.Random(7)) for _ in range(3)]
    assert first == again
