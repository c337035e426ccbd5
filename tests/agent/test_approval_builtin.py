"""needs_approval on the built-in tools, end to end: the real Chromium loads nothing and the
real sandbox runs nothing until the call is approved."""

from __future__ import annotations

import http.server
import threading

import anyio
import pytest
from harmony_agent import Agent, RunState
from harmony_agent.engine import ScriptedEngine

DATE = "2026-01-01"
PAGE = b"<!doctype html><html><head><title>Ledger</title></head><body><p>Balance: 42 EUR.</p></body></html>"


@pytest.fixture
def site():
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ledger.html", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.browser
def test_browser_open_waits_for_approval_then_loads_the_page(site):
    from harmony_agent.tools.browser import BrowserTool

    url, hits = site

    def agent(replies):
        browser = BrowserTool(allow_private_network=["127.0.0.1"], needs_approval={"open": True})
        return Agent(tools=[browser], engine=ScriptedEngine(replies), conversation_start_date=DATE)

    call = (
        f'<|channel|>analysis to=browser.open <|constrain|>json<|message|>{{"id":"{url}"}}<|call|>'
    )
    paused = agent([call]).run_sync("What is the balance?")
    assert paused.status == "paused" and paused.interruptions[0].tool == "browser.open"
    assert hits == []  # Chromium was not asked for anything

    state = RunState.from_json(paused.state.to_json())
    final = "<|channel|>final<|message|>42 EUR.<|return|>"
    fresh = agent([final])
    result = anyio.run(lambda: fresh.resume(state, approve={state.pending[0].call_id: True}))
    # Chromium may also ask for the site's icon once the page has loaded
    assert result.final_text == "42 EUR."
    assert [h for h in hits if h != "/favicon.ico"] == ["/ledger.html"]
    assert "Balance: 42 EUR." in result.tool_calls[0].output
    assert fresh.engine.requests[0][: len(state.prompt_ids)] == state.prompt_ids


@pytest.mark.sandbox
def test_python_runs_in_the_sandbox_once_approved(tmp_path):
    from harmony_agent.tools.python import PythonTool

    code = "<|channel|>analysis to=python code<|message|>print(6 * 7)<|call|>"
    final = "<|channel|>final<|message|>42<|return|>"
    agent = Agent(
        tools=[PythonTool(needs_approval=True)],
        engine=ScriptedEngine([code, final]),
        conversation_start_date=DATE,
    )
    asked = []

    async def approve(ctx, call):
        asked.append(call.arguments)
        return True

    result = anyio.run(lambda: agent.run("6*7?", approver=approve))
    assert asked == ["print(6 * 7)"]
    assert result.tool_calls[0].ok and result.tool_calls[0].output.strip() == "42"
