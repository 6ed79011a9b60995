"""A job's template inputs, gathered for one run: fetched by URL, read from a file, or literal. Every read bounded.

A URL answering JSON becomes the parsed value (``{{ inputs.alerts[0].title }}``
works), anything else text. A body over ``max_kb``, a non-2xx answer, a slow
server (``timeout``) or a missing file fails the run with a message naming
the input, never a partial prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from tiergate.config.jobs import InputSource
from tiergate.core.errors import JobFailed


async def gather_inputs(inputs: Mapping[str, InputSource], session: aiohttp.ClientSession) -> dict[str, Any]:
    names = list(inputs)
    values = await asyncio.gather(*(_one(n, inputs[n], session) for n in names))
    return dict(zip(names, values, strict=True))


async def _one(name: str, src: InputSource, session: aiohttp.ClientSession) -> Any:
    limit = src.max_kb * 1024
    if src.url is not None:
        try:
            return await _fetch(src.url, limit, src.timeout, session)
        except JobFailed as exc:
            raise JobFailed(f"input {name!r}: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise JobFailed(f"input {name!r}: GET failed: {type(exc).__name__} {exc}".rstrip()) from None
    if src.file is not None:
        return await asyncio.to_thread(_read_file, name, src, limit)
    return src.value


async def _fetch(url: str, limit: int, timeout_s: float, session: aiohttp.ClientSession) -> Any:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        body = await resp.content.read(limit + 1)
        if len(body) > limit:
            raise JobFailed(f"the answer is larger than max_kb ({limit // 1024} KB)")
        if not 200 <= resp.status < 300:
            raise JobFailed(f"GET answered HTTP {resp.status}")
        if resp.content_type == "application/json" or resp.content_type.endswith("+json"):
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                raise JobFailed("the answer says JSON but is not valid JSON") from None
        return body.decode(resp.charset or "utf-8", "replace")


def _read_file(name: str, src: InputSource, limit: int) -> str:
    assert src.file is not None
    try:
        with src.file.expanduser().open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise JobFailed(f"input {name!r}: cannot read {src.file}: {exc.strerror}") from None
    if len(data) > limit:
        raise JobFailed(f"input {name!r}: {src.file} is larger than max_kb ({limit // 1024} KB)")
    return data.decode("utf-8", "replace")
