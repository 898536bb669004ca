"""
Cookies, as pure functions: read every C{name=value} pair of Cookie headers (a name may
appear more than once, set on different paths), and drop some of them before the request
goes on to an app. (Set-Cookie is written with twisted.web's C{request.addCookie}.)
"""

from __future__ import annotations

from typing import Iterable


def parse_cookies(headers: Iterable[bytes]) -> list[tuple[str, str]]:
    """All C{(name, value)} pairs of the C{Cookie} header values, in order, duplicates kept."""
    pairs = []
    for header in headers:
        for chunk in header.decode("latin-1").split(";"):
            name, eq, value = chunk.strip().partition("=")
            if eq and name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                pairs.append((name, value))
    return pairs


def without_cookies(headers: Iterable[bytes], drop) -> bytes | None:
    """
    The C{Cookie} header with every cookie whose name C{drop(name)} accepts removed, or
    C{None} when none is left. Used to keep hubtwist's own login cookies from the apps.
    """
    kept = [chunk.strip() for header in headers for chunk in header.decode("latin-1").split(";")
            if chunk.strip() and not drop(chunk.strip().partition("=")[0])]
    return "; ".join(kept).encode("latin-1") if kept else None

