"""Shared by the benchmarks: a figure row, medians, and the table they print."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass
class Figure:
    group: str
    name: str
    value: float
    unit: str
    target: str = ""
    note: str = ""

    @property
    def shown(self) -> str:
        v = self.value
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}" if abs(v) >= 1 else f"{v:.3g}"


def median_time(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def print_table(figures: list[Figure], title: str) -> None:
    table = Table(title=title)
    for column in ("group", "figure", "value", "unit", "target", "note"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for f in figures:
        table.add_row(f.group, f.name, f.shown, f.unit, f.target, f.note)
    Console().print(table)


def write_json(figures: list[Figure], path: Path, command: str) -> None:
    data = {
        "machine": machine(),
        "command": command,
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "figures": [asdict(f) for f in figures],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def main_cli(run: Callable[[bool], list[Figure]], title: str) -> None:
    """``python bench/X.py [--quick] [--json FILE]``: print the table, optionally write JSON."""
    import argparse

    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    figures = run(args.quick)
    print_table(figures, f"{title} ({time.perf_counter() - start:.0f} s)")
    if args.json:
        write_json(figures, args.json, "python " + " ".join(__import__("sys").argv))
