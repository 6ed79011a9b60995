"""Request translation: OpenAI Responses -> OpenAI Chat Completions. Pure, no I/O.

A Responses request is a list of items (messages, function calls and their
outputs, custom tool calls, reasoning) where Chat Completions has messages;
this module rebuilds the messages and the tools a chat upstream understands.
As in ``translate_requests``, the target body is built from an allow-list and
everything that could not be honoured is named once in ``dropped``.

Tools Chat Completions lacks are carried as functions, and ``ToolNames``
remembers how to turn a call back into the client's own item:

- a custom (freeform) tool, as Codex sends ``apply_patch``, becomes a function
  taking one string ``input``; its grammar or format is put in the description;
- a ``namespace`` tool's members become functions named ``<namespace>__<name>``
  (chat names allow only letters, digits, ``_`` and ``-``).

System and developer messages join one leading system message: many chat
templates of local models accept a system message only first.

Malformed input raises ``ValueError("<field path>: <what is wrong>")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tiergate.adapters.translate_common import JsonObject, _bad, _clamp, _note, _obj, _objects

NAMESPACE_SEP = "__"
_SYSTEM_ROLES = frozenset({"system", "developer"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})
# fields the gateway itself answers for (state, echo) or whose default loses nothing
_CONSUMED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "previous_response_id",
        "stream_options",
    }
)
_NEUTRAL: dict[str, Any] = {"truncation": "disabled", "background": False, "service_tier": "auto", "include": []}
REFUSED = ("background", "conversation", "prompt")  # meanings no translation can keep: a 400, not a silent drop


def string(value: Any) -> str:
    """``value`` when it is a string, else the empty string (for optional text fields)."""
    return value if isinstance(value, str) else ""


@dataclass(slots=True)
class ToolNames:
    """How a chat function name maps back to the client's tool: (kind, name, namespace)."""

    by_chat_name: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)

    def add(self, kind: str, name: str, namespace: str | None = None) -> str:
        chat_name = f"{namespace}{NAMESPACE_SEP}{name}" if namespace else name
        self.by_chat_name[chat_name] = (kind, name, namespace)
        return chat_name

    def chat_name(self, name: str, namespace: str | None = None) -> str:
        return f"{namespace}{NAMESPACE_SEP}{name}" if namespace else name

    def item_of(self, chat_name: str) -> tuple[str, str, str | None]:
        """(kind, name, namespace); a name the client never declared reads as a plain function."""
        return self.by_chat_name.get(chat_name, ("function", chat_name, None))


@dataclass(frozen=True, slots=True)
class Prepared:
    """A Responses request translated once, before any deployment is known; ``for_deployment`` finishes it."""

    chat: JsonObject  # the chat body without its model, output cap and reasoning effort
    dropped: tuple[str, ...]
    names: ToolNames
    max_output: int | None
    effort: str | None


