"""Table tests of what the edge accepts from a client: header values, keys, encodings, bounded bodies, depth."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiergate.api.inbound import (
    MAX_ID_CHARS,
    BodiesInFlight,
    BoundedBody,
    content_encoding,
    header_problem,
    key_problem,
    nesting_exceeds,
    plain_headers,
    value_problem,
)
from tiergate.core.errors import BadRequest, BodiesBusy, PayloadTooLarge, UnsupportedEncoding

SURROGATE = b"a\xffb".decode("utf-8", "surrogateescape")  # what aiohttp hands over for a non-UTF-8 byte


def gz(data: bytes, compresslevel: int = 9) -> bytes:
    """gzip without a timestamp: the same bytes in every process (pytest-xdist compares test ids)."""
    return gzip.compress(data, compresslevel=compresslevel, mtime=0)


@pytest.mark.parametrize(
    ("value", "ascii_only", "problem"),
    [
        ("sess-1", False, None),
        ("café/ünïcode 会话", False, None),
        ("", False, None),
        ("x" * MAX_ID_CHARS, False, None),
        ("x" * (MAX_ID_CHARS + 1), False, "longer than 256"),
        (SURROGATE, False, "not valid UTF-8"),
        ("a\x00b", False, "control"),
        ("a\tb", False, "control"),
        ("a\x7fb", False, "control"),
        ("a\u200bb", False, "invisible"),  # zero-width space
        ("a\x85b", False, "control"),  # C1 next line
        ("café", True, "printable ASCII"),
        (SURROGATE, True, "not valid UTF-8"),
    ],
)
def test_value_problem(value, ascii_only, problem):
    got = value_problem(value, MAX_ID_CHARS, ascii_only=ascii_only)
    assert (got is None) if problem is None else (got is not None and problem in got), got


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ([("Content-Type", "x\x01"), ("User-Agent", SURROGATE)], None),  # not read by tiergate: not its business
        ([("X-Tiergate-Session", SURROGATE)], "X-Tiergate-Session"),
        ([("x-tiergate-agent", "a\nb")], "x-tiergate-agent"),
        ([("X-Tiergate-Anything-New", "\x00")], "X-Tiergate-Anything-New"),
        ([("X-Tiergate-Task", "t" * 257)], "X-Tiergate-Task"),
        ([("X-Request-ID", "ok-1"), ("X-Request-ID", "r\u00e9")], "X-Request-ID"),  # echoed: ASCII only
        ([("X-Claude-Code-Session-Id", SURROGATE)], "X-Claude-Code-Session-Id"),
        ([("anthropic-beta", "b" * 1025)], "anthropic-beta"),
        ([("anthropic-beta", "tools-2024-04-04,prompt-caching-2024-07-31")], None),
        ([("anthropic-version", "2023-06-01\u00a0")], "anthropic-version"),  # sent upstream: ASCII only
        ([("X-Tiergate-Session", "s-1"), ("X-Tiergate-Privacy", "local-only")], None),
    ],
)
def test_header_problem_names_the_header(headers, named):
    got = header_problem(headers)
    if named is None:
        assert got is None
    else:
        assert got is not None and got.startswith(f"header {named} ")
        assert all(v not in got for _, v in headers if len(v) > 3)  # the value is never echoed


@pytest.mark.parametrize(
    ("key", "ok"),
    [("sk-test-master-0123456789", True), ("tg-abc_DEF.123", True), ("sk-x" + SURROGATE, False), ("k\x01", False)],
)
def test_key_problem(key, ok):
    assert (key_problem(key) is None) is ok


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("identity", None), (" GZIP ", "gzip"), ("x-gzip", "gzip"), ("deflate", "deflate")],
)
def test_supported_encodings(header, expected):
    assert content_encoding(header) == expected


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("br", "Content-Encoding br is not supported"),
        ("zstd", "Content-Encoding zstd is not supported"),
        ("gzip, br", "more than one encoding"),
        ("secret-\x01-bytes", "this Content-Encoding is not supported"),  # an unknown value is not echoed
    ],
)
def test_unsupported_encodings_are_415_naming_the_supported_ones(header, fragment):
    with pytest.raises(UnsupportedEncoding) as ei:
        content_encoding(header)
    assert ei.value.status == 415 and fragment in ei.value.message and "gzip or deflate" in ei.value.message


PAYLOAD = orjson.dumps({"messages": [{"role": "user", "content": "hello " * 50}]})


def _gather(encoding, data: bytes, limit: int, chunk: int = 7) -> bytes:
    body = BoundedBody(encoding, limit)
    for i in range(0, len(data), chunk):
        body.feed(data[i : i + chunk])
    return body.finish()


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        (None, PAYLOAD),
        ("gzip", gz(PAYLOAD)),
        ("gzip", gz(PAYLOAD[:100]) + gz(PAYLOAD[100:])),  # two members
        ("deflate", zlib.compress(PAYLOAD)),  # zlib-wrapped, as RFC 9110 says
        ("deflate", zlib.compress(PAYLOAD)[2:-4]),  # raw deflate, as many clients send it
    ],
)
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_bodies_decode_whatever_the_chunking(encoding, encoded, chunk):
    assert _gather(encoding, encoded, limit=len(PAYLOAD), chunk=chunk) == PAYLOAD


@pytest.mark.parametrize(
    ("encoding", "encoded", "fragment"),
    [
        ("gzip", b"\x1f\x8bnot really gzip at all", "not valid gzip"),
        ("gzip", b"plain text", "not valid gzip"),
        ("gzip", gz(PAYLOAD)[:-12], "ends before"),
        ("gzip", gz(PAYLOAD) + b"trailing junk", "not valid gzip"),
        ("gzip", b"\x1f", "ends before"),
        ("deflate", b"x", "too short"),
        ("deflate", b"\xff\xfe\xfd garbage", "not valid deflate"),
        ("deflate", zlib.compress(PAYLOAD) + b"junk", "bytes follow"),
    ],
)
def test_corrupt_bodies_are_400(encoding, encoded, fragment):
    with pytest.raises(BadRequest) as ei:
        _gather(encoding, encoded, limit=1 << 20)
    assert ei.value.status == 400 and fragment in ei.value.message, ei.value.message
    assert "Content-Encoding" in ei.value.message


def test_a_body_exactly_at_the_limit_passes_and_one_byte_more_is_413():
    assert _gather(None, PAYLOAD, limit=len(PAYLOAD)) == PAYLOAD
    assert _gather("gzip", gz(PAYLOAD), limit=len(PAYLOAD)) == PAYLOAD
    for encoding, data in ((None, PAYLOAD), ("gzip", gz(PAYLOAD))):
        with pytest.raises(PayloadTooLarge, match=r"server\.max_body_mb"):
            _gather(encoding, data, limit=len(PAYLOAD) - 1)


class _Spy:
    """A zlib decompress object that records how much output was asked of it."""

    def __init__(self, real):
        self.real, self.asked = real, []

    def decompress(self, data, max_length=0):
        self.asked.append(max_length)
        return self.real.decompress(data, max_length)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_gzip_bomb_never_decompresses_past_the_limit(monkeypatch):
    import tiergate.api.inbound as inbound

    spies = []
    real = zlib.decompressobj
    monkeypatch.setattr(inbound.zlib, "decompressobj", lambda wbits: spies.append(_Spy(real(wbits))) or spies[-1])
    bomb = gz(b"\0" * (16 << 20))  # 16 MB of zeros in ~16 KB
    limit = 1 << 20
    body = BoundedBody("gzip", limit)
    with pytest.raises(PayloadTooLarge, match="decompressed request body"):
        for i in range(0, len(bomb), 16384):
            body.feed(bomb[i : i + 16384])
    assert body._size <= limit + 1  # what was kept
    assert spies and all(0 < n <= limit + 1 for s in spies for n in s.asked)  # never asked for more


def test_compressed_input_is_bounded_too():
    """Empty gzip members decompress to nothing; the compressed size still counts against the limit."""
    empty = gz(b"")
    body = BoundedBody("gzip", 10 * len(empty))
    with pytest.raises(PayloadTooLarge):
        for _ in range(11):
            body.feed(empty)


def _nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize(
    ("raw", "limit", "exceeds"),
    [
        (_nested(64), 64, False),
        (_nested(65), 64, True),
        (_nested(254), 64, True),
        (b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 4, False),  # in a string
        (b'{"a": 1}', 1, False),
        (b'{"a": {}}', 1, True),
        (b'{"a": [' + b"[], " * 500 + b"[]]}", 3, False),  # many brackets, shallow
        (b'{"a": [' + b"[], " * 500 + b"[[[]]]]}", 3, True),  # the deep one is last
        (b'{"a": {"b": {"c": 1}}, "d": [{"e": [1]}]}', 4, False),  # d's list holds an object holding a list
        (b'{"a": {"b": {"c": 1}}, "d": [{"e": [1]}]}', 3, True),
    ],
)
def test_nesting_exceeds(raw, limit, exceeds):
    assert nesting_exceeds(orjson.loads(raw), limit) is exceeds


def test_nesting_counts_containers_not_brackets_in_strings():
    raw = b'{"a": [' + b'"[[[[", ' * 100 + b"1]}"
    assert not nesting_exceeds(orjson.loads(raw), 3)
    assert nesting_exceeds(orjson.loads(b'{"a": [[[' + b'"]]]]", ' * 100 + b"1]]]}"), 3)


def test_bodies_in_flight_refuse_what_would_pass_the_cap_and_count_nothing_for_it():
    bodies = BodiesInFlight(100)
    bodies.take(60)
    with pytest.raises(BodiesBusy) as err:
        bodies.take(41)
    assert bodies.taken == 60 and err.value.status == 503 and err.value.retry_after == 1
    assert "server.max_body_in_flight_mb" in err.value.message and "100 bytes" in err.value.message
    bodies.take(40)  # exactly full fits
    assert bodies.taken == 100


MIB = 1 << 20


@pytest.mark.parametrize(
    ("reads", "waits"),
    [
        # (bytes read past a body's first MiB, at time t) -> seconds to wait; 1 MiB/s, so 1 s of burst
        ([(MIB, 0.0)], [0.0]),  # the burst: read at once
        ([(MIB, 0.0), (MIB, 0.0)], [0.0, 1.0]),  # then the pace
        ([(MIB, 0.0), (MIB, 0.0), (MIB // 2, 0.0)], [0.0, 1.0, 1.5]),
        ([(MIB, 0.0), (MIB, 0.0), (MIB, 1.5)], [0.0, 1.0, 0.5]),  # waited 1.5 s of the 2 owed
        ([(MIB, 0.0), (MIB, 0.0), (MIB, 10.0)], [0.0, 1.0, 0.0]),  # idle long enough: the burst is back
        ([(MIB // 4, t / 4) for t in range(8)], [0.0] * 8),  # read at the pace: never waits
    ],
)
def test_large_bodies_share_one_pace(reads, waits):
    bodies = BodiesInFlight(100 * MIB, large_bytes_per_s=MIB)
    assert [round(bodies.pace(n, t), 6) for n, t in reads] == waits


_HEADER_NAMES = st.sampled_from(
    ["Host", "Authorization", "X-Tiergate-Session", "X-Tiergate-Agent", "X-Request-ID", "anthropic-beta", "User-Agent"]
)
_HEADER_BYTES = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=250, max_size=1100),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(str.encode),
)


@given(st.lists(st.tuples(_HEADER_NAMES, _HEADER_BYTES), max_size=8))
def test_headers_the_raw_fast_path_passes_are_headers_header_problem_passes(headers):
    """plain_headers (raw bytes, C-level calls) may only say yes where header_problem finds nothing."""
    raw = tuple((n.encode(), v) for n, v in headers)
    items = [(n, v.decode("utf-8", "surrogateescape")) for n, v in headers]  # how aiohttp decodes them
    if plain_headers(raw):
        assert header_problem(items) is None


@pytest.mark.parametrize(
    "raw, plain",
    [
        ((), True),
        (((b"Host", b"127.0.0.1:8080"), (b"Authorization", b"Bearer tg-" + b"a" * 40)), True),
        (((b"User-Agent", b"x" * 200), (b"Authorization", b"Bearer " + b"k" * 200)), True),  # long in all, short each
        (((b"X-Tiergate-Session", b"s" * 257),), False),
        (((b"X-Tiergate-Session", b"caf\xc3\xa9"),), False),
        (((b"X-Tiergate-Session", b"a\tb"),), False),
        (((b"X-Request-ID", b"\xff"),), False),
    ],
)
def test_plain_headers_table(raw, plain):
    assert plain_headers(raw) is plain
