"""A custom tool: subclass ``Tool`` for full control — own schema, argument aliases, per-run
state that is cleaned up when the run ends.

    python examples/custom_tool.py                          # offline: scripted model replies
    python examples/custom_tool.py --engine http://localhost:8000/v1

``Notebook`` keeps notes for one run (``ctx.resource`` opens it on first use and closes it
at the end of the run); two runs never see each other's notes.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anyio
from harmony_agent import Agent, RunContext, Tool
from harmony_agent.cli import make_engine
from harmony_agent.engine import Engine, ScriptedEngine
from harmony_agent.errors import ToolExecutionError


class Notebook(Tool):
    name = "notebook"
    description = "Keep notes during the task. action=add stores text; action=list shows all notes."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["add", "list"]},
            "text": {"type": "string", "description": "the note (for add)"},
        },
        "required": ["action"],
    }
    timeout = 5.0

    closed: ClassVar[list[list[str]]] = []  # what each finished run had written

    def normalize_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if "note" in arguments and "text" not in arguments:  # a slip models make
            arguments["text"] = arguments.pop("note")
        return arguments

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[list[str]]:
        notes: list[str] = []
        try:
            yield notes
        finally:
            Notebook.closed.append(notes)

    async def call(self, arguments: dict[str, Any], ctx: RunContext) -> Any:
        notes = await ctx.resource("notebook", self._open)
        if arguments["action"] == "add":
            if not arguments.get("text"):
                raise ToolExecutionError("action=add needs a non-empty 'text'")
            notes.append(arguments["text"])
            return {"stored": len(notes)}
        return {"notes": notes}


TASK = "Note that the meeting moved to Friday, then list the notes."
SCRIPT = [
    '<|channel|>commentary to=functions.notebook <|constrain|>json<|message|>{"action":"add","note":"Meeting moved to Friday"}<|call|>',
    '<|channel|>commentary to=functions.notebook <|constrain|>json<|message|>{"action":"list"}<|call|>',
    "<|channel|>final<|message|>Noted: the meeting moved to Friday.<|return|>",
]


async def main(engine: Engine) -> str:
    agent = Agent(tools=[Notebook()], engine=engine, reasoning_effort="low")
    result = await agent.run(TASK)
    for call in result.tool_calls:
        print(f"  {call.recipient}({call.raw_arguments}) -> {call.output}")
    print(result.final_text)
    return result.final_text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="vllm[:MODEL], http://HOST:PORT/v1 (default: scripted)")
    args = parser.parse_args()
    engine = make_engine(args.engine) if args.engine else ScriptedEngine(SCRIPT)
    anyio.run(main, engine)
