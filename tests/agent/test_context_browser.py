"""Compaction on a real browsing run: stubs name the cursor, and the cursors stay valid."""

from __future__ import annotations

import http.server
import re
import threading

import anyio
import pytest
from harmony_agent import Agent, Compaction
from harmony_agent.engine import FunctionEngine
from harmony_agent.tools import BrowserTool

pytestmark = [pytest.mark.browser]


class Site(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        n = int(re.sub(r"\D", "", self.path) or 0)
        lines = "".join(
            f"<p>Paragraph {k} of page {n} on rivers, bridges and markets of town {n}.</p>"
            for k in range(40)
        )
        body = f"<html><head><title>Page {n}</title></head><body>{lines}</body></html>".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def base():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_reopening_a_compacted_cursor_works(base):
    pages = 10

    def reply(request, turn):
        call = (
            "<|start|>assistant<|channel|>commentary to=browser.open <|constrain|>json<|message|>"
        )
        if turn < pages:
            return f'<|channel|>analysis<|message|>Next page.<|end|>{call}{{"id": "{base}/p{turn}"}}<|call|>'
        if turn == pages:  # the first page's view was removed: scroll its cursor again
            return f'<|channel|>analysis<|message|>Back to the first.<|end|>{call}{{"cursor": 0, "loc": 5}}<|call|>'
        return "<|channel|>final<|message|>done<|return|>"

    agent = Agent(
        tools=[BrowserTool(allow_private_network=["127.0.0.1"])],
        engine=FunctionEngine(reply),
        context_window=6000,
        max_tokens_per_turn=500,
        compaction=Compaction(keep_recent=2),
        conversation_start_date="2026-01-01",
    )
    events = []
    result = anyio.run(lambda: agent.run("Read the pages.", on_event=events.append))
    assert result.final_text == "done"
    assert [e for e in events if e.type == "compacted"]
    outputs = [e.output for e in events if e.type == "tool_result"]
    assert outputs[0].startswith("[0] Page 0")
    reopened = outputs[-1]
    assert reopened.startswith("[") and "Page 0" in reopened.splitlines()[0]
    assert "**viewing lines [5 -" in reopened
    # the stub of the first page in the last prompt says which cursor it was
    last_prompt = agent.encoding.decode(agent.engine.requests[-1])
    assert "[browser.open result (cursor 0, " in last_prompt
    assert "removed to save context — open it again if needed]" in last_prompt
