"""A form-filling agent: the browser's automation functions (an accessibility snapshot with
element refs, type, select, click) act on a real page in Chromium.

    python examples/form_filling.py                                   # offline: scripted model
    python examples/form_filling.py --engine http://localhost:8000/v1  # a real gpt-oss

The example serves a small order form on 127.0.0.1 and asks the agent to fill and send it.
Offline, a scripted policy reads the snapshot's refs and plays the model.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import re
import threading
from collections.abc import Iterator

import anyio
from harmony_agent import Agent
from harmony_agent._encoding import load_encoding
from harmony_agent.cli import make_engine
from harmony_agent.engine import FunctionEngine, GenerationRequest
from harmony_agent.tools import BrowserTool

FORM = b"""<!doctype html><html><head><meta charset="utf-8"><title>Order form</title></head><body>
<h1>Order a print</h1>
<form action="/done" method="get">
<label>Your name <input name="name" type="text"></label>
<label>Size <select name="size"><option value="a4">A4</option><option value="a3">A3</option></select></label>
<button type="submit">Place order</button></form></body></html>"""


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = (
            FORM
            if self.path == "/"
            else (
                b"<html><head><title>Thanks</title></head><body><h1>Order placed</h1><p>"
                + self.path.encode()
                + b"</p></body></html>"
            )
        )
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def shop() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def scripted(url: str):
    enc = load_encoding()

    def fn(request: GenerationRequest, turn: int) -> str:
        prompt = enc.decode(list(request.prompt_ids))
        last = prompt.rsplit("<|message|>", 1)[-1]
        ref = lambda kind, name: re.search(rf'{kind} "{name}" \[ref=(e\d+)\]', prompt).group(1)  # noqa: E731
        fn_call = "<|channel|>commentary to=functions.{} <|constrain|>json<|message|>{}<|call|>"
        if turn == 0:
            return f'<|channel|>analysis to=browser.open code<|message|>{{"id": "{url}"}}<|call|>'
        if turn == 1:
            return fn_call.format("browser_snapshot", "{}")
        if turn == 2:
            return fn_call.format(
                "browser_type",
                f'{{"ref": "{ref("textbox", "Your name")}", "text": "Ada Lovelace"}}',
            )
        if turn == 3:
            return fn_call.format(
                "browser_select", f'{{"ref": "{ref("combobox", "Size")}", "values": ["A3"]}}'
            )
        if turn == 4:
            return fn_call.format("browser_click", f'{{"ref": "{ref("button", "Place order")}"}}')
        return f"<|channel|>final<|message|>Order placed: {last.split('now at ')[-1].split('<|end|>')[0]}<|return|>"

    return FunctionEngine(fn)


async def fill(engine, url: str) -> str:
    agent = Agent(
        "Fill web forms exactly as asked.",
        tools=[BrowserTool(automation=True, allow_private_network=["127.0.0.1"])],
        engine=engine,
        reasoning_effort="low",
    )
    result = await agent.run(f"Open {url}, order an A3 print for Ada Lovelace and send the form.")
    for call in result.tool_calls:
        print(f"  {call.recipient}: {call.output.splitlines()[0][:100]}")
    print(result.final_text)
    return result.final_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="vllm[:MODEL] or http://HOST:PORT/v1 (default: scripted)")
    args = parser.parse_args()
    with shop() as url:
        engine = make_engine(args.engine) if args.engine else scripted(url)
        anyio.run(fill, engine, url)


if __name__ == "__main__":
    main()
