"""Structured output: an output type becomes a JSON schema, a ``# Response Formats`` section of
the developer message, a decode-side constraint, and a validator of the final answer. Pure.

Accepted output types: a pydantic model, a dataclass, a TypedDict, any type pydantic can
validate (``int``, ``list[str]``, ``Literal[...]``, unions), or a JSON schema ``dict`` (validated
with jsonschema). :func:`output_spec` turns one into an :class:`OutputSpec` once, at
``Agent(...)``, so a type that cannot become a schema fails there, not mid-run.

The prompt side follows the Harmony format's structured-output section: at the end of the
developer message ::

    # Response Formats

    ## {name}

    // {description}
    {minified schema}

openai_harmony has no API for it, so it is a second text content of the developer message
(:func:`response_formats_text`). The schema shown is simplified like function schemas
(``$ref`` inlined, ``anyOf`` as ``oneOf``, titles dropped); the grammar and the validator use
the schema as generated, so the constraint and the check agree on what is required.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, is_typeddict

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import pydantic
from harmony_agent.tools._schema import simplify_schema

from . import _json
from .errors import ConfigurationError

__all__ = [
    "OutputInvalid",
    "OutputSpec",
    "output_spec",
    "repair_message",
    "response_formats_text",
]

_DEFAULT_NAME = "result"
_NAME = re.compile(r"[^A-Za-z0-9_]+")
_FENCE = re.compile(r"\A```[A-Za-z]*\s*\n(.*)\n\s*```\Z", re.DOTALL)


class OutputInvalid(ValueError):
    """The final answer does not match the output type; ``where`` is a JSON path (``$.a[0]``)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True, eq=False)
class OutputSpec:
    """One output type, ready for a run.

    ``schema`` is the JSON schema as generated (for the grammar and jsonschema); ``rendered``
    the simplified one the prompt shows. :meth:`validate` turns the final answer's text into
    the validated value or raises :class:`OutputInvalid`; :meth:`to_json` makes that value
    JSON-able (for events and the CLI).
    """

    name: str
    description: str | None
    schema: dict[str, Any]
    rendered: dict[str, Any]
    output_type: Any
    _validate: Callable[[Any, str], Any]
    _dump: Callable[[Any], Any]

    def validate(self, text: str) -> Any:
        """The value of the answer ``text``; :class:`OutputInvalid` naming the path and reason."""
        body = text.strip()
        fenced = _FENCE.match(body)  # ```json ... ``` around the answer: read what is inside
        if fenced is not None:
            body = fenced.group(1).strip()
        if not body:
            raise OutputInvalid("$", "the answer is empty; expected JSON")
        try:
            data = _json.loads(body)
        except _json.JSONLimitError as exc:
            raise OutputInvalid("$", str(exc)) from None
        except ValueError as exc:
            raise OutputInvalid("$", f"not valid JSON ({exc})") from None
        return self._validate(data, body)

    def to_json(self, value: Any) -> Any:
        return self._dump(value)


def output_spec(output_type: Any) -> OutputSpec:
    """The :class:`OutputSpec` of ``output_type``; :class:`ConfigurationError` when it cannot
    become a schema Harmony renders faithfully (the message names the field and the way out)."""
    if isinstance(output_type, dict):
        return _from_schema(output_type)
    if output_type is None or isinstance(output_type, str | int | float | bool | list | tuple):
        raise ConfigurationError(
            f"output_type must be a type (a pydantic model, dataclass, TypedDict, int, "
            f"list[str], ...) or a JSON schema dict, got {output_type!r}"
        )
    try:
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(output_type)
        schema = adapter.json_schema()
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError) as exc:
        raise ConfigurationError(
            f"output_type {_type_name(output_type)} cannot become a JSON schema: "
            f"{str(exc).splitlines()[0]}. Use a pydantic model with JSON-able fields, "
            "or pass a JSON schema dict."
        ) from None
    except TypeError as exc:
        raise ConfigurationError(
            f"output_type {output_type!r} is not a type pydantic can validate ({exc}). "
            "Use a pydantic model, dataclass, TypedDict or a JSON schema dict."
        ) from None
    named = isinstance(output_type, type) and output_type.__module__ != "builtins"
    name = _NAME.sub("_", output_type.__name__) if named else _DEFAULT_NAME
    rendered = _renderable(schema, _type_name(output_type))

    def validate(data: Any, body: str) -> Any:
        try:
            return adapter.validate_json(body)
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise OutputInvalid(_path(first["loc"]), first["msg"]) from None

    def dump(value: Any) -> Any:
        return adapter.dump_python(value, mode="json")

    return OutputSpec(
        name=name,
        description=_description(output_type),
        schema=schema,
        rendered=rendered,
        output_type=output_type,
        _validate=validate,
        _dump=dump,
    )


