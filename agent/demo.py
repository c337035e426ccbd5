"""``make demo``: the main job end to end.

Without a GPU and the gpt-oss-20b weights this runs the offline demo model — a
ScriptedEngine whose replies were written for this task — and says so. The loop, the parser,
the tools and the terminal view are the real ones.
"""

from __future__ import annotations

import sys

import anyio
from harmony_agent import Agent, tool
from harmony_agent.engine import ScriptedEngine
from rich.console import Console

from ._console import EventView

TASK = "A train leaves at 09:40 and the trip takes 2 h 35 min. When does it arrive?"


@tool
def add_minutes(time: str, minutes: int) -> str:
    """Add minutes to a clock time.

    Args:
        time: a time as HH:MM
        minutes: how many minutes to add
    """
    hours, mins = (int(x) for x in time.split(":"))
    total = (hours * 60 + mins + minutes) % (24 * 60)
    return f"{total // 60:02d}:{total % 60:02d}"


DEMO_REPLIES = [
    "<|channel|>analysis<|message|>2 h 35 min is 155 minutes. I'll use add_minutes.<|end|>"
    "<|start|>assistant<|channel|>commentary<|message|>Let me compute the arrival time.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.add_minutes <|constrain|>json"
    '<|message|>{"time":"09:40","minutes":155}<|call|>',
    "<|channel|>analysis<|message|>The tool says 12:15.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>The train arrives at **12:15**.<|return|>",
]


async def main() -> int:
    err = Console(stderr=True)
    out = Console()
    err.print(
        "[bold yellow]offline demo model[/]: scripted replies written for this task stand in "
        "for gpt-oss-20b (no GPU or weights here). Everything else is real.\n"
    )
    agent = Agent(
        "You answer travel questions.",
        tools=[add_minutes],
        engine=ScriptedEngine(DEMO_REPLIES, delay=0.005),
    )
    view = EventView(err)
    err.print(f"[bold]task:[/] {TASK}")
    async for event in agent.stream(TASK):
        view.handle(event)
        if event.type == "run_finished":
            view.answer(out, event.final_text)
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
