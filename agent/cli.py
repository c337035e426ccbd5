"""``harmony-agent``: run a gpt-oss agent task from the terminal.

The answer goes to stdout; reasoning, tool activity, warnings and usage to stderr.
``--json`` prints one JSON event per line on stdout instead. Exit codes: 0 answered,
1 the run failed, 2 bad usage or configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from harmony_agent.engine.base import Engine
from harmony_agent.tools.base import Tool, Toolset
from harmony_agent.tools.function import tool as make_tool
from rich.console import Console

from ._console import EventView, Prices
from .errors import ConfigurationError, HarmonyAgentError
from .events import event_to_json

__all__ = ["build_parser", "load_tools", "main", "make_engine"]

ENGINE_ENV = "HARMONY_AGENT_ENGINE"


def load_scripted(path: str) -> Engine:
    """A ScriptedEngine from a JSON file: a list of raw Harmony replies (or {"replies": [...]})."""
    from harmony_agent.engine.testing import ScriptedEngine

    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"scripted replies file {path!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"scripted replies file {path!r} is not JSON: {exc}") from None
    replies = data.get("replies") if isinstance(data, dict) else data
    if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
        raise ConfigurationError(
            f"scripted replies file {path!r} must hold a JSON list of strings (raw Harmony "
            'replies), e.g. ["<|channel|>final<|message|>Hi<|return|>"]'
        )
    return ScriptedEngine(replies)


def make_engine(
    spec: str | None, *, model: str | None = None, api_key_env: str | None = None
) -> Engine:
    """An engine from ``--engine`` (or ``$HARMONY_AGENT_ENGINE``).

    ``scripted:FILE`` (a JSON list of raw Harmony replies), ``vllm[:MODEL_OR_PATH]``
    (in-process vLLM) or ``http(s)://HOST:PORT/v1`` (an OpenAI-compatible server).
    """
    spec = spec or os.environ.get(ENGINE_ENV) or "vllm"
    if spec.startswith("scripted:"):
        return load_scripted(spec[len("scripted:") :])
    try:
        from harmony_agent.engine._spec import engine_from_spec
    except ImportError:
        raise ConfigurationError(
            f"engine {spec!r} is not available in this build; use --engine scripted:FILE"
        ) from None
    return engine_from_spec(spec, model=model, api_key_env=api_key_env)


def _import_target(target: str) -> Any:
    if ":" not in target:
        raise ConfigurationError(
            f"--tools {target!r}: expected MODULE:ATTR or path/to/file.py:ATTR"
        )
    module_name, _, attr = target.rpartition(":")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ConfigurationError(f"--tools {target!r}: file {module_name} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(
                f"--tools {target!r}: cannot import {module_name}: {exc}"
            ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(
            f"--tools {target!r}: {module_name} has no attribute {attr!r}"
        ) from None


def load_tools(targets: Sequence[str]) -> list[Tool | Toolset]:
    """Tools from ``MODULE:ATTR`` specs: a Tool, a Toolset, a plain function, or a list of them."""
    tools: list[Tool | Toolset] = []
    for target in targets:
        value = _import_target(target)
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, Tool | Toolset):
                tools.append(item)
            elif callable(item):
                tools.append(make_tool(item))
            else:
                raise ConfigurationError(
                    f"--tools {target!r}: {item!r} is neither a tool nor a function"
                )
    return tools


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harmony-agent",
        description="Run gpt-oss agents: the Harmony loop with function, browser and python tools.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser(
        "run",
        help="run one task to its final answer",
        description="Run TASK to its final answer. The answer goes to stdout; reasoning, tool "
        "calls and usage to stderr (or JSON events on stdout with --json).",
    )
    run.add_argument("task", help="what the agent should do")
    run.add_argument(
        "--engine",
        help="scripted:FILE (JSON list of raw Harmony replies), vllm[:MODEL_OR_PATH] "
        "(in-process vLLM), or http://HOST:PORT/v1 (OpenAI-compatible server); "
        f"default ${ENGINE_ENV}, else vllm with openai/gpt-oss-20b",
    )
    run.add_argument(
        "--model", help="model name for HTTP engines (default: the server's only model)"
    )
    run.add_argument("--api-key-env", help="environment variable holding the HTTP engine's API key")
    run.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="user functions or tools to enable (repeatable); a file path works too: tools.py:add",
    )
    run.add_argument("--instructions", help="developer instructions")
    run.add_argument(
        "--effort",
        choices=["low", "medium", "high"],
        default="medium",
        help="reasoning effort (default medium)",
    )
    run.add_argument("--max-turns", type=int, default=30, help="model turns before giving up")
    run.add_argument("--max-tokens", type=int, default=8192, help="sampling limit per turn")
    run.add_argument("--temperature", type=float, help="sampling temperature (engine default)")
    run.add_argument("--json", action="store_true", help="print one JSON event per line on stdout")
    run.add_argument(
        "--hide-reasoning", action="store_true", help="do not show the chain of thought"
    )
    run.add_argument("--price-input", type=float, default=0.07, help="$ per million input tokens")
    run.add_argument("--price-cached", type=float, default=0.04, help="$ per million cached tokens")
    run.add_argument("--price-output", type=float, default=0.30, help="$ per million output tokens")
    return parser


async def _run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .agent import Agent

    engine = make_engine(args.engine, model=args.model, api_key_env=args.api_key_env)
    agent = Agent(
        args.instructions,
        tools=load_tools(args.tools),
        engine=engine,
        reasoning_effort=args.effort,
        max_turns=args.max_turns,
        max_tokens_per_turn=args.max_tokens,
        temperature=args.temperature,
    )
    view = EventView(
        err,
        show_reasoning=not args.hide_reasoning,
        prices=Prices(args.price_input, args.price_cached, args.price_output),
    )
    final: str | None = None
    try:
        async with engine:
            async for event in agent.stream(args.task):
                if args.json:
                    out.file.write(event_to_json(event) + "\n")
                    out.file.flush()
                else:
                    view.handle(event)
                if event.type == "run_finished":
                    final = event.final_text
    finally:
        view.stop()
    if final is not None and not args.json:
        view.answer(out, final)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Console(file=sys.stdout, soft_wrap=True)
    err = Console(file=sys.stderr, soft_wrap=True)
    try:
        return anyio.run(_run, args, out, err)
    except ConfigurationError as exc:
        print(f"harmony-agent: {exc}", file=sys.stderr)
        return 2
    except HarmonyAgentError as exc:
        print(f"harmony-agent: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harmony-agent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
