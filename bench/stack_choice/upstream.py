"""The fast upstream: an nginx config written from payloads.py.

nginx (one worker, pinned to core 1 by the runner) answers on 127.0.0.1:

  POST /v1/chat/completions           canned chat.completion JSON (~650 B)
  POST /sse/v1/chat/completions       20 chat.completion.chunk SSE events +
                                      usage + [DONE], flushed one by one
  POST /sse-slow/v1/chat/completions  the same with 10 ms between events
                                      (used to see whether a proxy buffers)
  POST /echo/v1/chat/completions      echoes the request body back (used to
                                      check that the proxy rewrote `model`)

The streaming and echo locations need the echo module (Debian package
libnginx-mod-http-echo).
"""

from __future__ import annotations

import os

from payloads import completion_bytes, sse_chunks

ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
SLOW_GAP_S = 0.010


def _nginx_str(b: bytes) -> str:
    s = b.decode()
    for bad in ("'", "\\", "$"):
        assert bad not in s, f"{bad!r} would need escaping in nginx config"
    return "'" + s.replace("\n", "\\n") + "'"


def nginx_conf(prefix: str, port: int) -> str:
    events = sse_chunks(20)
    fast = "\n".join(f"      echo -n {_nginx_str(e)};\n      echo_flush;" for e in events)
    slow = "\n".join(
        (f"      echo_sleep {SLOW_GAP_S};\n" if i else "") + f"      echo -n {_nginx_str(e)};\n      echo_flush;"
        for i, e in enumerate(events)
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
    location = /sse/v1/chat/completions {{
      default_type text/event-stream;
{fast}
    }}
    location = /sse-slow/v1/chat/completions {{
      default_type text/event-stream;
{slow}
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
