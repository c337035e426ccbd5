"""The reference browser (``gpt_oss.tools.simple_browser``) as an oracle, and ours beside it.

Both sides get the same HTML and URL; each function returns the exact text the model would
read: a page view, or the view of a ``find`` results page.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from harmony_agent._encoding import VOCAB_FILE, cache_dir, load_encoding

if TYPE_CHECKING:
    from harmony_agent.tools.browser._render import PageSnapshot

CORPUS = Path(__file__).parent / "corpus"
# where tiktoken looks for o200k_base: a file named by the SHA-1 of its download URL
_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def _offline_tiktoken() -> None:
    """Give tiktoken the o200k vocabulary we already hold, so it never downloads it."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    load_encoding()  # unpacks (and checks) the vocabulary into our cache
    source = Path(os.environ["TIKTOKEN_ENCODINGS_BASE"]) / VOCAB_FILE
    target_dir = cache_dir() / "tiktoken"
    target = target_dir / hashlib.sha1(_O200K_URL.encode()).hexdigest()
    if not target.exists():
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target_dir)


_offline_tiktoken()
try:
    from gpt_oss.tools.simple_browser import page_contents as ref_pc
    from gpt_oss.tools.simple_browser import simple_browser_tool as ref_tool
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    raise ImportError(
        f"the reference browser (gpt-oss) is not importable: {exc}. Run `make setup`, or "
        "pip install -e '.[test-reference]' and "
        "pip install --no-deps --ignore-requires-python gpt-oss==0.0.9"
    ) from exc


def corpus_pages() -> list[str]:
    return sorted(p.stem for p in CORPUS.glob("*.html"))


def corpus_html(name: str) -> str:
    return (CORPUS / f"{name}.html").read_text(encoding="utf-8")


# --- the reference ---------------------------------------------------------------------------


def ref_page(html: str, url: str):
    return ref_pc.process_html(html, url, None, display_urls=True)


async def _run(function: str, page, call):
    tool = ref_tool.SimpleBrowserTool(backend=None)
    tool.tool_state.add_page(page)
    token = ref_tool._live_function_name.set(function)
    try:
        return await call(tool)
    finally:
        ref_tool._live_function_name.reset(token)


def ref_view(page, loc: int = 0, num_lines: int = -1) -> str:
    async def show(tool):
        return (await tool.show_page(loc=loc, num_lines=num_lines)).content[0].text

    return asyncio.run(_run("open", page, show))


def ref_find(page, pattern: str) -> str:
    async def find(tool):
        (message,) = [m async for m in tool.find(pattern=pattern)]
        return message.content[0].text

    return asyncio.run(_run("find", page, find))


def ref_lines(page) -> list[str]:
    return ref_tool.wrap_lines(page.text)


# --- ours (imported when used, so the reference half also serves older versions of ours) ------


def our_page(html: str, url: str) -> PageSnapshot:
    from harmony_agent.tools.browser._extract import page_from_html

    return page_from_html(html, url)


def our_view(page: PageSnapshot, loc: int = 0, num_lines: int | None = None) -> str:
    from harmony_agent.tools.browser._render import render_view

    return render_view(page, 0, loc, num_lines, load_encoding())


def our_find(page: PageSnapshot, pattern: str) -> str:
    from harmony_agent.tools.browser._render import find_in_page, render_view

    return render_view(find_in_page(page, 0, pattern), 1, 0, None, load_encoding())


def view_locs(total_lines: int, view: Callable[[int], str]) -> list[int]:
    """The first line of each view that scrolling through a page shows."""
    locs, loc = [], 0
    while loc < total_lines:
        locs.append(loc)
        last = int(re.search(r"viewing lines \[\d+ - (\d+)\]", view(loc)).group(1))
        loc = last + 1
    return locs
