"""An MCP ``CallToolResult`` → the text of the tool message.

Text blocks are the message; structured content is JSON (when the server sent no text for
it); images, audio and binary resources are written to the run's files directory and named
in the message, so the host program can pick them up and the model knows they exist.
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


async def result_text(result: Any, files_dir: Path, stem: str) -> tuple[str, list[str]]:
    """(the text the model reads, the names of the files written) for ``result``."""
    parts: list[str] = []
    files: list[str] = []
    has_text = False
    for block in result.content:
        kind = getattr(block, "type", None)
        if kind == "text":
            has_text = True
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
                has_text = True
                parts.append(f"[resource {res.uri}]\n{res.text}")
            else:
                name, size = await _save(files_dir, stem, res.blob, res.mime_type)
                files.append(name)
                parts.append(f"[resource {res.uri} saved as {name} ({size} bytes)]")
        else:  # a content type newer than this client
            parts.append(f"[{kind} content not shown]")
    if result.structured_content is not None and not has_text:
        parts.insert(0, json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts), files
