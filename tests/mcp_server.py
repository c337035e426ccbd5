"""A small MCP server for the MCP toolset tests, written with the official SDK.

Run ``python tests/mcp_server.py stdio`` (the client launches it) or
``python tests/mcp_server.py http PORT`` (streamable HTTP on 127.0.0.1:PORT/mcp;
``sse PORT``: the older HTTP+SSE transport on /sse).
``MCP_TEST_MARKER``: a file the server appends one line to each time it starts, so a test
can count (re)connections.
"""

from __future__ import annotations

import base64
import os
import sys
import time

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp_types import BlobResourceContents, EmbeddedResource, TextContent

# a 1x1 red PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)

server = MCPServer("testsrv", instructions="Tools for tests.", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str, times: int = 1) -> str:
    """Repeat a text."""
    return " ".join([text] * times)


@server.tool()
def lookup(city: str) -> dict:
    """Weather for a city, as structured data."""
    return {"city": city, "temp_c": 21}


@server.tool()
def fail(reason: str) -> str:
    """Always fails with the given reason."""
    raise ToolError(f"cannot do it: {reason}")


@server.tool()
def picture() -> list:
    """A tiny picture and a binary attachment."""
    blob = BlobResourceContents(
        uri="file:///report.bin",
        mime_type="application/octet-stream",
        blob=base64.b64encode(b"\x00\x01").decode(),
    )
    return [
        TextContent(text="here is the picture"),
        Image(data=PNG, format="png").to_image_content(),
        EmbeddedResource(resource=blob),
    ]


@server.tool()
async def slow(seconds: float) -> str:
    """Sleeps, then answers."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """Ends the server process at once (a crash)."""
    os._exit(3)


@server.tool()
def crash_once(marker: str) -> str:
    """Crashes the first time it is called for ``marker`` (a file), answers after that."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write("crashed")
        os._exit(3)
    return "fine after a restart"


def _extra(word: str) -> str:
    """A tool that appeared later."""
    return word.upper()


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds the tool ``extra`` and tells the client that the tool list changed."""
    server.add_tool(_extra, name="extra")
    await ctx.session.send_tool_list_changed()
    return "added extra"


def main() -> None:
    marker = os.environ.get("MCP_TEST_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()} {time.time()}\n")
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport == "stdio":
        server.run("stdio")
    elif transport == "sse":
        server.run("sse", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))


if __name__ == "__main__":
    main()
