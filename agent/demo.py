"""``make demo``: a browsing task answered with citations, end to end.

The demo serves a small bundled site (a visitor guide to a fictional island) on 127.0.0.1,
gives the agent the real browser (Chromium) with an offline search over that site and the
real python sandbox, and asks a question that needs both. The model is gpt-oss-20b in
process when vLLM and a CUDA GPU are there (or any engine given with ``--engine``);
otherwise an offline demo model stands in — a small policy that reads the real tool outputs
and writes Harmony replies — and the output says so.

    python -m harmony_agent.demo [--engine vllm|http://HOST:PORT/v1] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import importlib.util
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from harmony_agent import Agent
from harmony_agent.engine import Engine, FunctionEngine, GenerationRequest
from rich.console import Console

from ._console import EventView
from ._encoding import load_encoding

__all__ = ["TASK", "demo_model", "main", "serve_site"]

TASK = (
    "How tall is the Varra lighthouse and when was it built? And what is the average monthly "
    "rainfall on Varra? Cite your sources."
)
INSTRUCTIONS = "Answer from the sources you open, cite them, and compute with python."


@contextlib.contextmanager
def serve_site() -> Iterator[tuple[str, Path]]:
    """The bundled demo site on 127.0.0.1 (a free port); yields (base URL, folder)."""
    with resources.as_file(resources.files("harmony_agent") / "demo_site") as folder:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}", Path(folder)
        finally:
            server.shutdown()
            server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- the offline demo model ------------------------------------------------------------------


def _last_tool_output(prompt: str) -> str:
    m = re.findall(
        r"<\|start\|>(?:browser\.\w+|python) to=assistant<\|channel\|>\w+<\|message\|>(.*?)<\|end\|>",
        prompt,
        re.S,
    )
    return m[-1] if m else ""


def _cursor(view: str) -> int:
    return int(re.match(r"\[(\d+)\]", view).group(1))  # type: ignore[union-attr]


def _link(view: str, words: str) -> int:
    m = re.search(r"【(\d+)†[^】]*" + words, view)
    return int(m.group(1)) if m else 0


def _call(fn: str, args: str, thought: str) -> str:
    return (
        f"<|channel|>analysis<|message|>{thought}<|end|><|start|>assistant"
        f"<|channel|>analysis to={fn} code<|message|>{args}<|call|>"
    )


class _DemoModel:
    """Reads the real tool outputs in the prompt and writes the next Harmony reply."""

    def __init__(self) -> None:
        self.enc = load_encoding()
        self.notes: dict[str, int] = {}
        self.rain: list[int] = []

    def __call__(self, request: GenerationRequest, turn: int) -> str:
        prompt = self.enc.decode(list(request.prompt_ids))
        seen = _last_tool_output(prompt)
        step = prompt.count(" to=assistant<|channel|>")
        if step == 0:
            return _call(
                "browser.search",
                '{"query": "Varra lighthouse height built"}',
                "I should search the visitor guide for the lighthouse first.",
            )
        if step == 1:
            return _call(
                "browser.open",
                f'{{"id": {_link(seen, "Lighthouse")}}}',
                "The lighthouse page looks right; open it.",
            )
        if step == 2:
            self.notes["page"] = _cursor(seen)
            return _call(
                "browser.find", '{"pattern": "metres tall"}', "Find the height in the page."
            )
        if step == 3:
            line = int(re.search(r"match at L(\d+)", seen).group(1))  # type: ignore[union-attr]
            self.notes["height_line"] = line
            return _call(
                "browser.search",
                '{"query": "Varra climate rainfall month"}',
                "Built in 1873, 31 metres tall. Now the rainfall.",
            )
        if step == 4:
            return _call(
                "browser.open", f'{{"id": {_link(seen, "Climate")}}}', "Open the climate page."
            )
        if step == 5:
            self.notes["climate"] = _cursor(seen)
            # table rows as the browser shows them: cells joined by spaces
            rows = re.findall(r"^L(\d+): (\w+) [\d.]+ (\d+) *$", seen, re.M)
            self.rain = [int(mm) for _, _, mm in rows]
            self.notes["first_row"], self.notes["last_row"] = int(rows[0][0]), int(rows[-1][0])
            code = f"rain = {self.rain}\nround(sum(rain) / len(rain), 1)"
            return (
                "<|channel|>analysis<|message|>The table has twelve months of rainfall; "
                "average them with python.<|end|><|start|>assistant"
                f"<|channel|>analysis to=python code<|message|>{code}<|call|>"
            )
        number = re.search(r"^\s*(\d+(?:\.\d+)?)\s*$", seen, re.M)
        mean = number.group(1) if number else "(could not compute)"
        n = self.notes
        return (
            "<|channel|>analysis<|message|>I have everything.<|end|><|start|>assistant"
            "<|channel|>final<|message|>"
            f"The Varra lighthouse is **31 metres** tall and was **built in 1873** "
            f"【{n['page']}†L{n['height_line'] - 2}-L{n['height_line']}】. "
            f"The average monthly rainfall on Varra is **{mean} mm** (1991–2020 averages, "
            f"{sum(self.rain)} mm a year) "
            f"【{n['climate']}†L{n['first_row']}-L{n['last_row']}】.<|return|>"
        )


def demo_model() -> Engine:
    """The offline stand-in for gpt-oss-20b used when no real engine is available."""
    return FunctionEngine(_DemoModel(), chunk_size=2, delay=0.004)


def _real_engine_available() -> bool:
    return shutil.which("nvidia-smi") is not None and importlib.util.find_spec("vllm") is not None


async def run_demo(engine: Engine | None, out_dir: Path, console: Console, stdout: Console) -> int:
    from harmony_agent.report import render_report
    from harmony_agent.tools import BrowserTool, PythonTool
    from harmony_agent.tools.browser import LocalSearch, citations
    from harmony_agent.trace import load_trace

    if engine is None:
        if _real_engine_available():
            from harmony_agent.engine import VLLMEngine

            console.print("[bold green]model:[/] gpt-oss-20b in process (vLLM, CUDA)")
            engine = VLLMEngine("openai/gpt-oss-20b")
        else:
            console.print(
                "[bold yellow]model: offline demo model[/] — no CUDA GPU with vLLM here, so a "
                "small scripted policy stands in for gpt-oss-20b. The browser (Chromium), the "
                "search, the python sandbox and the agent loop are all real.\n"
            )
            engine = demo_model()
    trace_path = out_dir / "demo-trace.jsonl"
    await anyio.Path(out_dir).mkdir(parents=True, exist_ok=True)
    await anyio.Path(trace_path).unlink(missing_ok=True)
    with serve_site() as (base, folder):
        browser = BrowserTool(search=LocalSearch(folder, base), allow_private_network=["127.0.0.1"])
        agent = Agent(
            INSTRUCTIONS,
            tools=[browser, PythonTool(timeout=60)],
            engine=engine,
            reasoning_effort="low",
        )
        console.print(f"[bold]task:[/] {TASK}\n[dim]site: {base}[/]")
        view = EventView(console)
        async with engine:
            try:
                result = await agent.run(TASK, trace=trace_path, on_event=view.handle)
            finally:
                view.stop()
    view.answer(stdout, result.final_text)
    sources = citations(result.final_text, result)
    if sources:
        console.print("[bold]sources:[/]")
        for c in sources:
            where = f"{c.url} lines {c.start}-{c.end}" if c.url else "(unresolved)"
            console.print(
                f"  【{c.cursor}†L{c.start}-L{c.end}】 {c.title or ''} — {where}", soft_wrap=True
            )
    report = out_dir / "demo-report.html"
    await anyio.Path(report).write_text(render_report(load_trace(trace_path)), encoding="utf-8")
    console.print(f"[dim]trace: {trace_path}\nreport: {report}[/]")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harmony_agent.demo", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--engine",
        help="vllm[:MODEL] or http://HOST:PORT/v1 (default: gpt-oss-20b "
        "in process with a GPU, else the offline demo model)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out"),
        help="where the trace, report and files go (default ./out)",
    )
    args = parser.parse_args(argv)
    console, stdout = Console(stderr=True), Console()
    engine = None
    if args.engine:
        from .cli import make_engine

        engine = make_engine(args.engine)
    return anyio.run(run_demo, engine, args.out, console, stdout)


if __name__ == "__main__":
    sys.exit(main())
