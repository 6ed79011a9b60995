"""Hostile inputs against a running gateway, one line each: what came back (issue 13's attacker check).

    .venv/bin/python scripts/attack_probe.py PORT KEY      # after `make demo`: 4000 and the key it prints

Raw sockets, so that bytes no HTTP client library would send (0xff in a header, a malformed request
line, a body shorter than its Content-Length) reach the gateway as written. Every answer should be a
4xx in the client's own envelope, never a 5xx; the last lines show the gateway still serving. The
short-body probe waits for server.body_timeout_s (30 s by default). Everything goes to 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import socket
import sys
import time

CRLF = b"\r\n"
CHAT = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}).encode()


class Probe:
    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key.encode()

    def raw(self, data: bytes, read_s: float = 10, until_close: bool = False) -> bytes:
        """Send ``data``; read one answer by its Content-Length (or everything until the server closes)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=read_s)
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                head, sep, body = out.partition(CRLF + CRLF)
                lengths = [ln for ln in head.split(CRLF) if ln.lower().startswith(b"content-length:")]
                if sep and lengths and len(body) >= int(lengths[0].split(b":")[1]) and not until_close:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        s.close()
        return out

    def chat(
        self, path: bytes = b"/v1/chat/completions", headers: tuple = (), body: bytes = CHAT, key: bytes | None = None
    ) -> bytes:
        h = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        h += b"Authorization: Bearer " + (self.key if key is None else key) + CRLF
        for k, v in headers:
            h += k + b": " + v + CRLF
        return h + b"Content-Length: " + str(len(body)).encode() + CRLF + CRLF + body

    def head_only(self, method: bytes, path: bytes, extra: bytes = b"") -> bytes:
        return method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + self.key + CRLF + extra + CRLF


def show(name: str, out: bytes) -> None:
    head, _, body = out.partition(CRLF + CRLF)
    status = head.split(CRLF)[0].decode(errors="replace")
    print(f"{name:42} {status:28} {body[:150]!r}")


def main(port: int, key: str) -> None:
    p = Probe(port, key)
    show("Authorization key + 0xff", p.raw(p.chat(key=p.key + b"\xff")))
    show("X-Request-ID with 0xff", p.raw(p.chat(headers=((b"X-Request-ID", b"abc\xff"),))))
    show("X-Tiergate-Session with 0xff", p.raw(p.chat(headers=((b"X-Tiergate-Session", b"s\xff\xfe"),))))
    deep = b'{"model":"auto","messages":[{"role":"user","content":' + b"[" * 300 + b"]" * 300 + b"}]}"
    show("JSON nested 300 deep", p.raw(p.chat(body=deep)))
    show("count_tokens nested 300 deep", p.raw(p.chat(path=b"/v1/messages/count_tokens", body=deep)))
    show("malformed request line with a key", p.raw(p.head_only(b"GARB\x01AGE", b"/")))
    gz = ((b"Content-Encoding", b"gzip"),)
    show("corrupt gzip body", p.raw(p.chat(headers=gz, body=b"\x1f\x8b\x08garbage")))
    show("br body", p.raw(p.chat(headers=((b"Content-Encoding", b"br"),), body=b"xx")))
    bomb = gzip.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}")
    show(f"gzip bomb ({len(bomb)} B -> 64 MiB)", p.raw(p.chat(headers=gz, body=bomb)))
    declared = b"Content-Length: 20000000\r\n"
    show("Content-Length 20 MB, no body sent", p.raw(p.head_only(b"POST", b"/v1/chat/completions", declared)))
    t = time.monotonic()
    short = p.head_only(b"POST", b"/v1/chat/completions", b"Content-Length: 100\r\n") + b"0123456789"
    show("short body (CL 100, 10 sent)", p.raw(short, read_s=60))
    print(f"{'':42} answered after {time.monotonic() - t:.1f} s")
    codes = [p.raw(p.chat(key=b"tg-wrong-%d" % i)).split(b" ", 2)[1].decode() for i in range(40)]
    print(f"{'40 wrong keys':42} {' '.join(codes)}")
    last = p.raw(p.chat(key=b"tg-wrong-x"))
    retry = [ln.decode() for ln in last.split(CRLF) if ln.lower().startswith(b"retry-after")]
    print(f"{'':42} {retry}")
    show("correct key right after (same address)", p.raw(p.chat()))
    show("GET /admin/config (master key)", p.raw(p.head_only(b"GET", b"/admin/config")))
    closing = p.chat(headers=((b"Connection", b"close"),))
    pipe = p.raw(p.chat() + p.chat() + closing, read_s=60, until_close=True)
    print(f"{'3 pipelined chats':42} {pipe.count(b'HTTP/1.1 200 OK')} answers of 200")
    show("a normal request afterwards", p.raw(p.chat()))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
