"""The schema simplifier on its own: refs inlined, nullable made optional, noise dropped."""

from __future__ import annotations

import copy

import pydantic
import pytest
from harmony_agent._encoding import load_encoding
from harmony_agent.tools._schema import simplify_schema
from openai_harmony import (
    Conversation,
    DeveloperContent,
    Message,
    Role,
    ToolDescription,
)

CITY = {
    "title": "City",
    "type": "object",
    "properties": {"name": {"title": "Name", "type": "string"}},
    "required": ["name"],
}


def test_refs_are_inlined_with_their_siblings_and_defs_dropped():
    schema = {
        "title": "Trip",
        "type": "object",
        "properties": {"to": {"$ref": "#/$defs/City", "description": "where to"}},
        "required": ["to"],
        "$defs": {"City": CITY},
    }
    before = copy.deepcopy(schema)
    assert simplify_schema(schema) == {
        "type": "object",
        "properties": {
            "to": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "description": "where to",
            }
        },
        "required": ["to"],
    }
    assert schema == before  # the input is not modified


def test_a_recursive_ref_becomes_a_plain_object():
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
    }
    assert simplify_schema(schema) == {
        "type": "object",
        "properties": {"child": {"type": "object"}},
    }


def test_refs_escaped_per_json_pointer_resolve():
    schema = {"$ref": "#/$defs/a~1b", "$defs": {"a/b": {"type": "integer"}}}
    assert simplify_schema(schema) == {"type": "integer"}


def test_only_local_refs_are_supported():
    with pytest.raises(ValueError, match=r"only local \$ref are supported, got 'other\.json#/x'"):
        simplify_schema({"$ref": "other.json#/x"})


def test_optional_x_becomes_a_nullable_type_and_not_required():
    schema = {
        "type": "object",
        "properties": {
            "n": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "t": {"anyOf": [{"type": ["integer", "string"]}, {"type": "null"}]},
            "s": {"type": "string"},
        },
        "required": ["n", "t", "s"],
    }
    assert simplify_schema(schema) == {
        "type": "object",
        "properties": {
            "n": {"type": ["integer", "null"], "default": None},
            "t": {"type": ["integer", "string", "null"]},
            "s": {"type": "string"},
        },
        "required": ["s"],
    }


def test_a_nullable_ref_without_a_type_is_marked_nullable():
    schema = {
        "type": "object",
        "properties": {"e": {"anyOf": [{"$ref": "#/$defs/E"}, {"type": "null"}]}},
        "required": ["e"],
        "$defs": {"E": {"enum": ["a", "b"]}},
    }
    assert simplify_schema(schema) == {
        "type": "object",
        "properties": {"e": {"enum": ["a", "b"], "nullable": True}},
    }


def test_other_unions_become_one_of_which_harmony_renders():
    schema = {
        "type": "object",
        "properties": {"v": {"anyOf": [{"type": "integer"}, {"type": "string"}]}},
    }
    assert simplify_schema(schema) == {
        "type": "object",
        "properties": {"v": {"oneOf": [{"type": "integer"}, {"type": "string"}]}},
    }


def test_a_single_all_of_is_merged_into_its_parent():
    schema = {
        "type": "object",
        "properties": {"x": {"allOf": [{"$ref": "#/$defs/E"}], "description": "d"}},
        "$defs": {"E": {"enum": ["a", "b"], "type": "string"}},
    }
    assert simplify_schema(schema)["properties"]["x"] == {
        "enum": ["a", "b"],
        "type": "string",
        "description": "d",
    }


def test_a_property_named_like_a_dropped_keyword_is_kept():
    schema = {"type": "object", "properties": {"title": {"type": "string", "title": "Title"}}}
    assert simplify_schema(schema) == {
        "type": "object",
        "properties": {"title": {"type": "string"}},
    }


class Stop(pydantic.BaseModel):
    city: str
    nights: int | None = None


class Itinerary(pydantic.BaseModel):
    stops: list[Stop]
    note: str | None


def rendered_parameters(schema: dict) -> str:
    """The TypeScript harmony declares for a function taking ``schema`` (return type cut)."""
    content = DeveloperContent.new().with_function_tools(
        [ToolDescription.new("plan", "Plan a trip.", parameters=schema)]
    )
    conversation = Conversation.from_messages(
        [Message.from_role_and_content(Role.DEVELOPER, content)]
    )
    encoding = load_encoding()
    text = encoding.decode(encoding.render_conversation(conversation))
    return text.partition("type plan = ")[2].partition(") => any;")[0]


def test_a_pydantic_schema_renders_in_harmony_without_any():
    raw = Itinerary.model_json_schema()
    assert "stops: any[]" in rendered_parameters(raw)  # what harmony makes of $ref / anyOf
    declared = rendered_parameters(simplify_schema(raw))
    assert "any" not in declared
    assert "stops: {\n    city: string,\n    nights?: number | null, // default: null" in declared
    assert "note?: string | null," in declared
