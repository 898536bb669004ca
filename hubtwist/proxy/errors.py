"""
Error responses users see when an app cannot answer: a short HTML page for browsers, JSON
for API clients, always a sentence saying what happened and what to do.
"""

from __future__ import annotations

import json
from typing import Sequence

from hubtwist.proxy.look import esc, page, set_page_headers
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
    """Finish C{request} with C{status} and an explanation (nothing if it is gone): an HTML
    page in the look of hubtwist's pages (L{hubtwist.proxy.look}), or its JSON twin
    C{"status", "error", "message", "logs"} for API clients (L{wants_json}). C{logs} are
    the app's last lines; nothing else of the app (environment, tokens) is ever shown."""
    gone = request_disconnected(request)
    if request.finished or gone or request.startedWriting:
        if not request.finished and not gone:
            request.loseConnection()
        return
    request.setResponseCode(status)
    if retry_after is not None:
        request.setHeader(b"retry-after", b"%d" % max(1, round(retry_after)))
    if wants_json(request):
        body = json.dumps({
            "status": status, "error": title, "message": detail,
            "logs": [line.text for line in logs],
        }).encode()
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
    else:
        body = error_page(status, title, detail, logs)
        set_page_headers(request)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def log_text(logs: Sequence[LogLine]) -> str:
    """Log lines as the pages show them, one C{[stream] text} a line (not escaped)."""
    return "\n".join(f"[{line.stream}] {line.text}" for line in logs)


def error_page(status: int, title: str, detail: str, logs: Sequence[LogLine] = ()) -> bytes:
    """The HTML error page (no script: a plain link reloads the page)."""
    log_html = ""
    if logs:
        log_html = f"<h2>Last lines of the app's log</h2><pre>{esc(log_text(logs))}</pre>"
    again = ('<p class="row"><a class="button primary" href="">Try again</a></p>'
             if status >= 500 else "")
    body = (f'<main class="failed"><p class="status">Error {status}</p>'
            f'<h1>{esc(title)}</h1><p class="detail">{esc(detail)}</p>{log_html}{again}'
            "<footer>hubtwist</footer></main>")
    return page(f"{status} {title}", body)
