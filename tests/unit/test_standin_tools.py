"""The arguments the vendor stand-ins invent for a tool call, from the tool's JSON schema."""

from __future__ import annotations

import pytest

from tiergate.standins.fake_model import tool_arguments


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object", "properties": {"city": {"type": "string"}}}, {"city": "Paris"}),
        ({"properties": {"n": {"type": "integer"}}}, {"n": 1}),
        ({"properties": {"n": {"type": ["number", "null"]}}}, {"n": 1.5}),
        ({"properties": {"tz": {"enum": ["UTC", "CET"]}}}, {"tz": "UTC"}),
        ({"properties": {}}, {}),
        (None, {}),
    ],
)
def test_arguments_follow_the_first_property(schema, expected):
    assert tool_arguments(schema) == expected


@pytest.mark.parametrize("kind", [[], [["string"]], {"anyOf": []}])
def test_a_malformed_type_gets_the_string_default(kind):
    # an unhashable "type" used to raise TypeError inside the handler: a 500 instead of a tool call
    assert tool_arguments({"properties": {"x": {"type": kind}}}) == {"x": "Paris"}
