"""What a request asks of its answer, read from each client protocol for the quality gates (core.gates).

JSON (OpenAI's ``response_format``, Anthropic's ``output_format``, Responses'
``text.format``, Ollama's ``format``, Gemini's ``responseMimeType``), the
schema the JSON must fit, and the tools offered with their parameter
schemas. A tool of a kind not read here (a vendor's built-in tool) makes
``tools_known`` false, so a call to a name not listed is not called unknown.
"""

from __future__ import annotations

from typing import Any

from tiergate.adapters.translate_common import JsonObject, _obj
from tiergate.core.gates import NO_EXPECTATIONS, Expectations

Tools = dict[str, dict[str, Any] | None]


def _schema(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) and value else None


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def expectations(protocol: str, body: JsonObject) -> Expectations:
    """The request's expectations; NO_EXPECTATIONS when it asks for neither JSON nor tools."""
    read = _READERS.get(protocol)
    if read is None or _KEYS[protocol].isdisjoint(body):  # the usual request: no field to read, no call
        return NO_EXPECTATIONS
    json, schema, tools, known = read(body)
    if not json and not tools and known:
        return NO_EXPECTATIONS
    return Expectations(json=json, schema=schema, tools=tools, tools_known=known)


Read = tuple[bool, dict[str, Any] | None, Tools, bool]


def _openai_chat(body: JsonObject) -> Read:
    rf = _obj(body.get("response_format"))
    kind = rf.get("type")
    schema = _schema(_obj(rf.get("json_schema")).get("schema")) if kind == "json_schema" else None
    tools: Tools = {}
    known = True
    for t in body.get("tools") or ():
        tool = _obj(t)
        if tool.get("type", "function") == "function":
            fn = _obj(tool.get("function"))
            if name := _name(fn.get("name")):
                tools[name] = _schema(fn.get("parameters"))
        elif tool.get("type") == "custom" and (name := _name(_obj(tool.get("custom")).get("name"))):
            tools[name] = None
        else:
            known = False
    for f in body.get("functions") or ():
        if name := _name(_obj(f).get("name")):
            tools[name] = _schema(_obj(f).get("parameters"))
    return kind in ("json_object", "json_schema"), schema, tools, known


def _anthropic(body: JsonObject) -> Read:
    of = _obj(body.get("output_format"))
    schema = _schema(of.get("schema")) if of.get("type") == "json_schema" else None
    tools: Tools = {}
    known = True
    for t in body.get("tools") or ():
        tool = _obj(t)
        name = _name(tool.get("name"))
        if name is None:
            known = False
            continue
        # a versioned type (bash_20250124, web_search_...) is Anthropic's own tool: its calls are well-formed
        tools[name] = _schema(tool.get("input_schema")) if tool.get("type", "custom") == "custom" else None
    return of.get("type") == "json_schema", schema, tools, known


def _responses(body: JsonObject) -> Read:
    fmt = _obj(_obj(body.get("text")).get("format"))
    kind = fmt.get("type")
    schema = _schema(fmt.get("schema")) if kind == "json_schema" else None
    tools: Tools = {}
    known = True
    for t in body.get("tools") or ():
        tool = _obj(t)
        name = _name(tool.get("name"))
        if tool.get("type") == "function" and name:
            tools[name] = _schema(tool.get("parameters"))
        elif tool.get("type") == "custom" and name:
            tools[name] = None
        else:
            known = False  # web_search, mcp, local_shell, file_search, ...: their calls are other items
    return kind in ("json_object", "json_schema"), schema, tools, known


def _ollama(body: JsonObject) -> Read:
    fmt = body.get("format")
    tools: Tools = {}
    for t in body.get("tools") or ():
        fn = _obj(_obj(t).get("function"))
        if name := _name(fn.get("name")):
            tools[name] = _schema(fn.get("parameters"))
    return fmt == "json" or isinstance(fmt, dict), _schema(fmt), tools, True


def _gemini(body: JsonObject) -> Read:
    gen = _obj(body.get("generationConfig") or body.get("generation_config"))
    mime = gen.get("responseMimeType") or gen.get("response_mime_type")
    # responseJsonSchema is JSON Schema; responseSchema is Gemini's OpenAPI subset (TYPE names) and is read
    # as a schema only when it is valid JSON Schema (core.gates judges nothing it cannot)
    schema = _schema(gen.get("responseJsonSchema") or gen.get("response_json_schema")) or _schema(
        gen.get("responseSchema") or gen.get("response_schema")
    )
    tools: Tools = {}
    known = True
    for t in body.get("tools") or ():
        tool = _obj(t)
        decls = tool.get("functionDeclarations") or tool.get("function_declarations")
        if not isinstance(decls, list):
            known = False  # googleSearch, codeExecution, urlContext, ...
            continue
        for decl in decls:
            d = _obj(decl)
            if name := _name(d.get("name")):
                tools[name] = _schema(d.get("parametersJsonSchema")) or _schema(d.get("parameters"))
    return mime == "application/json", schema, tools, known


_READERS = {
    "openai-chat": _openai_chat,
    "anthropic-messages": _anthropic,
    "openai-responses": _responses,
    "ollama-chat": _ollama,
    "ollama-generate": _ollama,
    "gemini-generate": _gemini,
}
_KEYS = {  # the top-level fields each reader looks at
    "openai-chat": frozenset({"response_format", "tools", "functions"}),
    "anthropic-messages": frozenset({"output_format", "tools"}),
    "openai-responses": frozenset({"text", "tools"}),
    "ollama-chat": frozenset({"format", "tools"}),
    "ollama-generate": frozenset({"format", "tools"}),
    "gemini-generate": frozenset({"generationConfig", "generation_config", "tools"}),
}
