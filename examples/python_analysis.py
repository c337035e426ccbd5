"""The python tool for a computation with a file output: the model computes in the sandbox
and saves a CSV to /mnt/data, which the host program then reads.

    python examples/python_analysis.py                                 # offline: scripted model
    python examples/python_analysis.py --engine http://localhost:8000/v1

The sandbox is stateful (variables persist between calls), has no network, and its
/mnt/data is a folder of the run's files on the host. The host reads it through ``RunFiles``:
whatever the code left there (a symlink to /etc/shadow, a FIFO) is refused, not followed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import anyio
from harmony_agent import Agent
from harmony_agent.cli import make_engine
from harmony_agent.engine import ScriptedEngine
from harmony_agent.tools import PythonTool
from harmony_agent.tools.python import RunFiles

TASK = "Tabulate the compound growth of 1000 at 5% a year for 10 years; save it as CSV."

SCRIPT = [
    "<|channel|>analysis<|message|>Compute the balances first.<|end|><|start|>assistant"
    "<|channel|>analysis to=python code<|message|>balances = [round(1000 * 1.05 ** y, 2) for y in range(11)]\n"
    "balances[-1]<|call|>",
    "<|channel|>analysis to=python code<|message|>import csv\n"
    "with open('/mnt/data/growth.csv', 'w', newline='') as f:\n"
    "    w = csv.writer(f)\n    w.writerow(['year', 'balance'])\n"
    "    w.writerows(enumerate(balances))\nprint('saved', len(balances), 'rows')<|call|>",
    "<|channel|>final<|message|>After 10 years 1000 grows to 1628.89. The table is in growth.csv."
    "<|return|>",
]


async def main(engine, files: Path) -> str:
    agent = Agent(
        tools=[PythonTool(timeout=30)], engine=engine, reasoning_effort="low", files_dir=files
    )
    result = await agent.run(TASK)
    for call in result.tool_calls:
        print(f"  python -> {call.output}")
    print(result.final_text)
    sandbox_files = RunFiles(files / "python")  # written by the model's code: read it safely
    table = await anyio.to_thread.run_sync(sandbox_files.read_text, "growth.csv")
    print(f"{files / 'python' / 'growth.csv'}: {table.splitlines()[-1]}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="vllm[:MODEL] or http://HOST:PORT/v1 (default: scripted)")
    args = parser.parse_args()
    # The run's files go here; the sandbox's unprivileged user must be able to traverse it.
    files = Path(tempfile.mkdtemp(prefix="growth-"))
    files.chmod(0o711)
    anyio.run(main, make_engine(args.engine) if args.engine else ScriptedEngine(SCRIPT), files)