def _from_schema(schema: dict[str, Any]) -> OutputSpec:
    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the root"
        raise ConfigurationError(
            f"output_type is not a valid JSON schema (at {where}: {exc.message}). "
            "Fix the schema, or pass a pydantic model instead."
        ) from None
    validator = validator_cls(schema)
    rendered = _renderable(schema, "the output schema")
    title = schema.get("title")
    name = _NAME.sub("_", title) if isinstance(title, str) and title.strip() else _DEFAULT_NAME

    def validate(data: Any, body: str) -> Any:
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            raise OutputInvalid(_path(error.absolute_path), error.message)
        return data

    description = schema.get("description")
    return OutputSpec(
        name=name.strip("_") or _DEFAULT_NAME,
        description=description if isinstance(description, str) else None,
        schema=schema,
        rendered=rendered,
        output_type=dict,
        _validate=validate,
        _dump=lambda value: value,
    )


def _renderable(schema: dict[str, Any], what: str) -> dict[str, Any]:
    """The simplified schema for the prompt; refuses what it would render unfaithfully."""
    _check_refs(schema, schema, (), what)
    try:
        rendered = simplify_schema(schema)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"{what} cannot be shown to the model: {exc}. Inline the referenced definitions."
        ) from None
    rendered.pop("description", None)  # shown as the section's `// ` line
    return rendered


def _check_refs(
    node: Any, root: dict[str, Any], seen: tuple[str, ...], what: str, at: str = "$"
) -> None:
    """Recursive and non-local ``$ref``: the prompt's schema would lose them. ``at`` is where
    in the answer the node applies (``$.children[]``), for the message."""
    if isinstance(node, list):
        for item in node:
            _check_refs(item, root, seen, what, at)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#/"):
            raise ConfigurationError(
                f"{what} refers to {ref!r} at {at}, outside the schema; Harmony's prompt shows "
                "one self-contained schema. Inline the referenced schema."
            )
        if ref in seen:
            name = ref.rsplit("/", 1)[-1]
            raise ConfigurationError(
                f"{what} is recursive (the field at {at} is a {name} again, through {ref}): "
                "the schema the model reads cannot show it, and the answer would not match "
                f"what it was shown. Bound the depth (e.g. a list of a non-recursive "
                f"{name}Summary), or use a JSON schema dict without recursion."
            )
        target: Any = root
        try:
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
        except (KeyError, TypeError, IndexError):
            raise ConfigurationError(
                f"{what} refers to {ref!r} at {at}, which it does not define. Add it under $defs."
            ) from None
        _check_refs(target, root, (*seen, ref), what, at)
    for key, value in node.items():
        if key in ("$defs", "definitions", "$ref"):
            continue
        if key == "properties" and isinstance(value, dict):
            for name, sub in value.items():
                _check_refs(sub, root, seen, what, f"{at}.{name}")
        elif key in ("items", "prefixItems", "additionalProperties"):
            _check_refs(
                value, root, seen, what, f"{at}[]" if key != "additionalProperties" else f"{at}.*"
            )
        else:
            _check_refs(value, root, seen, what, at)


def _path(loc: Any) -> str:
    out = "$"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _type_name(output_type: Any) -> str:
    return getattr(output_type, "__qualname__", None) or repr(output_type)


def _description(output_type: Any) -> str | None:
    """The type's own docstring (not the one dataclasses and TypedDicts make up)."""
    if not isinstance(output_type, type) or output_type.__module__ == "builtins":
        return None
    doc = output_type.__doc__
    if not doc or not doc.strip():
        return None
    doc = " ".join(doc.split())
    if dataclasses.is_dataclass(output_type) and doc.startswith(f"{output_type.__name__}("):
        return None  # the generated signature
    if is_typeddict(output_type) and doc == " ".join((dict.__doc__ or "").split()):
        return None
    if issubclass(output_type, pydantic.BaseModel) and doc == " ".join(
        (pydantic.BaseModel.__doc__ or "").split()
    ):
        return None
    return doc


def response_formats_text(spec: OutputSpec, *, after_other_content: bool) -> str:
    """The ``# Response Formats`` section, as the developer message's last text content."""
    lines = ["# Response Formats", "", f"## {spec.name}", ""]
    if spec.description:
        lines.extend(f"// {line}" for line in spec.description.splitlines())
    lines.append(json.dumps(spec.rendered, separators=(",", ":"), ensure_ascii=False))
    text = "\n".join(lines)
    return "\n\n" + text if after_other_content else text


def repair_message(spec: OutputSpec, error: OutputInvalid) -> str:
    """What the model reads after an answer that does not match: where, why, what to do."""
    return (
        f"Your final answer does not match the response format {spec.name}: at {error.where}: "
        f"{error.reason}. Answer again on the final channel with only the JSON value, "
        "matching the schema."
    )
