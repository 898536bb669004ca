"""
Pure rewriting rules of the proxy: which headers cross, what the app is told about the
client (X-Forwarded-*), which path it sees, and how its redirects and cookies are mapped
back under the public prefix. Values in, values out; no reactor.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

# RFC 9110 7.6.1 connection-specific headers, plus the ones a proxy must recompute.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization", b"content-length",
})


# RFC 9110 5.1: a header name is a token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_LINE_BREAKS = b"\x00\r\n"


def is_header_name(name: bytes) -> bool:
    """Whether C{name} is a valid header name (a token)."""
    return _TOKEN.fullmatch(name) is not None


def only_crlf_line_ends(head: bytes) -> bool:
    """Whether every CR and LF in a message head is part of a CRLF, and it has no NUL: the
    common case, in which its lines need no further checks for stray line breaks."""
    newlines = head.count(b"\n")
    return (head.count(b"\r") == newlines and head.count(b"\r\n") == newlines
            and b"\x00" not in head)


def has_line_breaks(value: bytes) -> bool:
    """Whether C{value} holds a CR, LF or NUL (never valid in a header, RFC 9110 5.5)."""
    return len(value.translate(None, _LINE_BREAKS)) != len(value)


def without_line_breaks(value: bytes) -> bytes:
    """C{value} with every CR, LF and NUL replaced by a space (what twisted.web does)."""
    return value.replace(b"\r", b" ").replace(b"\n", b" ").replace(b"\x00", b" ")


def strip_hop_by_hop(headers: Iterable[tuple[bytes, list[bytes]]]) -> list[tuple[bytes, list[bytes]]]:
    """
    Drop hop-by-hop headers and any header the C{Connection} header names
    (C{Connection: close, X-Foo} makes X-Foo hop-by-hop too). Names compare case-blind and
    are returned as given.
    """
    items = list(headers)
    named = HOP_BY_HOP
    for name, values in items:
        if name.lower() == b"connection":
            named = set(HOP_BY_HOP)
            for value in values:
                named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return [(name, values) for name, values in items if name.lower() not in named]


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
