"""A stand-in for an Ollama server's native API: /api/chat, /api/generate, /api/embed, /api/tags, /api/show,
/api/version.

Speaks Ollama's shapes (docs/api.md): NDJSON streams unless ``stream`` is
false, tool calls whole with object arguments, a final object with
``done_reason`` and the counters, errors as ``{"error": "..."}`` with the
status Ollama uses (404 for an unknown model). Replies are the deterministic
fake model from :mod:`.faults`; ``/_control`` injects faults (a
``cut_stream`` fault hangs up mid-stream, as a crashed runner would).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from .fake_model import approx_tokens, scripted_reply, split_text, text_of, tool_arguments
from .faults import ApiError, install_control, json_response, parse_json

OLLAMA_VERSION = "0.12.11"
EMBED_DIMS = 8


@dataclass(frozen=True)
class _Config:
    name: str
    models: tuple[str, ...]
    stream_chunks: int
    chunk_delay_s: float
    capabilities: dict[str, tuple[str, ...]]


_CONFIG = web.AppKey("tiergate_ollama_standin", _Config)


def ollama_error(status: int, message: str, **_: Any) -> web.Response:
    return json_response({"error": message}, status)


def build_ollama_standin(
    *,
    name: str,
    models: list[str],
    api_key: str | None = None,
    stream_chunks: int = 20,
    chunk_delay_s: float = 0.0,
    capabilities: dict[str, list[str]] | None = None,
) -> web.Application:
    """A fresh app (``api_key`` is accepted and ignored: a local Ollama takes any). ``capabilities``: what
    /api/show reports per model, else what Ollama reports for a model of that kind (see ``_capabilities``)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    caps = {m: tuple(c) for m, c in (capabilities or {}).items()}
    app[_CONFIG] = _Config(name, tuple(models), max(1, stream_chunks), chunk_delay_s, caps)
    install_control(
        app, model_paths=("/api/chat", "/api/generate", "/api/embed", "/api/embeddings"), error_response=ollama_error
    )
    app.router.add_post("/api/chat", _chat)
    app.router.add_post("/api/generate", _generate)
    app.router.add_post("/api/embed", _embed)
    app.router.add_post("/api/embeddings", _embeddings)
    app.router.add_get("/api/tags", _tags)
    app.router.add_get("/api/version", _version)
    app.router.add_post("/api/show", _show)
    return app


def _capabilities(cfg: _Config, model: str) -> tuple[str, ...]:
    """Ollama derives these from the model's files: an embedding model only embeds; a chat template that
    renders tools adds "tools", a projector "vision", a thinking template "thinking"."""
    if model in cfg.capabilities:
        return cfg.capabilities[model]
    if "embed" in model:
        return ("embedding",)
    caps = ["completion", "tools"]
    if any(k in model for k in ("llava", "vision", "gemma3")):
        caps.append("vision")
    if any(k in model for k in ("qwen3", "deepseek-r1")):
        caps.append("thinking")
    return tuple(caps)


async def _show(request: web.Request) -> web.Response:
    """/api/show as docs/api.md shows it: details, model_info and the capabilities list."""
    cfg = request.app[_CONFIG]
    body = parse_json(await request.read())
    model = body.get("model") or body.get("name") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required")
    base = model.removesuffix(":latest")
    if base not in cfg.models:
        raise ApiError(404, f"model '{model}' not found")
    return json_response(
        {
            "modelfile": f"FROM {base}",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": base.split(":")[0],
                "families": [base.split(":")[0]],
                "parameter_size": "7B",
                "quantization_level": "Q4_K_M",
            },
            "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
            "capabilities": list(_capabilities(cfg, base)),
            "modified_at": _now(),
        },
        200,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def _body(request: web.Request, cfg: _Config) -> dict[str, Any]:
    body = parse_json(await request.read())
    if not isinstance(body, dict):
        raise ApiError(400, "invalid character 'o' looking for beginning of value")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required")
    if model.removesuffix(":latest") not in cfg.models:
        raise ApiError(404, f"model '{model}' not found")
    return body


def _options(body: dict[str, Any]) -> tuple[int | None, list[str]]:
    raw = body.get("options")
    opts: dict[str, Any] = raw if isinstance(raw, dict) else {}
    predict = opts.get("num_predict")
    stop = opts.get("stop") or []
    return (predict if isinstance(predict, int) and predict > 0 else None), (
        [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]
    )


