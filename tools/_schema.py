"""JSON schema simplification so that harmony renders a schema faithfully.

Harmony turns a JSON schema into a TypeScript-like declaration and does not understand
``$ref``/``$defs`` or ``anyOf`` (both become ``any``), nor ``allOf``. Pydantic emits all
three. We inline references, turn ``anyOf [X, null]`` into an optional ``X | null`` and other
``anyOf`` into ``oneOf`` (which harmony renders as a union), and drop ``title`` noise.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["simplify_schema"]

_DROP = {"title", "$defs", "definitions"}


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _is_null(s: Any) -> bool:
    return isinstance(s, dict) and s.get("type") == "null"


def _simplify(node: Any, root: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_simplify(x, root, seen) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if ref in seen:  # recursive model: harmony cannot express it anyway
            return {"type": "object"}
        target = _simplify(_resolve(ref, root), root, (*seen, ref))
        extra = {k: v for k, v in node.items() if k != "$ref" and k not in _DROP}
        return {**target, **_simplify(extra, root, seen)}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _simplify(sub, root, seen) for name, sub in value.items()}
        else:
            out[key] = _simplify(value, root, seen)
    if "allOf" in out and len(out["allOf"]) == 1:
        (only,) = out.pop("allOf")
        out = {**only, **out}
    if "anyOf" in out:
        variants = out.pop("anyOf")
        non_null = [v for v in variants if not _is_null(v)]
        nullable = len(non_null) < len(variants)
        if len(non_null) == 1:
            merged = {**non_null[0], **out}
            if nullable:
                t = merged.get("type")
                if isinstance(t, str):
                    merged["type"] = [t, "null"]
                elif isinstance(t, list) and "null" not in t:
                    merged["type"] = [*t, "null"]
                else:
                    merged["nullable"] = True
            out = merged
        else:
            if nullable:
                non_null = [*non_null, {"type": "null"}]
            out["oneOf"] = non_null
    return out


def _nullable(prop: dict[str, Any]) -> bool:
    t = prop.get("type")
    return prop.get("nullable") is True or (isinstance(t, list) and "null" in t)


def simplify_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` with refs inlined, nullable fields optional and titles dropped."""
    root = copy.deepcopy(schema)
    out = _simplify(root, root, ())

    def relax(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict) and "required" in node:
                node["required"] = [r for r in node["required"] if not _nullable(props.get(r, {}))]
                if not node["required"]:
                    del node["required"]
            for v in node.values():
                relax(v)
        elif isinstance(node, list):
            for v in node:
                relax(v)

    relax(out)
    return out
