"""
The demo app of C{hubtwist demo}: a tiny stdlib web app that shows what reached it through
hubtwist (path, forwarded headers), a live clock over server-sent events (streaming), and
a form whose upload size it reports. Run alone: C{python -m hubtwist.demo --port 8000}.
"""

from __future__ import annotations

import argparse
import html
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>hubtwist demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}
code,pre{{background:#f3f3f3;padding:.1rem .3rem}} pre{{padding:.8rem;overflow:auto}}</style></head>
<body><h1>Hello from behind hubtwist</h1>
<p>This small app runs as a process that hubtwist supervises; every request you make reaches
it through hubtwist's proxy.</p>
<p>Server time, streamed by server-sent events: <b id="clock">…</b></p>
<form method="post" enctype="multipart/form-data" action="upload">
<input type="file" name="file"> <button>Upload (the app reports the size)</button></form>
<h2>What this request looked like to the app</h2>
<pre>{request}</pre>
<script>
const events = new EventSource("clock");
events.onmessage = (e) => document.getElementById("clock").textContent = e.data;
</script></body></html>
"""


class DemoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        print(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.endswith("/clock"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(3600):
                    self.wfile.write(f"data: {time.strftime('%H:%M:%S')}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(1)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
            return
        if path.endswith("/api/info"):
            self._send(200, "application/json", json.dumps(
                {"path": self.path, "headers": dict(self.headers.items())}).encode())
            return
        seen = f"{self.command} {self.path}\n" + "".join(
            f"{key}: {value}\n" for key, value in self.headers.items())
        self._send(200, "text/html; charset=utf-8", _PAGE.format(request=html.escape(seen)).encode())

    def do_POST(self) -> None:
        remaining = int(self.headers.get("Content-Length") or 0)
        total = 0
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            total += len(chunk)
            remaining -= len(chunk)
        self._send(200, "text/plain; charset=utf-8",
                   f"Received {total} bytes through hubtwist.\n".encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--base-url", default="/")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), DemoHandler)
    server.daemon_threads = True
    print(f"demo app listening on 127.0.0.1:{args.port} (public base URL {args.base_url})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
