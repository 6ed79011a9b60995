"""Error bodies at the edge: always the client's envelope, whatever text an error carries."""

from __future__ import annotations

import orjson
import pytest

from tiergate.api.common import error_response
from tiergate.core.errors import AuthThrottled, BadRequest, UnsupportedEncoding

LONE = b"/v1/\xff".decode("utf-8", "surrogateescape")  # not encodable as UTF-8: orjson refuses it


@pytest.mark.parametrize("anthropic", [False, True])
def test_a_message_that_is_not_utf8_is_rendered_escaped_not_a_500(anthropic):
    resp = error_response(BadRequest(f"no route GET {LONE}"), anthropic=anthropic, request_id="r1")
    assert resp.status == 400
    body = orjson.loads(resp.body)
    message = body["error"]["message"]
    assert message == "no route GET /v1/\\udcff"
    assert (body.get("type") == "error") is anthropic


def test_throttled_and_unsupported_encoding_carry_their_status_and_retry_after():
    resp = error_response(AuthThrottled("slow down", retry_after=3), anthropic=False, request_id="r2")
    assert resp.status == 429 and resp.headers["Retry-After"] == "3"
    assert orjson.loads(resp.body)["error"]["code"] == "auth_throttled"
    resp = error_response(UnsupportedEncoding("no br"), anthropic=True, request_id="r3")
    assert resp.status == 415 and orjson.loads(resp.body)["error"]["type"] == "invalid_request_error"
