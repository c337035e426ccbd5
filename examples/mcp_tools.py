"""Tools from an MCP server: a notes server run over stdio, shared by two runs.

    python examples/mcp_tools.py                       # offline: scripted model replies
    python examples/mcp_tools.py --engine http://localhost:8000/v1   # a vLLM server
    python examples/mcp_tools.py --engine vllm         # in-process vLLM, gpt-oss-20b

The server (examples/servers/notes.py, written with the official ``mcp`` SDK) is started
when the first run needs its tools, which are declared to the model as
``functions.notes__search_notes`` and ``functions.notes__add_note``; ``exclude=`` keeps its
``delete_everything`` away from the model. ``async with agent:`` keeps one connection for
both runs and stops the server at the end. Needs ``pip install 'harmony-agent[mcp]'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio
from harmony_agent import Agent
from harmony_agent.cli import make_engine
from harmony_agent.engine import Engine, ScriptedEngine
from harmony_agent.tools.mcp import MCPServerStdio

SERVER = Path(__file__).resolve().parent / "servers" / "notes.py"

TASKS = [
    "What do my notes say about Paris?",
    "Add a note that I must pack an umbrella for Paris.",
]

SCRIPT = [
    "<|channel|>analysis<|message|>Search the notes for Paris.<|end|><|start|>assistant"
    "<|channel|>commentary to=functions.notes__search_notes <|constrain|>json<|message|>"
    '{"query":"paris"}<|call|>',
    "<|channel|>final<|message|>Two notes: book the train to Paris for 3 December, and the "
    "museum is closed on Mondays.<|return|>",
    "<|channel|>commentary to=functions.notes__add_note <|constrain|>json<|message|>"
    '{"text":"Pack an umbrella for Paris","tags":["travel"]}<|call|>',
    "<|channel|>final<|message|>Added note 4: pack an umbrella for Paris.<|return|>",
]


async def main(engine: Engine) -> None:
    notes = MCPServerStdio(
        sys.executable, args=[str(SERVER)], prefix="notes", exclude=["delete_everything"]
    )
    async with Agent(
        "You keep the user's notes. Use the notes tools; never invent notes.",
        tools=[notes],
        engine=engine,
        reasoning_effort="low",
    ) as agent:
        for task in TASKS:
            result = await agent.run(task)
            print(f"> {task}")
            for call in result.tool_calls:
                print(f"  {call.recipient}({call.raw_arguments}) -> {call.output[:160]}")
            print(result.final_text)
        print("declared:", ", ".join(sorted(agent.registry.tools)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="vllm[:MODEL], http://HOST:PORT/v1 (default: scripted)")
    args = parser.parse_args()
    if args.engine:
        engine = make_engine(args.engine)
    else:
        print("(offline: scripted model replies stand in for gpt-oss)")
        engine = ScriptedEngine(SCRIPT)
    anyio.run(main, engine)
