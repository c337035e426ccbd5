"""``harmony-agent``: run a gpt-oss agent task from the terminal.

The answer goes to stdout; reasoning, tool activity, warnings and usage to stderr.
``--json`` prints one JSON event per line on stdout instead. Exit codes: 0 answered,
1 the run failed (for ``replay --check``: or a tool output changed), 2 bad usage or
configuration, 3 paused waiting for approval of a tool call (``--approve none``;
``harmony-agent resume TRACE --approve CALL_ID`` goes on), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.to_thread
from harmony_agent.engine._spec import ENGINE_ENV
from rich.console import Console

from ._cli_batch import cmd_batch, cmd_export
from ._cli_commands import cmd_chat, cmd_replay, cmd_resume, cmd_run, cmd_trace
from ._cli_load import load_tools, make_engine
from .batch import loop_options
from .errors import ConfigurationError, HarmonyAgentError, UsageLimitExceeded

__all__ = ["build_parser", "load_tools", "main", "make_engine"]

#: the CLI option for each library setting an error names (see HarmonyAgentError.settings)
_FLAGS = {
    "engine": "--engine",
    "base_url": "--engine",
    "model": "--model",
    "api_key_env": "--api-key-env",
    "instructions": "--instructions",
    "max_turns": "--max-turns",
    "max_tokens_per_turn": "--max-tokens",
    "temperature": "--temperature",
    "adapter": "--adapter",
}

#: the CLI option for each UsageLimits figure
_LIMIT_FLAGS = {
    "max_tool_calls": "--max-tool-calls",
    "max_input_tokens": "--max-input-tokens",
    "max_output_tokens": "--max-output-tokens",
    "max_total_tokens": "--max-total-tokens",
    "max_cost_usd": "--max-cost",
    "max_wall_s": "--max-wall",
}


def _with_flags(exc: HarmonyAgentError, *, first_line: bool = False) -> str:
    """The error's message (or its first line), with the options that fix it: library
    messages name settings, not options."""
    flags = dict.fromkeys(_FLAGS[s] for s in exc.settings if s in _FLAGS)
    if isinstance(exc, UsageLimitExceeded) and exc.limit in _LIMIT_FLAGS:
        flags[_LIMIT_FLAGS[exc.limit]] = None
    text = str(exc) or type(exc).__name__
    if first_line:
        text = text.splitlines()[0]
    return f"{text} ({', '.join(flags)})" if flags else text


def _agent_options(parser: argparse.ArgumentParser, *, engine: bool = True) -> None:
    # Long but flat: one declaration per option, read top to bottom like the --help it makes.
    if engine:
        parser.add_argument(
            "--engine",
            help="scripted:FILE (JSON list of raw Harmony replies), vllm[:MODEL_OR_PATH] "
            "(in-process vLLM), http://HOST:PORT/v1 (OpenAI-compatible server), "
            "sglang:http://HOST:PORT/v1 (SGLang server), "
            "llama-server:http://HOST:PORT (llama.cpp's server) or llamacpp:PATH.gguf "
            "(in-process llama.cpp); "
            f"default ${ENGINE_ENV}, else vllm with openai/gpt-oss-20b",
        )
        parser.add_argument(
            "--model", help="model name for HTTP engines (default: the server's only model)"
        )
        parser.add_argument(
            "--api-key-env", help="environment variable holding the HTTP engine's API key"
        )
    parser.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="user functions or tools to enable (repeatable); a file path works too: tools.py:add",
    )
    parser.add_argument(
        "--browser",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the built-in browser tool (Chromium; default on)",
    )
    parser.add_argument(
        "--python",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the built-in python sandbox (default on)",
    )
    parser.add_argument(
        "--allow-domain",
        action="append",
        default=None,
        metavar="DOMAIN",
        help="only let the browser load these domains (repeatable)",
    )
    parser.add_argument(
        "--allow-private-network",
        action="store_true",
        help="let the browser load loopback and private addresses",
    )
    parser.add_argument(
        "--search-dir", metavar="DIR", help="offline search over the HTML/Markdown files in DIR"
    )
    parser.add_argument(
        "--search-base-url",
        metavar="URL",
        default="",
        help="the URL where --search-dir is served (results link there)",
    )
    parser.add_argument("--searxng", metavar="URL", help="search with this SearXNG instance")
    parser.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="SERVER",
        help="an MCP server's tools (repeatable): 'stdio:COMMAND ARGS...' or "
        "http://HOST:PORT/mcp (needs harmony-agent[mcp])",
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="record the run as OpenTelemetry spans, exported with the OTEL_EXPORTER_OTLP_* "
        "settings (to stderr as JSON when no endpoint is set)",
    )
    parser.add_argument("--instructions", help="developer instructions")
    parser.add_argument(
        "--effort",
        choices=["low", "medium", "high"],
        default="medium",
        help="reasoning effort (default medium)",
    )
    parser.add_argument("--max-turns", type=int, default=30, help="model turns before giving up")
    parser.add_argument("--max-tokens", type=int, default=8192, help="sampling limit per turn")
    parser.add_argument(
        "--max-tool-calls", type=int, metavar="N", help="stop the run before tool call N+1"
    )
    parser.add_argument(
        "--max-input-tokens", type=int, metavar="N", help="stop before input tokens pass N"
    )
    parser.add_argument(
        "--max-output-tokens", type=int, metavar="N", help="stop once output tokens pass N"
    )
    parser.add_argument(
        "--max-total-tokens", type=int, metavar="N", help="stop before input+output pass N"
    )
    parser.add_argument(
        "--max-cost", type=float, metavar="USD", help="stop once the run costs more (--price-*)"
    )
    parser.add_argument(
        "--max-wall", type=float, metavar="SECONDS", help="stop once the run takes longer"
    )
    parser.add_argument("--temperature", type=float, help="sampling temperature (engine default)")
    parser.add_argument(
        "--adapter",
        metavar="NAME",
        help="the LoRA adapter to sample with (the engine must serve it; default: the base model)",
    )
    parser.add_argument(
        "--context-window",
        type=int,
        metavar="N",
        help="tokens the model attends to (default: the engine's, else 131072)",
    )
    parser.add_argument(
        "--max-reasoning-tokens",
        type=int,
        metavar="N",
        help="reasoning tokens per turn; at the limit the model is made to answer",
    )
    parser.add_argument(
        "--no-compaction",
        action="store_true",
        help="never compact the context (a full context ends the run)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON event per line on stdout"
    )
    parser.add_argument(
        "--hide-reasoning", action="store_true", help="do not show the chain of thought"
    )
    parser.add_argument(
        "--price-input", type=float, default=0.07, help="$ per million input tokens (default 0.07)"
    )
    parser.add_argument(
        "--price-cached",
        type=float,
        default=0.04,
        help="$ per million cached input tokens (default 0.04)",
    )
    parser.add_argument(
        "--price-output",
        type=float,
        default=0.30,
        help="$ per million output tokens (default 0.30)",
    )


def build_parser() -> argparse.ArgumentParser:
    # Long but flat: one sub-command after the other, as `--help` lists them.
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
    _agent_options(run)
    run.add_argument(
        "--trace",
        metavar="FILE",
        help="write the run to FILE as JSON lines (resume, replay, trace view)",
    )
    run.add_argument(
        "--output-schema",
        metavar="SCHEMA",
        help="answer as JSON matching SCHEMA (a .json schema file, or MODULE:TYPE such as a "
        "pydantic model); the validated JSON goes to stdout",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="overwrite the --trace FILE if it already holds a run (refused otherwise)",
    )
    _approve_option(run, "--approve")

    chat = sub.add_parser(
        "chat",
        help="a multi-turn conversation in the terminal",
        description="Chat with the agent: one line per message, an empty line or EOF ends. "
        "Earlier reasoning is dropped between your messages, as Harmony prescribes.",
    )
    _agent_options(chat)
    _approve_option(chat, "--approve", modes=("ask", "all"))

    resume = sub.add_parser(
        "resume",
        help="continue a run that stopped or paused, from its last complete step",
        description="Continue the run recorded in TRACE (after a crash, Ctrl-C, an engine "
        "failure, or a pause for approval) from its last complete step, appending to the same "
        "trace. Give the same --tools as the original run. A paused run needs a decision on "
        "the call it waits on: --approve CALL_ID or --reject CALL_ID[:REASON].",
    )
    resume.add_argument("trace", metavar="TRACE", help="the trace file of the run")
    _agent_options(resume)
    resume.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="CALL_ID",
        dest="approve_ids",
        help="run this pending tool call (repeatable)",
    )
    resume.add_argument(
        "--reject",
        action="append",
        default=[],
        metavar="CALL_ID[:REASON]",
        help="decline this pending tool call; the model reads the reason (repeatable)",
    )
    _approve_option(resume, "--approve-next", default=None)

    replay = sub.add_parser(
        "replay",
        help="re-run a trace's model outputs through the current tools",
        description="Play back the model outputs recorded in TRACE, turn by turn, running the "
        "current tools on them: a deterministic re-run. Shows each tool output that changed as "
        "a diff (with --json, a last replay_summary line holds them).",
    )
    replay.add_argument("trace", metavar="TRACE", help="the trace file of the run")
    replay.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a tool output differs from the trace (a CI gate); each change is "
        "shown as a diff either way",
    )
    _agent_options(replay, engine=False)

    trace = sub.add_parser(
        "trace", help="work with trace files", description="Work with trace files."
    )
    trace_sub = trace.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", required=True)
    view = trace_sub.add_parser(
        "view",
        help="render a trace as one self-contained HTML page",
        description="Render TRACE as a self-contained HTML page: turns, reasoning, tool calls, "
        "results, durations, tokens and cached ratio, errors highlighted.",
    )
    view.add_argument("trace", metavar="TRACE", help="the trace file")
    view.add_argument(
        "-o", "--output", metavar="FILE", help="where to write the page (default: TRACE with .html)"
    )

    batch = sub.add_parser(
        "batch",
        help="run a JSON-lines file of tasks, resumably, over processes or Ray",
        description='Run every task of TASKS (JSON lines: {"task": ..., "id": ..., '
        '"settings": {...}}) and append each result to RESULTS as it finishes (fsynced). '
        "Running it again skips the tasks already done. A progress bar goes to stderr.",
    )
    batch.add_argument("tasks", metavar="TASKS", help="the tasks file (JSON lines)")
    batch.add_argument(
        "-o", "--output", metavar="RESULTS", required=True, help="the results file (JSON lines)"
    )
    batch.add_argument(
        "-j", "--concurrency", type=int, default=16, help="runs at once per worker (default 16)"
    )
    batch.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (or Ray actors), each with its own browser, sandboxes and "
        "engine client (default 1: this process)",
    )
    batch.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: a local Ray without ADDRESS, else the cluster at ADDRESS "
        "(needs harmony-agent[ray])",
    )
    batch.add_argument(
        "--traces", metavar="DIR", help="write each run's trace to DIR/ID.jsonl (for export)"
    )
    batch.add_argument(
        "--retry-failed", action="store_true", help="run the tasks recorded as failed again"
    )
    _agent_options(batch)

    export = sub.add_parser(
        "export",
        help="turn traces into training data (token ids + loss mask, or chat JSONL)",
        description="Write one JSON line per finished run of the TRACE files: --format tokens "
        "(prompt_ids, response_ids, response_mask/loss_mask, logprobs, turn boundaries: verl "
        "and SkyRL field names) or --format chat (OpenAI-style fine-tuning messages with "
        "reasoning and tool calls, checked to round-trip through Harmony).",
    )
    export.add_argument("traces", metavar="TRACE", nargs="+", help="trace files")
    export.add_argument("--format", choices=["tokens", "chat"], required=True)
    export.add_argument("-o", "--output", metavar="FILE", required=True, help="the JSONL file")
    export.add_argument(
        "--include-unfinished",
        action="store_true",
        help="tokens: also runs without a final answer (their steps so far)",
    )
    return parser


def _approve_option(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    modes: Sequence[str] = ("ask", "all", "none"),
    default: str | None = "all",
) -> None:
    parser.add_argument(
        flag,
        choices=modes,
        default=default,
        dest="approve_mode",
        help="tool calls: ask = confirm each one (y/n, in a terminal); all = run them all"
        + ("; none = pause the run at the first one, to resume later" if "none" in modes else "")
        + (
            f" (default {default})" if default else " (default: none when the run paused, else all)"
        ),
    )


_COMMANDS = {
    "run": cmd_run,
    "chat": cmd_chat,
    "resume": cmd_resume,
    "replay": cmd_replay,
    "trace": cmd_trace,
    "batch": cmd_batch,
    "export": cmd_export,
}


Command = Callable[[argparse.Namespace, Console, Console], Awaitable[int]]


async def _interruptible(
    command: Command, args: argparse.Namespace, out: Console, err: Console
) -> int:
    """Run a command; Ctrl-C (or SIGTERM) cancels it the anyio way, so that whatever it is
    waiting on — the engine, a tool in a worker thread, stdin — lets go at once and every run
    closes its resources (browser contexts, sandboxes, trace) before the process exits."""
    if threading.current_thread() is not threading.main_thread():
        return await command(args, out, err)  # signals can only be handled on the main thread
    interrupted = False
    code = 130
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupted = True
                    tg.cancel_scope.cancel()
                    return

        async def body() -> None:
            nonlocal code, error
            try:
                code = await command(args, out, err)
            except Exception as exc:  # kept whole, not wrapped in an exception group
                error = exc
            finally:
                tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(body)
    if interrupted:
        raise KeyboardInterrupt
    if error is not None:
        raise error
    return code


def _exit_now_if_threads_linger(code: int) -> int:
    """A sync tool cut off by Ctrl-C may still be running in its worker thread, which
    Python would wait for at exit: flush and leave without it."""
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Console(file=sys.stdout, soft_wrap=True)
    err = Console(file=sys.stderr, soft_wrap=True)
    try:
        # uvloop (when installed) for batches: many streams, the cheapest loop per event
        options = loop_options() if args.command == "batch" else {}
        return anyio.run(
            _interruptible, _COMMANDS[args.command], args, out, err, backend_options=options
        )
    except ConfigurationError as exc:
        print(f"harmony-agent: {_with_flags(exc)}", file=sys.stderr)
        return 2
    except HarmonyAgentError as exc:
        print(
            f"harmony-agent: {type(exc).__name__}: {_with_flags(exc, first_line=True)}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            "harmony-agent: interrupted; what completed is in the trace, if one was written",
            file=sys.stderr,
        )
        return _exit_now_if_threads_linger(130)


if __name__ == "__main__":
    sys.exit(main())
