"""What a client may send, as pure checks: header values, JSON nesting, Content-Encoding, bounded decoding.

Nothing here touches a socket: ``api/edge.py`` and ``api/common.py`` apply
these to a request, and ``tests/unit/test_edge_inbound.py`` table-tests them.
Every message names the header, field or limit and never repeats the bytes
the client sent (an error body must not echo a caller's secrets back).
"""

from __future__ import annotations

import operator
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from tiergate.core.errors import BadRequest, BodiesBusy, PayloadTooLarge, UnsupportedEncoding

# ids read into identity and records (ledger rows, session tracking) and echoed in X-Request-ID
MAX_ID_CHARS = 256
# headers passed to the upstream as they are (anthropic-beta lists several features)
MAX_FORWARDED_CHARS = 1024
ID_HEADERS = frozenset({"x-request-id", "x-claude-code-session-id"})
ASCII_HEADERS = frozenset({"x-request-id", "anthropic-version", "anthropic-beta"})  # echoed or sent upstream
FORWARDED = frozenset({"anthropic-version", "anthropic-beta"})
TIERGATE_PREFIX = "x-tiergate-"

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_KNOWN_UNDECODED = frozenset({"br", "zstd", "compress", "x-compress", "exi", "pack200-gzip", "aes128gcm", "dcb", "dcz"})


def value_problem(value: str, max_chars: int, *, ascii_only: bool = False) -> str | None:
    """Why ``value`` cannot be used as an id or forwarded, or None.

    aiohttp hands over header bytes that are not UTF-8 as lone surrogates
    (``\\udcff``); they crash any later ``encode()``, a SQLite or PostgreSQL
    write among them, so they are refused here, with control characters.
    """
    if len(value) > max_chars:
        return f"is longer than {max_chars} characters"
    if value.isascii() and value.isprintable():  # the usual case: one C pass each
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if ascii_only and not value.isascii():
        return "must be printable ASCII"
    return None if value.isprintable() else "contains control or invisible characters"


def header_problem(headers: Iterable[tuple[str, str]]) -> str | None:
    """The first header tiergate reads or forwards whose value is unusable, as a message naming it, or None."""
    for name, value in headers:
        if len(value) <= MAX_ID_CHARS and value.isascii() and value.isprintable():
            continue  # passes every rule below: most headers stop here, without a look at their name
        lower = name.lower()
        if lower.startswith(TIERGATE_PREFIX) or lower in ID_HEADERS:
            cap = MAX_ID_CHARS
        elif lower in FORWARDED:
            cap = MAX_FORWARDED_CHARS
        else:
            continue
        problem = value_problem(value, cap, ascii_only=lower in ASCII_HEADERS)
        if problem is not None:
            return f"header {name} {problem}"
    return None


def plain_headers(raw: Sequence[tuple[bytes, bytes]]) -> bool:
    """Every value printable ASCII and at most MAX_ID_CHARS long: ``header_problem`` would find nothing.

    Read from the raw header bytes with C-level calls only (join, translate, map): the loop over
    every header's name and value cost each request more than the rest of the edge.
    """
    values = b"".join(map(_VALUE, raw))
    if values.translate(None, _PRINTABLE_ASCII):  # some byte is not printable ASCII
        return False
    return len(values) <= MAX_ID_CHARS or max(map(len, map(_VALUE, raw))) <= MAX_ID_CHARS


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))
_VALUE = operator.itemgetter(1)


def key_problem(value: str) -> str | None:
    """An API key is printable ASCII: anything else cannot match one, and must not reach a hash or a log."""
    return None if value.isascii() and value.isprintable() else "is not printable ASCII"


def content_encoding(header: str | None) -> str | None:
    """None for a plain body, else "gzip" or "deflate"; UnsupportedEncoding names what is supported."""
    if header is None:
        return None
    value = header.strip().lower()
    if value in ("", "identity"):
        return None
    if value in ("gzip", "x-gzip"):
        return "gzip"
    if value == "deflate":
        return "deflate"
    supported = "send the body uncompressed, or with Content-Encoding gzip or deflate"
    if "," in value:
        raise UnsupportedEncoding(f"Content-Encoding lists more than one encoding; {supported}")
    what = f"Content-Encoding {value}" if value in _KNOWN_UNDECODED else "this Content-Encoding"
    raise UnsupportedEncoding(f"{what} is not supported; {supported}")


def too_large(limit: int, *, decompressed: bool = False) -> PayloadTooLarge:
    what = "decompressed request body" if decompressed else "request body"
    return PayloadTooLarge(f"{what} is larger than the server's limit of {limit} bytes (server.max_body_mb)")


