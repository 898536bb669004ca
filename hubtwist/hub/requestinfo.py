"""
Small readers of a twisted.web request that both gates share: headers, query arguments,
cookies, what kind of client is asking, and finishing a render that happened later.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from twisted.web.server import NOT_DONE_YET

from hubtwist.hub.cookies import parse_cookies
from hubtwist.proxy.forward import is_upgrade

SAFE_METHODS = frozenset({b"GET", b"HEAD"})


def header(request, name: bytes) -> str | None:
    value = request.requestHeaders.getRawHeaders(name)
    return value[0].decode("latin-1") if value else None


def query_arg(request, name: str) -> str | None:
    """The first C{name=} argument of the query string (the body is never read here)."""
    query = request.uri.partition(b"?")[2].decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == name:
            return value
    return None


def uri_without_arg(request, name: str) -> bytes:
    """The request's URI with every C{name=} query argument removed."""
    path, _, query = request.uri.partition(b"?")
    kept = [(k, v) for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k != name]
    return path + (b"?" + urlencode(kept).encode("latin-1") if kept else b"")


def cookies(request) -> list[tuple[str, str]]:
    return parse_cookies(request.requestHeaders.getRawHeaders(b"cookie", []))


def authorization_token(request) -> str | None:
    """The token of C{Authorization: token X} or C{Authorization: bearer X}."""
    return token_of_authorization(header(request, b"authorization"))


def token_of_authorization(value: str | None) -> str | None:
    """The token of an C{Authorization} header value C{token X} or C{bearer X}."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() in ("token", "bearer") and token.strip():
        return token.strip()
    return None


def is_https(request) -> bool:
    """The browser's side is https: this socket, or the proxy in front says so."""
    forwarded = header(request, b"x-forwarded-proto") or header(request, b"x-scheme")
    if forwarded:
        return forwarded.split(",")[0].strip().lower() == "https"
    return request.isSecure()


def is_navigation(request) -> bool:
    """A page view a browser makes (GET/HEAD, C{Sec-Fetch-Mode} navigate or not sent)."""
    return (request.method in SAFE_METHODS
            and (header(request, b"sec-fetch-mode") or "navigate") == "navigate")


def looks_like_api(request, rest: bytes) -> bool:
    """
    Requests a login redirect cannot help: anything but GET/HEAD, WebSocket handshakes,
    XHR and fetch() calls, clients asking for JSON, and hubtwist's own API under C{rest}.
    """
    if request.method not in SAFE_METHODS or is_upgrade(request):
        return True
    if rest.startswith(b"api/") or header(request, b"x-requested-with"):
        return True
    if (header(request, b"sec-fetch-mode") or "navigate") != "navigate":
        return True
    accept = (header(request, b"accept") or "").lower()
    return "json" in accept and "text/html" not in accept


def client_ip(request) -> str:
    return getattr(request.getClientAddress(), "host", "") or ""


def finish_render(request, body) -> None:
    """
    Complete a request whose resource rendered after an asynchronous check: what
    C{twisted.web.server.Request.render} does with a returned body, HEAD included.
    """
    if body is NOT_DONE_YET or request.finished:
        return
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(b"" if request.method == b"HEAD" else body)
    request.finish()
