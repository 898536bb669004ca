"""
A prefix-unaware web app for `rewrite_urls` tests (stdlib http.server): every link it
writes is root-absolute, as if it were served at `/`.

    python prefixless.py PORT

Routes: / (HTML with href/src/action/srcset/style/meta-refresh/<base> links, and an inline
script and a JSON island that must stay as they are; ?big=N repeats its body block N times,
sent in pieces of uneven size), /style.css (CSS with url(/...) and @import), /data.json
(JSON holding "/x" paths), /gzip (the page gzip-compressed when the request accepts gzip).
Every answer has X-Seen-Accept-Encoding: the Accept-Encoding the app received.
"""

from __future__ import annotations

import gzip
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HEAD = (b'<!doctype html><html><head><base href="/">'
        b'<link rel="stylesheet" href="/style.css">'
        b"<meta http-equiv=refresh content='30;url=/later'>"
        b"<style>body{background:url(/bg.png)}</style>"
        b'<script>var api = "/api/x"; var html = "<a href=/js>";</script>'
        b'<script type="application/json">{"next": "/json-island"}</script>'
        b"</head><body>\n")
BLOCK = (b'<a href="/page">page</a> <a href=//cdn.example/lib.js>cdn</a> '
         b"<img src=/img.png srcset='/img.png 1x, /img@2x.png 2x'> "
         b'<form action="/submit"><button formaction=/other>go</button></form> '
         b'<div style="background: url(\'/tile.png\')">x</div> <a href="rel/ok">rel</a>\n')
TAIL = b"</body></html>\n"
CSS = b'@import "/base.css";\nbody { background: url(/bg.png) }\n.a { background: url("//cdn/x.png") }\n'
JSON = b'{"links": ["/x", "/y"]}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/":
            blocks = int(query.get("big", ["1"])[0])
            self.send_chunks("text/html; charset=utf-8", [HEAD, *[BLOCK] * blocks, TAIL])
        elif url.path == "/style.css":
            self.send_body("text/css", CSS)
        elif url.path == "/data.json":
            self.send_body("application/json", JSON)
        elif url.path == "/gzip":
            body = HEAD + BLOCK + TAIL
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                self.send_body("text/html", gzip.compress(body), {"Content-Encoding": "gzip"})
            else:
                self.send_body("text/html", body)
        else:
            self.send_body("text/plain", b"not found", status=404)

    def _head(self, status, content_type, extra):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("X-Seen-Accept-Encoding", self.headers.get("Accept-Encoding") or "")
        for name, value in (extra or {}).items():
            self.send_header(name, value)

    def send_body(self, content_type, body, extra=None, status=200):
        self._head(status, content_type, extra)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_chunks(self, content_type, parts):
        """The body with a Content-Length, written in uneven pieces (tags cut across
        the proxy's reads)."""
        body = b"".join(parts)
        self._head(200, content_type, None)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        step = 7
        for at in range(0, len(body), 4093):
            self.wfile.write(body[at:at + 4093 - step])
            self.wfile.write(body[at + 4093 - step:at + 4093])
            self.wfile.flush()


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
