"""How many browser views are byte-identical to the reference browser's (gpt-oss simple_browser).

Serves the golden corpus (tests/tools/browser/corpus) on 127.0.0.1, opens every page through
the whole BrowserTool (Chromium), scrolls through it view by view at the reference's view
boundaries (and one 5-line view from L3), runs its find patterns, and compares each text with what the reference's own
page-processing and display code gives for the same static HTML and URL (cursor numbers
aside). Needs `make setup` (the reference is a test-only dependency). Prints the count and
the views that differ.

    .venv/bin/python bench/browser_fidelity.py
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import http.server
import json
import re
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.tools.browser.reference import (  # noqa: E402  (after the path is set)
    CORPUS,
    corpus_html,
    corpus_pages,
    ref_find,
    ref_lines,
    ref_page,
    ref_view,
    view_locs,
)
from tests.tools.browser.test_fidelity import FIND  # noqa: E402

_CURSOR = re.compile(r"^\[\d+\] ")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


async def _ours(base: str, plan: dict[str, tuple[list[int], list[str]]]) -> dict:
    from harmony_agent import RunContext
    from harmony_agent.tools import BrowserTool

    tool = BrowserTool(allow_private_network=True, page_timeout=30)
    fns = {t.name: t for t in tool.tools()}
    out: dict[tuple[str, str], str] = {}

    async def call(name: str, args: dict) -> str:
        return (await fns[name].invoke(json.dumps(args), ctx)).text

    async with RunContext.open() as ctx:
        cursor = -1
        for name, (locs, patterns) in plan.items():
            await call("open", {"id": f"{base}/{name}.html"})
            cursor += 1
            page_cursor = cursor
            for loc in locs:
                out[(name, f"view L{loc}")] = await call(
                    "open", {"cursor": page_cursor, "loc": loc}
                )
                cursor += 1
            out[(name, "view L3+5")] = await call(
                "open", {"cursor": page_cursor, "loc": 3, "num_lines": 5}
            )
            cursor += 1
            for pattern in patterns:
                out[(name, f"find {pattern!r}")] = await call(
                    "find", {"pattern": pattern, "cursor": page_cursor}
                )
                cursor += 1
    return out


def main() -> int:
    handler = functools.partial(_Quiet, directory=str(CORPUS))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        expected: dict[tuple[str, str], str] = {}
        plan: dict[str, tuple[list[int], list[str]]] = {}
        for name in corpus_pages():
            ref = ref_page(corpus_html(name), f"{base}/{name}.html")
            locs = view_locs(len(ref_lines(ref)), lambda loc, ref=ref: ref_view(ref, loc))
            plan[name] = (locs, FIND[name])
            for loc in locs:
                expected[(name, f"view L{loc}")] = ref_view(ref, loc)
            expected[(name, "view L3+5")] = ref_view(ref, 3, 5)
            for pattern in FIND[name]:
                expected[(name, f"find {pattern!r}")] = ref_find(ref, pattern)
        ours = asyncio.run(_ours(base, plan))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    same = 0
    views = [k for k in expected if k[1].startswith("view")]
    finds = [k for k in expected if k[1].startswith("find")]
    for key in expected:
        a, b = _CURSOR.sub("", expected[key]), _CURSOR.sub("", ours[key])
        if a == b:
            same += 1
            continue
        print(f"--- differs: {key[0]} {key[1]}")
        for line in list(difflib.unified_diff(a.split("\n"), b.split("\n"), lineterm="", n=0))[2:8]:
            print("   ", line)
    same_views = sum(_CURSOR.sub("", expected[k]) == _CURSOR.sub("", ours[k]) for k in views)
    same_finds = same - same_views
    print(
        f"identical: {same_views} of {len(views)} views, {same_finds} of {len(finds)} finds "
        f"({len(plan)} pages)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
