from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

SITE = Path(__file__).parent / "site"
LONG = (
    "<!doctype html><html><head><meta charset=utf-8><title>Long page</title></head><body><h1>Long page</h1><p>"
    + " ".join(f"Sentence {i} about the history of the island and its people." for i in range(120))
    + "</p></body></html>"
)


class Handler(http.server.SimpleHTTPRequestHandler):
    hits: list[str]
    other_port = 0
    blocked_port = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(SITE), **kwargs)

    def log_message(self, *args):
        pass

    def _send(self, body: bytes, ctype="text/html; charset=utf-8", status=200, headers=()):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.hits.append(self.path)
        path = self.path.split("?")[0]
        if path == "/long.html":
            return self._send(LONG.encode())
        if path == "/big.html":
            cells = "".join(f"<div><span>cell {i}</span></div>" for i in range(160_000))
            return self._send(
                f"<html><head><title>Big DOM</title></head><body>{cells}</body></html>".encode()
            )
        if path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            target = "/article.html" if n <= 0 else f"/redirect/{n - 1}"
            return self._send(b"", status=302, headers=[("location", target)])
        if path == "/loop":
            return self._send(b"", status=302, headers=[("location", "/loop")])
        if path == "/to-private":
            target = f"http://127.0.0.3:{self.blocked_port}/x"
            return self._send(b"", status=302, headers=[("location", target)])
        if path == "/download.bin":
            return self._send(
                b"\0" * 1000,
                ctype="application/octet-stream",
                headers=[("content-disposition", "attachment; filename=x.bin")],
            )
        if path in ("/private.html", "/popup.html"):
            body = (SITE / path.lstrip("/")).read_text()
            body = body.replace("BLOCKED_PORT", str(self.blocked_port))
            return self._send(body.replace("PORT", str(self.other_port)).encode())
        return super().do_GET()


@pytest.fixture(scope="session")
def servers():
    """The test site on 127.0.0.1, and two more hosts that record what reaches them: 127.0.0.2
    and 127.0.0.3, the "blocked targets" (the tests allow 127.0.0.1 only, or 127.0.0.1 and
    127.0.0.2, so every refused request stays on loopback)."""
    servers, hits = [], {"main": [], "other": [], "blocked": []}
    for name, host in (("other", "127.0.0.2"), ("blocked", "127.0.0.3"), ("main", "127.0.0.1")):
        handler = type(f"H{name}", (Handler,), {"hits": hits[name]})
        if name == "main":
            handler.other_port = servers[0].server_address[1]
            handler.blocked_port = servers[1].server_address[1]
        server = http.server.ThreadingHTTPServer((host, 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    urls = {
        name: f"http://{s.server_address[0]}:{s.server_address[1]}"
        for name, s in zip(("other", "blocked", "main"), servers, strict=True)
    }
    yield urls, hits
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def site(servers):
    """(base URL of the site on 127.0.0.1, the paths each host was asked for)."""
    urls, hits = servers
    return urls["main"], hits


@pytest.fixture(scope="session")
def blocked_base(servers):
    """http://127.0.0.3:PORT: a host the tests' policies refuse; its hits are hits["blocked"]."""
    return servers[0]["blocked"]
