"""
Cookies, as pure functions: read every C{name=value} pair of Cookie headers (a name may
appear more than once, set on different paths), and drop some of them before the request
goes on to an app. (Set-Cookie is written with twisted.web's C{request.addCookie}.)
"""

from __future__ import annotations

from typing import Callable, Iterable


def parse_cookies(headers: Iterable[bytes]) -> list[tuple[str, str]]:
    """
    All C{(name, value)} pairs of the C{Cookie} header values, in order, duplicates kept.
    Any bytes are accepted (read as latin-1); malformed pairs are skipped, never an error.
    """
    pairs = []
    for header in headers:
        for chunk in header.decode("latin-1").split(";"):
            name, eq, value = chunk.strip().partition("=")
            if eq and name:
                pairs.append((name, _unquote(value.strip())))
    return pairs


def without_cookies(headers: Iterable[bytes], drop: Callable[[str, str], bool]) -> bytes | None:
    """
    The C{Cookie} header with every cookie C{drop(name, value)} accepts removed (values
    unquoted as L{parse_cookies} reads them), or C{None} when none is left. Used to keep
    hubtwist's own cookies from the apps. Never raises on any header bytes.
    """
    kept = []
    for header in headers:
        for chunk in header.decode("latin-1").split(";"):
            chunk = chunk.strip()
            if not chunk:
                continue
            name, _, value = chunk.partition("=")
            if not drop(name, _unquote(value.strip())):
                kept.append(chunk)
    return "; ".join(kept).encode("latin-1") if kept else None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value
