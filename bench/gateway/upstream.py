"""The fast upstream for the gateway benchmark: an nginx config.

nginx (one worker, pinned to core 1 by the runner) answers on 127.0.0.1:

  POST /v1/chat/completions          canned chat.completion JSON (657 B)
  POST /sse-gap/v1/chat/completions  20 chat.completion.chunk SSE events +
                                     usage + [DONE], each flushed on its own,
                                     GAP_S apart (echo_sleep), so time to first
                                     token and chunk-by-chunk forwarding show
  POST /echo/v1/chat/completions     echoes the request body (readiness and
                                     correctness checks)

The bodies come from bench/stack_choice/payloads.py, so both benchmarks send
and receive the same bytes. The SSE and echo locations need the nginx echo
module (Debian package libnginx-mod-http-echo).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
STACK = os.path.join(os.path.dirname(HERE), "stack_choice")
if STACK not in sys.path:
    sys.path.append(STACK)  # after bench/gateway: its upstream.py is not this one

from payloads import completion_bytes, sse_chunks  # noqa: E402

ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
GAP_S = 0.001
N_CHUNKS = 20
STREAM_PREFIX = "/sse-gap"


def _nginx_str(b: bytes) -> str:
    s = b.decode()
    for bad in ("'", "\\", "$"):
        assert bad not in s, f"{bad!r} would need escaping in nginx config"
    return "'" + s.replace("\n", "\\n") + "'"


def stream_events() -> list[bytes]:
    return sse_chunks(N_CHUNKS)


def nginx_conf(prefix: str, port: int) -> str:
    gap = "\n".join(
        (f"      echo_sleep {GAP_S};\n" if i else "") + f"      echo -n {_nginx_str(e)};\n      echo_flush;"
        for i, e in enumerate(stream_events())
    )
    return f"""
load_module {ECHO_MODULE};
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_buffer_size 256k;
  client_max_body_size 10m;
  client_body_temp_path {prefix}/client_body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 {_nginx_str(completion_bytes())};
    }}
    location = {STREAM_PREFIX}/v1/chat/completions {{
      default_type text/event-stream;
{gap}
    }}
    location = /echo/v1/chat/completions {{
      default_type application/json;
      echo_read_request_body;
      echo_request_body;
    }}
  }}
}}
"""


def write_conf(prefix: str, port: int) -> str:
    os.makedirs(prefix, exist_ok=True)
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(nginx_conf(prefix, port))
    return path