def prepare(body: JsonObject) -> Prepared:
    """The part of the translation that does not depend on the deployment (made once per request)."""
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    for key in REFUSED:
        if body.get(key):
            raise _bad(key, "is not supported by tiergate (no translation keeps its meaning)")
    dropped: list[str] = []
    names = ToolNames()
    tools = _tools(body.get("tools"), names, dropped)
    systems: list[str] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        systems.append(instructions)
    elif instructions is not None:
        raise _bad("instructions", "must be a string")
    messages = _messages(body.get("input"), names, systems, dropped)
    system = "\n\n".join(s for s in systems if s)
    if system:
        messages.insert(0, {"role": "system", "content": system})
    if not messages:
        raise _bad("input", "is required (a string or a non-empty list of items)")
    out: JsonObject = {"messages": messages}
    max_output = None
    if body.get("max_output_tokens") is not None:
        max_output = _clamp(body["max_output_tokens"], None, "max_output_tokens")
    out.update((k, body[k]) for k in ("temperature", "top_p") if body.get(k) is not None)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), names, dropped)
        if choice is not None:
            out["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    elif body.get("tool_choice") not in (None, "auto", "none"):
        _note(dropped, "tool_choice")
    _text(body.get("text"), out, dropped)
    effort = _reasoning(body.get("reasoning"), dropped)
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["user"] = user
    for key, value in body.items():
        if key not in _CONSUMED and value is not None and _NEUTRAL.get(key, object()) != value:
            _note(dropped, _include_note(value) if key == "include" else key)
    return Prepared(out, tuple(dropped), names, max_output, effort)


def for_deployment(
    p: Prepared, *, model: str, max_tokens_limit: int | None = None, reasoning: bool = True
) -> tuple[JsonObject, list[str], ToolNames]:
    """(chat request, dropped field names, the tool name map) for one deployment.

    ``reasoning``: whether the deployment takes reasoning controls (``reasoning_effort``).
    """
    out: JsonObject = {"model": model, **p.chat}
    dropped = list(p.dropped)
    if p.max_output is not None:
        out["max_tokens"] = min(p.max_output, max_tokens_limit) if max_tokens_limit else p.max_output
    if p.effort is not None:
        if reasoning:
            out["reasoning_effort"] = p.effort
        else:
            _note(dropped, "reasoning.effort")
    return out, dropped, p.names


def responses_to_chat(
    body: JsonObject, *, model: str, max_tokens_limit: int | None = None, reasoning: bool = True
) -> tuple[JsonObject, list[str], ToolNames]:
    """A Responses request -> (chat request, dropped field names, the tool name map), in one call."""
    return for_deployment(prepare(body), model=model, max_tokens_limit=max_tokens_limit, reasoning=reasoning)


def _include_note(value: Any) -> str:
    asked = [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
    return f"include.{','.join(asked)}" if asked else "include"


# --------------------------------------------------------------------------- tools


def _tools(raw: Any, names: ToolNames, dropped: list[str]) -> list[JsonObject]:
    if raw is None:
        return []
    out: list[JsonObject] = []
    for i, tool in _objects(raw, "tools"):
        kind = tool.get("type")
        if kind == "namespace":
            ns = _name(tool, f"tools[{i}]")
            for j, inner in _objects(tool.get("tools"), f"tools[{i}].tools"):
                converted = _tool(inner, f"tools[{i}].tools[{j}]", names, dropped, ns)
                if converted is not None:
                    out.append(converted)
            continue
        converted = _tool(tool, f"tools[{i}]", names, dropped, None)
        if converted is not None:
            out.append(converted)
    return out


def _name(obj: JsonObject, path: str) -> str:
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"{path}.name", "is required")
    return name


def _tool(tool: JsonObject, path: str, names: ToolNames, dropped: list[str], ns: str | None) -> JsonObject | None:
    kind = tool.get("type")
    if kind == "function":
        name = _name(tool, path)
        fn: JsonObject = {"name": names.add("function", name, ns)}
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        params = tool.get("parameters")
        fn["parameters"] = params if isinstance(params, dict) else {"type": "object", "properties": {}}
        if isinstance(tool.get("strict"), bool):
            fn["strict"] = tool["strict"]
        return {"type": "function", "function": fn}
    if kind == "custom":
        name = _name(tool, path)
        return {
            "type": "function",
            "function": {
                "name": names.add("custom", name, ns),
                "description": _custom_description(tool),
                "parameters": {
                    "type": "object",
                    "properties": {"input": {"type": "string", "description": "the tool's whole input, as text"}},
                    "required": ["input"],
                },
            },
        }
    _note(dropped, f"tools.{kind}" if isinstance(kind, str) else "tools")
    return None


def _custom_description(tool: JsonObject) -> str:
    """A freeform tool's description, with its grammar so a chat model can follow it."""
    text = string(tool.get("description"))
    fmt = _obj(tool.get("format"))
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        syntax = string(fmt.get("syntax")) or "lark"
        text += f"\n\nThe input must follow this {syntax} grammar:\n{fmt['definition']}"
    return text.strip() or "A tool taking free-form text input."


def _tool_choice(choice: Any, names: ToolNames, dropped: list[str]) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    c = _obj(choice)
    kind = c.get("type")
    if kind in ("function", "custom") and isinstance(c.get("name"), str):
        chat_name = names.chat_name(c["name"], c.get("namespace") if isinstance(c.get("namespace"), str) else None)
        if chat_name not in names.by_chat_name:
            raise _bad("tool_choice.name", f"names no tool in tools: {c['name']!r}")
        return {"type": "function", "function": {"name": chat_name}}
    if kind == "allowed_tools":
        _note(dropped, "tool_choice.allowed_tools")
        return "required" if c.get("mode") == "required" else "auto"
    _note(dropped, "tool_choice")
    return None


# --------------------------------------------------------------------------- text format, reasoning


def _text(text: Any, out: JsonObject, dropped: list[str]) -> None:
    t = _obj(text)
    fmt = _obj(t.get("format"))
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _bad("text.format.schema", "must be a JSON schema object")
        spec: JsonObject = {
            "name": fmt.get("name") if isinstance(fmt.get("name"), str) else "response",
            "schema": schema,
        }
        spec.update((k, fmt[k]) for k in ("strict", "description") if fmt.get(k) is not None)
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif kind not in (None, "text"):
        _note(dropped, "text.format")
    if t.get("verbosity") not in (None, "medium"):
        _note(dropped, "text.verbosity")


def _reasoning(value: Any, dropped: list[str]) -> str | None:
    """The effort to send where the deployment takes it; a summary no chat upstream writes is named."""
    r = _obj(value)
    if r.get("summary") not in (None, "none"):
        _note(dropped, "reasoning.summary")  # chat upstreams write no summaries; their reasoning text is kept
    effort = r.get("effort")
    return effort if isinstance(effort, str) and effort != "none" else None


# --------------------------------------------------------------------------- input items -> messages


def _text_or_none(value: Any) -> str | None:
    """A name field (type, role) as the set lookups can take it: a list or an object sent there is no name."""
    return value if isinstance(value, str) else None


def _messages(raw: Any, names: ToolNames, systems: list[str], dropped: list[str]) -> list[JsonObject]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if raw is None:
        return []
    out: list[JsonObject] = []
    for i, item in _objects(raw, "input", "a string or an array of items"):
        path = f"input[{i}]"
        kind = _text_or_none(item.get("type", "message"))
        if kind == "message":
            _message(item, path, out, systems, dropped)
        elif kind in ("function_call", "custom_tool_call"):
            _call(item, path, out, names)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _bad(f"{path}.call_id", "is required")
            out.append({"role": "tool", "tool_call_id": call_id, "content": _output_text(item.get("output"), path)})
        elif kind == "reasoning":
            _note(dropped, "input.reasoning")  # a chat upstream takes no reasoning back
        else:
            _note(dropped, f"input.{kind}")
    return out


def _message(item: JsonObject, path: str, out: list[JsonObject], systems: list[str], dropped: list[str]) -> None:
    role = _text_or_none(item.get("role"))  # a list or an object here is no role (and not hashable)
    content = item.get("content")
    if role in _SYSTEM_ROLES:
        systems.append(_plain_text(content, f"{path}.content"))
        return
    if role == "assistant":
        text = _plain_text(content, f"{path}.content")
        prev = out[-1] if out else None
        if prev is not None and prev.get("role") == "assistant" and not prev.get("tool_calls"):
            prev["content"] = f"{prev.get('content') or ''}{text}"
        else:
            out.append({"role": "assistant", "content": text})
        return
    if role != "user":
        raise _bad(f"{path}.role", "must be user, assistant, system or developer")
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    parts = [
        p
        for j, part in _objects(content, f"{path}.content", "a string or an array of parts")
        if (p := _user_part(part, f"{path}.content[{j}]", dropped)) is not None
    ]
    if parts and all(p["type"] == "text" for p in parts):
        out.append({"role": "user", "content": "".join(p["text"] for p in parts)})
    elif parts:
        out.append({"role": "user", "content": parts})


def _user_part(part: JsonObject, path: str, dropped: list[str]) -> JsonObject | None:
    kind = _text_or_none(part.get("type"))
    if kind in _TEXT_PARTS:
        if not isinstance(part.get("text"), str):
            raise _bad(f"{path}.text", "must be a string")
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url")
        if isinstance(url, str) and url:
            image: JsonObject = {"url": url}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            return {"type": "image_url", "image_url": image}
        _note(dropped, "input_image.file_id")
        return None
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        return {"type": "file", "file": {"file_data": part["file_data"], "filename": part.get("filename") or "file"}}
    _note(dropped, f"content.{kind}")
    return None


def _plain_text(content: Any, path: str) -> str:
    """Text of a string or of an array of text parts (a refusal reads as its text)."""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for j, part in _objects(content, path, "a string or an array of parts"):
        text = part.get("text") if _text_or_none(part.get("type")) in _TEXT_PARTS else part.get("refusal")
        if not isinstance(text, str):
            raise _bad(f"{path}[{j}]", "must be a text part")
        texts.append(text)
    return "".join(texts)


def _call(item: JsonObject, path: str, out: list[JsonObject], names: ToolNames) -> None:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{path}.call_id", "is required")
    ns = item.get("namespace") if isinstance(item.get("namespace"), str) else None
    name = names.chat_name(_name(item, path), ns)
    if item.get("type") == "custom_tool_call":
        if not isinstance(item.get("input"), str):
            raise _bad(f"{path}.input", "must be a string")
        arguments = orjson.dumps({"input": item["input"]}).decode()
    else:
        if not isinstance(item.get("arguments"), str):
            raise _bad(f"{path}.arguments", "must be a string of JSON")
        arguments = item["arguments"]
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    prev = out[-1] if out else None
    if prev is not None and prev.get("role") == "assistant":
        prev.setdefault("tool_calls", []).append(call)
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _output_text(output: Any, path: str) -> str:
    """A tool output: a string, or an array of parts whose text is kept (images cannot ride a tool message)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(p["text"] for p in output if isinstance(p, dict) and isinstance(p.get("text"), str))
    raise _bad(f"{path}.output", "must be a string or an array of content parts")
