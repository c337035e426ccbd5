"""A tiny MCP server (official ``mcp`` SDK) that keeps notes in memory, for examples/mcp_tools.py.

Run it by hand with ``python examples/servers/notes.py``: it speaks MCP over stdin/stdout.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

server = MCPServer("notes", instructions="A notebook.", log_level="WARNING")


class Note(BaseModel):
    id: int
    text: str
    tags: list[str] = Field(default_factory=list)


NOTES = [
    Note(id=1, text="Book the train to Paris for 3 December", tags=["travel"]),
    Note(id=2, text="Buy a present for Ada", tags=["personal"]),
    Note(id=3, text="Paris: the museum is closed on Mondays", tags=["travel"]),
]


@server.tool()
def search_notes(query: str, tag: str | None = None) -> list[Note]:
    """Notes whose text contains ``query`` (case-insensitive), optionally with a tag.

    Args:
        query: words to look for
        tag: only notes with this tag
    """
    return [n for n in NOTES if query.lower() in n.text.lower() and (tag is None or tag in n.tags)]


@server.tool()
def add_note(text: str, tags: list[str] | None = None) -> Note:
    """Add a note and return it."""
    note = Note(id=len(NOTES) + 1, text=text, tags=tags or [])
    NOTES.append(note)
    return note


@server.tool()
def delete_everything() -> str:
    """Delete every note (the example leaves this one out with exclude=)."""
    NOTES.clear()
    return "all notes deleted"


if __name__ == "__main__":
    server.run("stdio")
