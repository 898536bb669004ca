"""
Pure rewriting rules of the proxy: what the app is told about the client (X-Forwarded-*),
which path it sees, and how its redirects and cookies are mapped back under the public
prefix. Values in, values out; no reactor. (Which headers cross a hop, and every other
rule of the HTTP/1.1 wire format, is L{hubtwist.proxy.http1}.)
"""

from __future__ import annotations

from typing import Callable, Mapping
from urllib.parse import unquote_plus, urlsplit, urlunsplit


def query_without(uri: bytes, name: str, matches: Callable[[str], bool] | None = None) -> bytes:
    """
    C{uri} without its C{name=} query arguments (only those whose decoded value
    C{matches}, when given). Every other byte is kept as it was, so the app sees its own
    arguments exactly as the client sent them. Pure; never raises.
    """
    path, mark, query = uri.partition(b"?")
    if not mark:
        return uri
    kept = [part for part in query.split(b"&") if not _is_arg(part, name, matches)]
    return path + (b"?" + b"&".join(kept) if any(kept) else b"")


def _is_arg(part: bytes, name: str, matches: Callable[[str], bool] | None) -> bool:
    # Decoded as parse_qsl decodes them (query_value), so what was read is what goes.
    key, _, raw = part.decode("latin-1").partition("=")
    if unquote_plus(key) != name:
        return False
    return matches is None or matches(unquote_plus(raw))


# jhsingle-native-proxy's --query-user-info: who is calling, as a query argument an app may
# trust. hubtwist tells apps in headers; whatever a client sends under this name is dropped.
QUERY_USER_ARG = "CDSDASHBOARDS_JH_USER"


def backend_path(
    path: bytes, prefix: bytes, absolute_url: bool,
    mappath: Mapping[str, str] | Callable[[str], str] | None = None,
) -> bytes:
    """
    The request target the app sees. C{path} is the public path with its query string,
    C{prefix} the route's public prefix (with a trailing slash). jupyter-server-proxy's
    rules: strip the prefix unless C{absolute_url}; then C{mappath} maps the path part.
    """
    target = path if absolute_url else b"/" + path[len(prefix):]
    if mappath:
        raw_path, sep, query = target.partition(b"?")
        text = raw_path.decode("latin-1")
        mapped = mappath(text) if callable(mappath) else mappath.get(text, text)
        target = mapped.encode("latin-1") + sep + query
    query = target.partition(b"?")[2]
    if query and (b"%" in query or b"DSDASHBOARDS" in query.upper()):
        target = query_without(target, QUERY_USER_ARG)
    return target


def _append(existing: list[bytes] | None, value: bytes) -> list[bytes]:
    if not existing:
        return [value]
    return [b", ".join(existing) + b", " + value]


def forwarded_headers(
    existing: Mapping[bytes, list[bytes]], client_ip: bytes, proto: bytes, host: bytes,
    port: bytes, prefix: bytes,
) -> dict[bytes, list[bytes]]:
    """
    The X-Forwarded-* headers for the app. For/Proto/Host/Port are extended with this hop
    rather than replaced, so an app that trusts the first entry sees what the proxy in front
    of us saw, and one that trusts the last sees us; X-Forwarded-Prefix is ours alone.
    """
    return {
        b"x-forwarded-for": _append(existing.get(b"x-forwarded-for"), client_ip),
        b"x-forwarded-proto": _append(existing.get(b"x-forwarded-proto"), proto),
        b"x-forwarded-host": _append(existing.get(b"x-forwarded-host"), host),
        b"x-forwarded-port": _append(existing.get(b"x-forwarded-port"), port),
        b"x-forwarded-prefix": [prefix.rstrip(b"/") or b"/"],
    }


def _is_backend_origin(netloc: str, backend_netlocs: frozenset[str]) -> bool:
    return netloc.lower() in backend_netlocs


def rewrite_location(
    location: str, *, prefix: str, absolute_url: bool, public_origin: str,
    backend_netlocs: frozenset[str],
) -> str:
    """
    Map a C{Location}/C{Content-Location} the app sent back into the public URL space.

    - C{http://127.0.0.1:PORT/x} (the app's own origin) becomes C{public_origin + prefix + x}
      (or C{public_origin + /x} with C{absolute_url}, where the app already knows its path);
    - C{/x} becomes C{prefix + x} when the prefix was stripped;
    - relative references and other origins pass unchanged (no open redirect is created:
      only the app's own origin is rewritten, and only onto ours).
    """
    try:
        parts = urlsplit(location)
    except ValueError:  # not a URL (an unbalanced "[", say): left as the app sent it
        return location
    if parts.scheme in ("http", "https") and _is_backend_origin(parts.netloc, backend_netlocs):
        path = parts.path or "/"
        if not absolute_url:
            path = prefix + path.lstrip("/")
        return public_origin + urlunsplit(("", "", path, parts.query, parts.fragment))
    if not parts.scheme and not parts.netloc and location.startswith("/") and not absolute_url:
        if not location.startswith("//"):
            return prefix + location.lstrip("/")
    return location


def rewrite_cookie_path(set_cookie: bytes, prefix: bytes) -> bytes:
    """
    When the prefix was stripped, the app's C{Path=/x} means C{prefix + x} to the browser.
    (A cookie without a Path defaults to the request's directory, already under the prefix.)
    """
    parts = set_cookie.split(b";")
    for index, part in enumerate(parts[1:], start=1):
        name, _, value = part.strip().partition(b"=")
        value = value.strip()
        if name.lower() == b"path" and value.startswith(b"/"):
            parts[index] = b" Path=" + prefix + value[1:]
    return b";".join(parts)
