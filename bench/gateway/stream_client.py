"""Time to first token and chunk arrival for one streaming target.

  python stream_client.py PORT PATH BODY_FILE HEADERS_FILE N [WARMUP]

Sends N sequential streaming requests (after WARMUP unmeasured ones), each on
a fresh connection (the connect is not timed), and prints one JSON line with,
per request: the time from the last byte of the request written to the first
complete ``data:`` event, the arrival time of every event, and how many
separate reads brought events. The runner pins this to core 1 (beside the
upstream) and compares each target with the upstream direct.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time

# the first event that carries a token (a non-empty delta content; the first
# upstream event only has the role, and some proxies merge it into the next)
CONTENT = re.compile(rb'"content":\s*"[^"]')


class Dechunk:
    """Incremental HTTP/1.1 chunked-transfer decoder (also passes identity bodies through)."""

    def __init__(self, chunked: bool) -> None:
        self.chunked = chunked
        self.buf = b""
        self.need = -1  # -1: reading a size line; n > 0: n data bytes left (+ CRLF)
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if not self.chunked:
            return data
        self.buf += data
        out = []
        while True:
            if self.need < 0:
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                size = int(self.buf[:i].split(b";")[0] or b"0", 16)
                self.buf = self.buf[i + 2 :]
                if size == 0:
                    self.done = True
                    break
                self.need = size
            else:
                if len(self.buf) < self.need + 2:
                    break
                out.append(self.buf[: self.need])
                self.buf = self.buf[self.need + 2 :]
                self.need = -1
        return b"".join(out)


async def one(port: int, path: str, body: bytes, headers: list[str]) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *headers,
    ]
    req = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    writer.write(req)
    await writer.drain()
    t0 = time.perf_counter()
    raw, status, dec, text = b"", None, None, b""
    arrivals: list[float] = []
    first_content = None
    reads = 0
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                break
            now = time.perf_counter() - t0
            if dec is None:
                raw += data
                end = raw.find(b"\r\n\r\n")
                if end < 0:
                    continue
                head_lines = raw[:end].decode("latin-1").split("\r\n")
                status = int(head_lines[0].split()[1])
                chunked = any(
                    h.lower().startswith("transfer-encoding:") and "chunked" in h.lower() for h in head_lines[1:]
                )
                dec = Dechunk(chunked)
                data = raw[end + 4 :]
            text += dec.feed(data)
            complete = text.count(b"\n\n")  # one SSE event ends with a blank line
            if complete > len(arrivals):
                reads += 1
                arrivals += [now] * (complete - len(arrivals))
                if first_content is None and CONTENT.search(text):
                    first_content = now
            if dec.done:
                break
    finally:
        writer.close()
    events = [e for e in text.split(b"\n\n") if e.strip()]
    data_events = sum(1 for e in events if e.lstrip().startswith(b"data:") or b"\ndata:" in e)
    return {
        "status": status,
        "events": len(arrivals),
        "data_events": data_events,
        "done": b"data: [DONE]" in text,
        "arrivals_ms": [round(a * 1e3, 4) for a in arrivals],
        "first_content_ms": None if first_content is None else round(first_content * 1e3, 4),
        "reads": reads,
    }


async def run(port: int, path: str, body: bytes, headers: list[str], n: int, warmup: int) -> None:
    for _ in range(warmup):
        await one(port, path, body, headers)
    runs = []
    for _ in range(n):
        runs.append(await one(port, path, body, headers))
    print(json.dumps({"runs": runs}))


def main() -> None:
    port, path, body_file, headers_file, n = sys.argv[1:6]
    warmup = int(sys.argv[6]) if len(sys.argv) > 6 else 5
    with open(body_file, "rb") as f:  # read before the event loop starts
        body = f.read()
    with open(headers_file) as f:
        headers = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    asyncio.run(run(int(port), path, body, headers, int(n), warmup))


if __name__ == "__main__":
    main()
