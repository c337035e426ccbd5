"""A research agent that browses and cites: search, open, find, then an answer whose
citations point at the exact lines it read.

    python examples/research_agent.py                    # offline: the bundled site, scripted model
    python examples/research_agent.py --engine http://localhost:8000/v1 --searxng http://localhost:8888 \\
        "What did the 2024 Nobel prize in physics reward?"

Offline it serves the demo site (a fictional island's visitor guide) on 127.0.0.1 and lets
a scripted policy play the model; with --engine the real model drives the same tools.
"""

from __future__ import annotations

import argparse

import anyio
from harmony_agent import Agent
from harmony_agent.cli import make_engine
from harmony_agent.demo import demo_model, serve_site
from harmony_agent.tools import BrowserTool, PythonTool
from harmony_agent.tools.browser import LocalSearch, SearxngSearch, citations, link_citations

DEFAULT_TASK = (
    "How tall is the Varra lighthouse and when was it built? And what is the average "
    "monthly rainfall on Varra? Cite your sources."
)


async def research(task: str, engine, search, allow_private: bool | list[str]) -> str:
    agent = Agent(
        "Research with the browser. Cite every fact as 【cursor†Lstart-Lend】.",
        tools=[
            BrowserTool(search=search, allow_private_network=allow_private),
            PythonTool(timeout=60),
        ],
        engine=engine,
        reasoning_effort="medium",
    )
    result = await agent.run(task)
    print(link_citations(result.final_text, result))
    for c in citations(result.final_text, result):
        print(f"  [{c.cursor}] {c.url} L{c.start}-L{c.end}: {' / '.join(c.lines)[:120]}")
    return result.final_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", nargs="?", default=DEFAULT_TASK)
    parser.add_argument("--engine", help="vllm[:MODEL] or http://HOST:PORT/v1 (default: offline)")
    parser.add_argument("--searxng", help="a SearXNG instance for web search")
    args = parser.parse_args()
    if args.engine:
        search = SearxngSearch(args.searxng) if args.searxng else None
        anyio.run(research, args.task, make_engine(args.engine), search, False)
        return
    print("(offline: the bundled demo site and a scripted model)")
    with serve_site() as (base, folder):
        anyio.run(research, DEFAULT_TASK, demo_model(), LocalSearch(folder, base), ["127.0.0.1"])


if __name__ == "__main__":
    main()
