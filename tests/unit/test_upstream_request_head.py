"""The request head tiergate's upstream client writes: origins from base URLs, and header blocks."""

from __future__ import annotations

import pytest

from tiergate.adapters.upstream_http import header_block, parse_origin
from tiergate.core.errors import AttemptError


@pytest.mark.parametrize(
    ("url", "key", "tls", "head"),
    [
        (
            "http://127.0.0.1:8080/v1/chat/completions",
            ("http", "127.0.0.1", 8080),
            False,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n",
        ),
        (
            "https://api.openai.com/v1/chat/completions",
            ("https", "api.openai.com", 443),
            True,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n",
        ),
        (
            "http://localhost/v1/messages?beta=true",
            ("http", "localhost", 80),
            False,
            b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: localhost\r\n",
        ),
        (
            "http://[::1]:9000/v1/embeddings",
            ("http", "::1", 9000),
            False,
            b"POST /v1/embeddings HTTP/1.1\r\nHost: [::1]:9000\r\n",
        ),
        (
            "https://example.com:8443",
            ("https", "example.com", 8443),
            True,
            b"POST / HTTP/1.1\r\nHost: example.com:8443\r\n",
        ),
    ],
)
def test_origin_of_a_base_url(url, key, tls, head):
    o = parse_origin(url)
    assert (o.key, o.tls, o.head) == (key, tls, head)


@pytest.mark.parametrize("url", ["ftp://example.com/v1", "http:///v1/chat/completions", "example.com/v1"])
def test_urls_that_are_not_http_are_refused(url):
    with pytest.raises(AttemptError) as e:
        parse_origin(url)
    assert e.value.kind == "protocol" and url in e.value.message


def test_header_block_ends_with_the_length_and_a_blank_line():
    block = header_block({"Content-Type": "application/json", "x-api-key": "sk-1"}, 42)
    assert block == b"Content-Type: application/json\r\nx-api-key: sk-1\r\nContent-Length: 42\r\n\r\n"


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"X-Bad": "a\r\nInjected: 1"}, "line break"),
        ({"X-Bad": "a\nb"}, "line break"),
        ({"X-Bad:Injected": "1"}, "colon"),
        ({"X-Name": "caf\u00e9 \u2603"}, "latin-1"),
    ],
)
def test_header_block_refuses_what_could_inject_or_not_encode(headers, why):
    with pytest.raises(AttemptError) as e:
        header_block(headers, 0)
    assert e.value.kind == "protocol" and why in e.value.message
