"""An MCP ``CallToolResult`` → the text of the tool message.

Structured content, when the server sends it, is the message as compact JSON (its text blocks
are then only the same data pretty-printed, as the spec asks servers to add for older
clients: fewer tokens this way); otherwise the text blocks are. Images, audio and binary
resources are written to the run's files directory and named in the message, so the host
program can pick them up and the model knows they exist.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import uuid
from pathlib import Path
from typing import Any

import anyio

__all__ = ["result_text"]


def _extension(mime: str | None) -> str:
    if not mime:
        return ".bin"
    return mimetypes.guess_extension(mime.split(";")[0].strip()) or ".bin"


async def _save(files_dir: Path, stem: str, data: str, mime: str | None) -> tuple[str, int]:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raw = data.encode()
    name = f"{stem}-{uuid.uuid4().hex[:8]}{_extension(mime)}"
    await anyio.Path(files_dir / name).write_bytes(raw)
    return name, len(raw)


def _unwrapped(structured: Any, output_schema: dict[str, Any] | None) -> Any:
    """The value itself when the server wrapped a non-object return as ``{"result": value}``
    (the Python SDK does, and says so in the output schema)."""
    props = (output_schema or {}).get("properties")
    if (
        isinstance(structured, dict)
        and set(structured) == {"result"}
        and set(props or ()) == {"result"}
    ):
        return structured["result"]
    return structured


async def result_text(
    result: Any, files_dir: Path, stem: str, output_schema: dict[str, Any] | None = None
) -> tuple[str, list[str]]:
    """(the text the model reads, the names of the files written) for ``result``."""
    parts: list[str] = []
    files: list[str] = []
    structured = result.structured_content
    for block in result.content:
        kind = getattr(block, "type", None)
        if kind == "text":
            if structured is None:
                parts.append(block.text)
        elif kind in ("image", "audio"):
            name, size = await _save(files_dir, stem, block.data, block.mime_type)
            files.append(name)
            parts.append(f"[{kind} saved as {name} ({block.mime_type}, {size} bytes)]")
        elif kind == "resource_link":
            what = f" ({block.mime_type})" if block.mime_type else ""
            parts.append(f"[resource {block.name}: {block.uri}{what}]")
        elif kind == "resource":
            res = block.resource
            if getattr(res, "text", None) is not None:
                parts.append(f"[resource {res.uri}]\n{res.text}")
            else:
                name, size = await _save(files_dir, stem, res.blob, res.mime_type)
                files.append(name)
                parts.append(f"[resource {res.uri} saved as {name} ({size} bytes)]")
        else:  # a content type newer than this client
            parts.append(f"[{kind} content not shown]")
    if structured is not None:
        value = _unwrapped(structured, output_schema)
        text = (
            value
            if isinstance(value, str)
            else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        )
        parts.insert(0, text)
    return "\n".join(parts), files
