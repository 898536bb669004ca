"""
Small readers of a twisted.web request that both gates share: headers, query arguments,
cookies, what kind of client is asking, and finishing a render that happened later.
"""

from __future__ import annotations

from typing import Callable
from urllib.parse import parse_qs, parse_qsl, urlsplit

from twisted.web.server import NOT_DONE_YET

from hubtwist.config.schema import OWN_SEGMENT
from hubtwist.proxy.rewrite import query_without
from hubtwist.hub.cookies import parse_cookies
from hubtwist.proxy.forward import is_upgrade

SAFE_METHODS = frozenset({b"GET", b"HEAD"})
# hubtwist's own API below the prefix, at the base URL or under the reserved segment
_OWN_API = (b"api/", OWN_SEGMENT.encode() + b"/api")


def header(request, name: bytes) -> str | None:
    value = request.requestHeaders.getRawHeaders(name)
    return value[0].decode("latin-1") if value else None


def query_arg(request, name: str) -> str | None:
    """The first C{name=} argument of the query string (the body is never read here)."""
    return query_value(request.uri, name)


def query_value(uri: bytes, name: str) -> str | None:
    """The first C{name=} argument of C{uri}'s query string, decoded. Pure; never raises."""
    query = uri.partition(b"?")[2].decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == name:
            return value
    return None


def uri_without_arg(request, name: str) -> bytes:
    """The request's URI with every C{name=} query argument removed."""
    return query_without(request.uri, name)


def drop_query_arg(request, name: str, matches: Callable[[str], bool] | None = None) -> None:
    """
    Remove C{name=} arguments (those whose value C{matches}, if given) from the request
    before it is forwarded: C{uri} is what the proxy sends on; C{args} stays consistent.
    """
    uri = query_without(request.uri, name, matches)
    if uri != request.uri:
        request.uri = uri
        request.args = parse_qs(uri.partition(b"?")[2], keep_blank_values=True)


_PARSED: dict[tuple[bytes, ...], list[tuple[str, str]]] = {}
_MAX_PARSED = 1024


def cookies(request) -> list[tuple[str, str]]:
    """
    The request's cookies. A browser sends the same Cookie header with every request (and
    the gates ask several times per request): each header is parsed once for all of them.
    The list is shared: read it, never change it.
    """
    key = tuple(request.requestHeaders.getRawHeaders(b"cookie", ()))
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = parse_cookies(key)
        if len(_PARSED) >= _MAX_PARSED:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


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
    """
    A page view a browser makes (GET/HEAD, C{Sec-Fetch-Mode} navigate or not sent). A
    WebSocket handshake never is one, even from a script that sends no C{Sec-Fetch-Mode}:
    it cannot follow a redirect or keep a cookie.
    """
    return (request.method in SAFE_METHODS and not is_upgrade(request)
            and (header(request, b"sec-fetch-mode") or "navigate") == "navigate")


def cross_origin(method: bytes, host: str | None, origin: str | None, fetch_site: str | None,
                 *, upgrade: bool = False) -> bool:
    """
    True when a cookie-authenticated request must be refused because it visibly comes from
    another origin: C{Sec-Fetch-Site} says C{cross-site} or C{same-site} (browsers send
    cookies to every port of a host, so a page of another local app is "same-site"), or
    C{Origin} names another host:port than C{Host}. Only unsafe methods and WebSocket
    handshakes (C{upgrade}) are checked: a page may open a WebSocket to any origin with the
    user's cookies, and CORS does not apply to it. Without C{Origin} and C{Sec-Fetch-Site}
    the client is not a browser (browsers send C{Origin} on every handshake and unsafe
    request), so it passes, as in jupyter_server. Pure; never raises.
    """
    if method in SAFE_METHODS and not upgrade:
        return False
    if fetch_site and fetch_site not in ("same-origin", "none"):
        return True
    if origin == "null":
        return True
    if origin and host:
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:  # such as "http://[::1": not an origin a browser sends
            return True
        return netloc.lower() != host.lower()
    return False


def looks_like_api(request, rest: bytes) -> bool:
    """
    Requests a login redirect cannot help: anything but GET/HEAD, WebSocket handshakes,
    XHR and fetch() calls, clients asking for JSON, and hubtwist's own API under C{rest}.
    """
    if request.method not in SAFE_METHODS or is_upgrade(request):
        return True
    if rest.startswith(_OWN_API) or header(request, b"x-requested-with"):
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