class BodiesInFlight:
    """Request-body bytes all requests of one worker are reading at once, against server.max_body_in_flight_mb,
    and the pace at which the large ones are read, against server.large_body_mb_per_s.

    Each body is bounded by server.max_body_mb, but eight bodies read at once
    cost eight times that: this bounds their sum. A body with a declared
    length takes it whole before its first byte is read (one add and one
    subtract a request: the usual body pays nothing more); a chunked or
    compressed one takes what it holds as it grows. Only the reading is
    counted: once read, a body is its request's, bounded by max_body_mb.

    Past its first ``PACE_AFTER`` bytes a body is read at a shared pace: at
    loopback speed two clients sending 24 MB bodies over and over kept the
    worker's one core busy copying them, and other clients' p50 rose 7x
    (bench/gateway/hostile_p50.py --control: the same flood aimed at another
    process cost them nothing). While a reader waits its turn, aiohttp's flow
    control stops reading that socket, so the sender waits in the kernel.
    """

    __slots__ = ("limit", "taken", "_rate", "_burst", "_tat")

    PACE_AFTER = 1 << 20  # agents' requests, long contexts included, are well under this

    def __init__(self, limit: int, large_bytes_per_s: float = 64 * (1 << 20)) -> None:
        self.limit = limit
        self.taken = 0
        self._rate = large_bytes_per_s
        self._burst = self.PACE_AFTER / large_bytes_per_s  # seconds of reading allowed ahead of the pace
        self._tat = 0.0  # GCRA's theoretical arrival time of the next byte

    def pace(self, n: int, now: float) -> float:
        """Seconds to wait before reading on, having read ``n`` more bytes of a large body at ``now``."""
        tat = max(self._tat, now) + n / self._rate
        self._tat = tat
        return max(0.0, tat - now - self._burst)

    def refusal(self) -> BodiesBusy:
        return BodiesBusy(
            f"request bodies this worker is reading already fill server.max_body_in_flight_mb "
            f"({self.limit} bytes); retry shortly"
        )

    def take(self, n: int) -> None:
        """Count ``n`` more bytes, or raise BodiesBusy (nothing counted) when they do not fit."""
        if self.taken + n > self.limit:
            raise self.refusal()
        self.taken += n


class BoundedBody:
    """A request body gathered as it arrives, never past ``limit`` bytes, decompressed on the way if need be.

    The compressed bytes are not kept and the decompressor is asked for at
    most the room left, so a gzip bomb costs at most the limit. The
    compressed size is bounded by the same limit, so endless empty gzip
    members cannot keep the reader busy either.
    """

    def __init__(self, encoding: str | None, limit: int) -> None:
        self._encoding = encoding
        self._limit = limit
        self._received = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._inflate: Any = None  # zlib's decompress object; for deflate chosen by the first two bytes
        self._head = b""  # a deflate body's first byte, when it came alone

    @property
    def held(self) -> int:
        """Bytes kept so far (decompressed): what this body costs the worker's memory."""
        return self._size

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._received += len(chunk)
        if self._received > self._limit:
            raise too_large(self._limit)
        if self._encoding is None:
            self._keep(chunk, decompressed=False)
            return
        self._decompress(chunk)

    def finish(self) -> bytes:
        if self._encoding is not None:
            if self._inflate is None:
                if self._received:
                    raise self._corrupt("it is too short")
            elif not self._inflate.eof:
                self._drain(self._inflate.flush())
                if not self._inflate.eof:
                    raise self._corrupt("it ends before the compressed stream does")
        return self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)

    def _keep(self, data: bytes, *, decompressed: bool) -> None:
        if not data:
            return
        self._size += len(data)
        if self._size > self._limit:
            raise too_large(self._limit, decompressed=decompressed)
        self._parts.append(data)

    def _corrupt(self, why: str = "") -> BadRequest:
        return BadRequest(f"body is not valid {self._encoding}{': ' + why if why else ''} (Content-Encoding)")

    def _decompress(self, chunk: bytes) -> None:
        if self._inflate is None and self._encoding == "deflate" and len(self._head) + len(chunk) < 2:
            self._head += chunk
            return
        chunk, self._head = self._head + chunk, b""
        while chunk:
            if self._inflate is None or self._inflate.eof:
                if self._inflate is not None and self._encoding == "deflate":
                    raise self._corrupt("bytes follow the end of the compressed stream")
                self._inflate = zlib.decompressobj(self._wbits(chunk))  # a gzip body may hold several members
            try:
                self._drain(self._inflate.decompress(chunk, self._room()))
                while self._inflate.unconsumed_tail:
                    self._drain(self._inflate.decompress(self._inflate.unconsumed_tail, self._room()))
            except zlib.error:
                raise self._corrupt() from None
            chunk = self._inflate.unused_data if self._inflate.eof else b""

    def _drain(self, data: bytes) -> None:
        self._keep(data, decompressed=True)

    def _room(self) -> int:
        return self._limit - self._size + 1  # one byte more than fits tells "too large" apart from "exactly full"

    def _wbits(self, first: bytes) -> int:
        if self._encoding == "gzip":
            return _GZIP_WBITS
        # "deflate" means zlib-wrapped (RFC 9110), but many clients send raw deflate: a zlib header says which
        wrapped = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS


def nesting_exceeds(body: Any, limit: int) -> bool:
    """Whether ``body`` nests arrays and objects deeper than ``limit`` (the body itself is level 1).

    Translations and orjson's encoder recurse (orjson stops at 255 levels),
    so depth is bounded well before them. Level by level over the parsed
    body: a text-heavy body has few containers and costs microseconds; a
    body of many small objects (tool schemas) costs about what parsing it
    did. Counting brackets in the bytes first was dearer than parsing for a
    large text body.
    """
    level = [body]
    depth = 1
    while True:
        below: list[Any] = []
        for node in level:
            values = node.values() if node.__class__ is dict else node
            below += [v for v in values if v.__class__ is dict or v.__class__ is list]
        if not below:
            return False
        depth += 1
        if depth > limit:
            return True
        level = below
