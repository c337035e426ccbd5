"""What the CLI loads from its options: the engine, the ``--tools`` targets, the built-in
browser and python tools, MCP servers. Each failure is a :class:`ConfigurationError` of one
line (the CLI exits 2 with it)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harmony_agent.engine._spec import engine_from_spec
from harmony_agent.engine.base import Engine
from harmony_agent.tools.base import Tool, Toolset
from harmony_agent.tools.function import tool as make_tool

from .errors import ConfigurationError

__all__ = ["builtin_tools", "load_tools", "make_engine", "mcp_servers"]


def make_engine(
    spec: str | None, *, model: str | None = None, api_key_env: str | None = None
) -> Engine:
    """An engine from ``--engine`` (or ``$HARMONY_AGENT_ENGINE``): ``scripted:FILE``,
    ``vllm[:MODEL_OR_PATH]`` or ``http(s)://HOST:PORT/v1`` (see ``harmony_agent.engine._spec``)."""
    return engine_from_spec(spec, model=model, api_key_env=api_key_env)


def import_target(target: str, flag: str = "--tools") -> Any:
    """``MODULE:ATTR`` or ``path/to/file.py:ATTR`` → the attribute; errors name ``flag``."""
    if ":" not in target:
        raise ConfigurationError(f"{flag} {target!r}: expected MODULE:ATTR or path/to/file.py:ATTR")
    module_name, _, attr = target.rpartition(":")
    try:
        module = _import_module(target, module_name, flag)
    except ConfigurationError:
        raise
    except SyntaxError as exc:  # the file itself, or a module it imports
        shown = _shown_path(exc.filename) if exc.filename else module_name
        where = f"{shown}, line {exc.lineno}" if exc.lineno else shown
        raise ConfigurationError(
            f"{flag} {target!r}: {where} has a syntax error: {exc.msg}"
        ) from None
    except Exception as exc:  # raised while the module's top level ran
        raise ConfigurationError(
            f"{flag} {target!r}: importing {module_name} raised {_one_line(exc)}"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(
            f"{flag} {target!r}: {module_name} has no attribute {attr!r}"
        ) from None


def _import_module(target: str, module_name: str, flag: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ConfigurationError(f"{flag} {target!r}: file {module_name} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"{flag} {target!r}: cannot import {module_name}: {exc}") from None


def _shown_path(filename: str) -> str:
    """A path as the user would write it: relative to the working directory when inside it."""
    path = Path(filename)
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return filename


def _one_line(exc: BaseException) -> str:
    """``RuntimeError: boom (tools.py, line 3)``: the exception and where the module's code
    raised it (the last frame outside the import machinery)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    where = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"


def load_tools(targets: Sequence[str]) -> list[Tool | Toolset]:
    """Tools from ``MODULE:ATTR`` specs: a Tool, a Toolset, a plain function, or a list of them."""
    tools: list[Tool | Toolset] = []
    for target in targets:
        value = import_target(target)
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


def builtin_tools(args: argparse.Namespace) -> list[Toolset]:
    """The browser and python tools the flags ask for."""
    tools: list[Toolset] = []
    if args.browser:
        from harmony_agent.tools.browser import BrowserTool, LocalSearch, SearxngSearch

        search: LocalSearch | SearxngSearch | None = None
        if args.search_dir:
            try:
                search = LocalSearch(args.search_dir, args.search_base_url)
            except FileNotFoundError as exc:
                raise ConfigurationError(f"--search-dir: {exc}") from None
        elif args.searxng:
            search = SearxngSearch(args.searxng)
        tools.append(
            BrowserTool(
                search=search,
                allow_domains=args.allow_domain,
                allow_private_network=args.allow_private_network,
            )
        )
    if args.python:
        from harmony_agent.tools.python import PythonTool

        tools.append(PythonTool())
    return tools


def mcp_servers(specs: Sequence[str]) -> list[Toolset]:
    """``--mcp`` values → MCP toolsets: ``stdio:COMMAND ARGS...`` or an http(s) URL."""
    servers: list[Toolset] = []
    for spec in specs:
        if spec.startswith("stdio:"):
            from harmony_agent.tools.mcp import MCPServerStdio

            words = shlex.split(spec[len("stdio:") :])
            if not words:
                raise ConfigurationError(f"--mcp {spec!r}: name the command, e.g. 'stdio:npx srv'")
            servers.append(MCPServerStdio(words[0], args=words[1:]))
        elif spec.startswith(("http://", "https://")):
            from harmony_agent.tools.mcp import MCPServerStreamableHTTP

            servers.append(MCPServerStreamableHTTP(spec))
        else:
            raise ConfigurationError(
                f"--mcp {spec!r}: expected 'stdio:COMMAND ARGS...' or http://HOST:PORT/mcp"
            )
    return servers
