"""Browser tool: open + render of a local 100 KB and 1 MB page (warm browser), find on the
1 MB page, pages opened concurrently in one browser, and what the egress proxy adds to one
request. Run: ``python bench/bench_browser.py``."""

from __future__ import annotations

import http.server
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _report import Figure, main_cli
from harmony_agent import RunContext
from harmony_agent.tools import BrowserTool
from harmony_agent.tools.browser import UrlPolicy
from harmony_agent.tools.browser._proxy import EgressProxy


def page(kb: int) -> bytes:
    para = "<p>" + "The quick brown fox jumps over the lazy dog near the river bank. " * 12 + "</p>"
    n = kb * 1024 // len(para)
    links = "".join(f'<a href="/p{i}.html">link {i}</a> ' for i in range(100))
    return f"<html><head><meta charset=utf-8><title>{kb} KB</title></head><body><h1>Page</h1>{links}{para * n}</body></html>".encode()


PAGES = {"/100k.html": page(100), "/1m.html": page(1024)}
OTHER = page(10)  # any other path: a small page with the same links


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = PAGES.get(self.path.split("?")[0], OTHER)
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


async def measure(base: str, repeat: int) -> dict[str, float]:
    tool = BrowserTool(allow_private_network=["127.0.0.1"])
    tools = {t.name: t for t in tool.tools()}
    out: dict[str, list[float]] = {"100k": [], "1m": [], "find": [], "conc": []}
    async with RunContext.open() as ctx:
        await tools["open"].invoke(json.dumps({"id": base + "/p0.html"}), ctx)  # warm up
        for name, path in (("100k", "/100k.html"), ("1m", "/1m.html")):
            for _ in range(repeat):
                t = time.perf_counter()
                result = await tools["open"].invoke(json.dumps({"id": base + path}), ctx)
                out[name].append(time.perf_counter() - t)
                assert result.ok, result.text
        cursor = int(result.text[1 : result.text.index("]")])  # the 1 MB page
        for _ in range(repeat * 3):
            t = time.perf_counter()
            args = {"pattern": "river bank", "cursor": cursor}
            result = await tools["find"].invoke(json.dumps(args), ctx)
            out["find"].append(time.perf_counter() - t)
            assert result.ok

    # 8 runs at once, each its own context, in the one browser
    async def one(i: int) -> None:
        async with RunContext.open() as run_ctx:
            await tools["open"].invoke(json.dumps({"id": f"{base}/p{i}.html"}), run_ctx)

    for _ in range(max(1, repeat // 3)):
        t = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
        out["conc"].append(8 / (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in out.items()}


async def proxy_cost(base: str, repeat: int) -> dict[str, float]:
    """A small GET on a fresh connection, direct and through the egress proxy (which opens one
    upstream connection per plain-HTTP request, as it does for Chromium)."""
    out: dict[str, list[float]] = {"direct": [], "proxied": []}
    proxy = EgressProxy(UrlPolicy(private_exceptions=("127.0.0.1",)))
    async with proxy.running() as proxy_url:
        for name, via in (("direct", None), ("proxied", proxy_url)):
            for _ in range(repeat):
                async with httpx.AsyncClient(proxy=via) as client:
                    t = time.perf_counter()
                    response = await client.get(base + "/p1.html")
                    out[name].append(time.perf_counter() - t)
                    assert response.status_code == 200, response.text
    return {k: statistics.median(v) for k, v in out.items()}


def run(quick: bool = False) -> list[Figure]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        r = anyio.run(measure, base, 5 if quick else 15)
        cost = anyio.run(proxy_cost, base, 20 if quick else 100)
    finally:
        server.shutdown()
        server.server_close()
    return [
        Figure("browser", "open + render 100 KB page (warm)", r["100k"] * 1e3, "ms", "", "median"),
        Figure("browser", "open + render 1 MB page (warm)", r["1m"] * 1e3, "ms", "", "median"),
        Figure("browser", "find on the 1 MB page", r["find"] * 1e3, "ms", "", "median"),
        Figure(
            "browser",
            "8 runs opening a page at once",
            r["conc"],
            "pages/s",
            "",
            "one browser, a context per run",
        ),
        Figure(
            "browser", "small GET, direct", cost["direct"] * 1e3, "ms", "", "median, new connection"
        ),
        Figure(
            "browser",
            "small GET through the egress proxy",
            cost["proxied"] * 1e3,
            "ms",
            "",
            "median, new connection; policy check included",
        ),
    ]


if __name__ == "__main__":
    main_cli(run, "browser benchmarks")
