"""
Error responses users see when an app cannot answer: a short HTML page for browsers, JSON
for API clients, always a sentence saying what happened and what to do.
"""

from __future__ import annotations

import html
import json
from typing import Sequence

from hubtwist.proxy.twisted_private import request_disconnected
from hubtwist.supervise.logring import LogLine


def wants_json(request) -> bool:
    """API clients: an Accept that prefers JSON, or an XHR, and no HTML in Accept."""
    accept = (request.getHeader(b"accept") or b"").lower()
    if b"text/html" in accept:
        return False
    return (b"json" in accept or request.getHeader(b"x-requested-with") is not None
            or request.method not in (b"GET", b"HEAD"))


def send_error(
    request, status: int, title: str, detail: str, *,
    logs: Sequence[LogLine] = (), retry_after: float | None = None,
) -> None:
    """Finish C{request} with C{status} and an explanation (nothing if it is gone)."""
    gone = request_disconnected(request)
    if request.finished or gone or request.startedWriting:
        if not request.finished and not gone:
            request.loseConnection()
        return
    request.setResponseCode(status)
    if retry_after is not None:
        request.setHeader(b"retry-after", b"%d" % max(1, round(retry_after)))
    request.setHeader(b"cache-control", b"no-store")
    if wants_json(request):
        body = json.dumps({
            "status": status, "error": title, "message": detail,
            "logs": [line.text for line in logs],
        }).encode()
        request.setHeader(b"content-type", b"application/json")
    else:
        log_html = ""
        if logs:
            log_html = "<h2>Last lines of the app's log</h2><pre>{}</pre>".format(
                html.escape("\n".join(f"[{line.stream}] {line.text}" for line in logs)))
        body = _PAGE.format(status=status, title=html.escape(title), detail=html.escape(detail),
                            logs=log_html).encode()
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{status} {title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:3rem auto;padding:0 1rem;color:#222}}
pre{{background:#f4f4f4;padding:1rem;overflow:auto;font-size:.85rem}}</style></head>
<body><h1>{status} {title}</h1><p>{detail}</p>{logs}
<p><small>hubtwist</small></p></body></html>
"""