def _counters(prompt: int, completion: int) -> dict[str, int]:
    return {
        "total_duration": 1_000_000 * (1 + completion),
        "load_duration": 100_000,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": 500_000,
        "eval_count": completion,
        "eval_duration": 1_000_000 * completion,
    }


async def _answer(request: web.Request, *, generate: bool) -> web.StreamResponse:
    cfg = request.app[_CONFIG]
    body = await _body(request, cfg)
    if generate:
        prompt_text = str(body.get("system") or "") + str(body.get("prompt") or "")
    else:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise ApiError(400, "messages is required")
        prompt_text = "".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
    limit, stop = _options(body)
    tools = [
        t["function"] for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    last = (body.get("messages") or [{}])[-1] if not generate else {}
    wants_tool = (
        tools
        and isinstance(last, dict)
        and last.get("role") == "user"
        and "use tool" in str(last.get("content")).lower()
    )
    head = {"model": body["model"]}
    prompt = approx_tokens(prompt_text)
    calls: list[dict[str, Any]] = []
    if wants_tool:
        fn = tools[0]
        args = tool_arguments(fn.get("parameters"))
        calls = [{"function": {"index": 0, "name": fn.get("name"), "arguments": args}}]
        text, completion, reason = "", approx_tokens(str(fn.get("name")) + orjson.dumps(args).decode()), "stop"
    else:
        reply = scripted_reply(cfg.name, prompt_text, max_tokens=limit, stop=stop)
        text, completion, reason = reply.text, reply.tokens, "length" if reply.truncated else "stop"

    def obj(piece: str, *, done: bool, with_calls: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {**head, "created_at": _now()}
        if generate:
            out["response"] = piece
        else:
            msg: dict[str, Any] = {"role": "assistant", "content": piece}
            if with_calls:
                msg["tool_calls"] = calls
            out["message"] = msg
        out["done"] = done
        if done:
            out.update(done_reason=reason, **_counters(prompt, completion))
        return out

    if body.get("stream") is False:
        return json_response(obj(text, done=True, with_calls=bool(calls)))
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    lines = [obj(p, done=False) for p in (split_text(text, cfg.stream_chunks) if text else [])]
    if calls:
        lines.append(obj("", done=False, with_calls=True))
    lines.append(obj("", done=True))
    for i, line in enumerate(lines):
        if i and cfg.chunk_delay_s > 0:
            await asyncio.sleep(cfg.chunk_delay_s)
        try:
            await resp.write(orjson.dumps(line) + b"\n")
        except ConnectionError:
            return resp
    await resp.write_eof()
    return resp


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _answer(request, generate=False)


async def _generate(request: web.Request) -> web.StreamResponse:
    return await _answer(request, generate=True)


def _vector(model: str, text: str) -> list[float]:
    digest = hashlib.sha256(f"{model}\0{text}".encode()).digest()
    vec = [b / 255 - 0.5 for b in digest[:EMBED_DIMS]]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vec]


async def _embed(request: web.Request) -> web.Response:
    body = await _body(request, request.app[_CONFIG])
    raw = body.get("input")
    given = raw if isinstance(raw, list) else [raw]
    items = [i for i in given if isinstance(i, str) and i]
    if not items or len(items) != len(given):
        raise ApiError(400, "invalid input type")
    return json_response(
        {
            "model": body["model"],
            "embeddings": [_vector(body["model"], t) for t in items],
            "total_duration": 1_000_000,
            "load_duration": 100_000,
            "prompt_eval_count": sum(approx_tokens(t) for t in items),
        }
    )


async def _embeddings(request: web.Request) -> web.Response:
    """The older endpoint: one ``prompt``, one ``embedding``, no counters."""
    body = await _body(request, request.app[_CONFIG])
    if not isinstance(body.get("prompt"), str):
        raise ApiError(400, "prompt is required")
    return json_response({"embedding": _vector(body["model"], body["prompt"])})


async def _tags(request: web.Request) -> web.Response:
    cfg = request.app[_CONFIG]
    models = [{"name": f"{m}:latest", "model": f"{m}:latest", "size": 1, "digest": "0" * 64} for m in cfg.models]
    return json_response({"models": models})


async def _version(request: web.Request) -> web.Response:
    return json_response({"version": OLLAMA_VERSION})
