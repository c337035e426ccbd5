"""``make bench``: every benchmark, one table, written as JSON and into BENCHMARKS.md.

Each benchmark runs in its own process (and the vLLM one in the vLLM environment), so one
cannot disturb another's figures."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import Figure, machine, print_table

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
LLAMACPP_PYTHON = ROOT / ".venv-llamacpp" / "bin" / "python"

# (script, interpreter): the vLLM and llama.cpp benchmarks need their own environments
BENCHES = [
    ("bench_runtime.py", sys.executable),
    ("bench_concurrency.py", sys.executable),
    ("bench_batch.py", sys.executable),
    ("bench_python_tool.py", sys.executable),
    ("bench_browser.py", sys.executable),
    ("bench_mcp.py", sys.executable),
    ("bench_long_run.py", sys.executable),
    ("bench_engines.py", str(VLLM_PYTHON)),
    ("bench_llamacpp.py", str(LLAMACPP_PYTHON)),
]


def main() -> int:
    quick = "--quick" in sys.argv
    figures: list[Figure] = []
    failures = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for script, python in BENCHES:
            path = ROOT / "bench" / script
            if not path.exists():
                continue
            out = Path(tmp) / (script + ".json")
            cmd = [python, str(path), "--json", str(out)] + (["--quick"] if quick else [])
            print(f"--- {script}", flush=True)
            proc = subprocess.run(cmd, cwd=ROOT)
            if proc.returncode != 0 or not out.exists():
                failures.append(script)
                continue
            figures += [Figure(**f) for f in json.loads(out.read_text())["figures"]]
    elapsed = time.perf_counter() - started
    print_table(figures, f"harmony-agent benchmarks ({elapsed:.0f} s)")
    command = "make bench" + (" (quick)" if quick else "")
    data = {
        "machine": machine(),
        "command": command,
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "figures": [f.__dict__ for f in figures],
        "failed": failures,
    }
    (ROOT / "bench" / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    write_markdown(figures, data)
    if failures:
        print(f"benchmarks that failed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


def write_markdown(figures: list[Figure], data: dict) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n<!-- results -->\n"
    rows = ["| group | figure | value | unit | target | note |", "|---|---|---:|---|---|---|"]
    rows += [
        f"| {f.group} | {f.name} | {f.shown} | {f.unit} | {f.target} | {f.note} |" for f in figures
    ]
    block = (
        f"<!-- results -->\nLatest run: {data['time']} on {data['machine']}, "
        f"`{data['command']}`.\n\n" + "\n".join(rows) + "\n<!-- /results -->"
    )
    head, _, rest = text.partition("<!-- results -->")
    _, _, tail = rest.partition("<!-- /results -->")
    path.write_text(head + block + tail)


if __name__ == "__main__":
    sys.exit(main())
