"""
The route table of C{hubtwist chp}, pure logic (no reactor): configurable-http-proxy's
path rules, the longest-prefix lookup, targets, C{last_activity} and the JSON the REST
API returns.

Paths. A route's path is cleaned as CHP cleans it (a leading C{/} added, one trailing
C{/} removed: C{/user/alice/} is C{/user/alice}); matching works on path segments, so
C{/user/alice} serves C{/user/alice}, C{/user/alice/} and C{/user/alice/lab}, never
C{/user/alicebob}. The request path matched is the percent-decoded path (C{/b%40r} and
C{/b@r} are the same), with C{/HOST} in front of it under C{--host-routing}.

Lookup cost. Routes live in one dict keyed by their path, and the table counts how many
routes it has at each depth (number of segments). A lookup tries, from the deepest depth
that has routes down to the root, the request path's prefix of that depth: one dict
lookup per distinct depth in use (three for a JupyterHub: C{/}, C{/hub}, C{/user/NAME}),
however many routes there are.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from time import perf_counter
from urllib.parse import unquote, urlsplit

import attrs

from hubtwist.counting import SAMPLE_MASK, ChpCounts, Sampled
from hubtwist.supervise import BackendAddress

__all__ = [
    "ChpRoute", "RouteTable", "Target", "TargetError", "clean_path", "format_time",
    "forwarded_for_chp", "parse_target", "parse_time", "upstream_target",
]


class TargetError(ValueError):
    """A route's target hubtwist cannot proxy to (the route is kept; requests get 503)."""


@attrs.frozen
class Target:
    """A parsed route target: where to connect, the path to prepend, the C{Host} that
    C{--change-origin} sends, whether it is reached with TLS (C{https://})."""

    address: BackendAddress
    path: bytes
    host: bytes
    secure: bool = False


def parse_target(target: str, https=None) -> Target:
    """
    C{http://HOST[:PORT][/PATH]}, C{https://HOST[:PORT][/PATH]} or
    C{http+unix://URL-ENCODED-SOCKET-PATH[/PATH]} (also spelled C{unix+http://}), as CHP
    accepts them. C{https(address, hostname)} makes the address of an https target (one
    that connects with TLS: L{hubtwist.front.tls.TlsAddress}); without it, https targets
    are refused.

    @raise TargetError: another scheme, or no host.
    """
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError as error:
        raise TargetError(f"target {target!r} is not a URL: {error}") from None
    scheme = parts.scheme.lower()
    path = (parts.path or "/").encode("utf-8")
    if scheme in ("http+unix", "unix+http"):
        socket_path = unquote(parts.netloc)
        if not socket_path:
            raise TargetError(f"target {target!r} names no socket")
        return Target(BackendAddress.unix(socket_path), path, b"localhost")
    if scheme not in ("http", "https") or (scheme == "https" and https is None):
        raise TargetError(f"target {target!r}: only http://, https:// and http+unix:// "
                          "targets are supported")
    host = parts.hostname
    if not host:
        raise TargetError(f"target {target!r} has no host")
    port = port or (443 if scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    address = BackendAddress.tcp(port, host)
    if scheme == "https":
        address = https(address, host)
    return Target(address, path, f"{shown}:{port}".encode("idna"), scheme == "https")


def clean_path(path: str) -> str:
    """CHP's route path form: C{/foo/bar} (a leading slash, no trailing one but for C{/})."""
    parts = _segments(path)
    return "/" + "/".join(parts)


def _segments(path: str) -> list[str]:
    stripped = path.strip("/")
    return stripped.split("/") if stripped else []


def format_time(timestamp: float) -> str:
    """An epoch time as CHP's JSON writes dates: C{2024-05-01T12:00:00.123Z}."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    """An ISO 8601 date or date-time as an epoch time (no offset: UTC).

    @raise ValueError: not ISO 8601.
    """
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    stamp = moment.timestamp()
    if not math.isfinite(stamp):
        raise ValueError(text)
    return stamp


class ChpRoute:
    """
    One route: its path, the JSON object it was posted with (C{target} and any other
    keys, returned as posted), its C{last_activity} (epoch seconds) and its parsed target
    (or why it cannot be used). C{activity} counts its stamps (the table's, for the
    C{last_activity_updating} metric).
    """

    __slots__ = ("path", "data", "last_activity", "target", "problem", "prefix_bytes", "lean",
                 "activity")

    def __init__(self, path: str, data: dict, now: float, https=None,
                 activity: Sampled | None = None) -> None:
        self.path = path
        self.activity = Sampled() if activity is None else activity
        self.data = data
        self.last_activity = now
        self.prefix_bytes = b"" if path == "/" else path.encode("utf-8")
        self.lean = None  # the lean path's view of it, made on first use (front/lean.py)
        try:
            self.target: Target | None = parse_target(data["target"], https)
            self.problem = ""
        except TargetError as error:
            self.target = None
            self.problem = str(error)

    def touch(self, now: float) -> None:
        """Traffic went through this route."""
        activity = self.activity
        activity.calls += 1
        if activity.calls & SAMPLE_MASK != 1:
            self.last_activity = now
            return
        started = perf_counter()
        self.last_activity = now
        activity.timed.observe(perf_counter() - started)

    def as_json(self) -> dict:
        """The route as the REST API returns it."""
        return {**self.data, "last_activity": format_time(self.last_activity)}


class RouteTable:
    """The routes, by cleaned path, with a lookup whose cost does not grow with their
    number (see the module docstring). C{counts} is where the proxy, the API and the
    table count for the metrics (hubtwist.front.metrics); the table counts its lookups
    and its routes' activity stamps there."""

    def __init__(self, *, host_routing: bool = False, https=None,
                 counts: ChpCounts | None = None) -> None:
        self.host_routing = host_routing
        self.https = https  # makes https targets' addresses (see parse_target)
        self.counts = ChpCounts() if counts is None else counts
        self._routes: dict[str, ChpRoute] = {}
        self._depth_counts: dict[int, int] = {}
        self._depths: tuple[int, ...] = ()  # depths in use, deepest first

    def __len__(self) -> int:
        return len(self._routes)

    def add(self, path: str, data: dict, now: float) -> ChpRoute:
        """Add or replace the route at C{path} (a replacement forgets the old keys, as
        CHP's does); its C{last_activity} is C{now}."""
        path = clean_path(path)
        data = dict(data)
        if self.host_routing and path != "/":
            data["host"] = path.split("/")[1]
        route = ChpRoute(path, data, now, self.https, self.counts.activity)
        if path not in self._routes:
            depth = len(_segments(path))
            self._depth_counts[depth] = self._depth_counts.get(depth, 0) + 1
            self._reorder()
        self._routes[path] = route
        return route

    def remove(self, path: str) -> bool:
        """Remove the route at C{path}; False if there was none."""
        path = clean_path(path)
        if self._routes.pop(path, None) is None:
            return False
        depth = len(_segments(path))
        left = self._depth_counts[depth] - 1
        if left:
            self._depth_counts[depth] = left
        else:
            del self._depth_counts[depth]
        self._reorder()
        return True

    def _reorder(self) -> None:
        self._depths = tuple(sorted(self._depth_counts, reverse=True))

    def get(self, path: str) -> ChpRoute | None:
        """The route whose path is exactly C{path} (cleaned)."""
        return self._routes.get(clean_path(path))

    def match(self, path: str) -> ChpRoute | None:
        """The route with the longest path that is a segment-wise prefix of the decoded
        request path C{path} (C{/HOST/...} under host routing), or None."""
        # Counted and (one in 64) timed inline, with one exit: no extra call per lookup.
        lookups = self.counts.lookups
        lookups.calls += 1
        started = perf_counter() if lookups.calls & SAMPLE_MASK == 1 else 0.0
        routes = self._routes
        stripped = path.strip("/")
        route = None
        if not stripped:
            route = routes.get("/")
        else:
            parts = stripped.split("/")
            count = len(parts)
            for depth in self._depths:
                if depth > count:
                    continue
                route = routes.get("/" + "/".join(parts[:depth]) if depth else "/")
                if route is not None:
                    break
        if started:
            lookups.timed.observe(perf_counter() - started)
        return route

    def table(self, inactive_since: float | None = None) -> dict:
        """The routes as the REST API returns them; with C{inactive_since}, only those
        whose last activity is older."""
        return {path: route.as_json() for path, route in self._routes.items()
                if inactive_since is None or route.last_activity < inactive_since}


def upstream_target(raw_uri: bytes, route: ChpRoute, target: Target, *,
                    include_prefix: bool, prepend_path: bool) -> bytes:
    """
    The request target sent to the route's target, CHP's way: without
    C{include_prefix} the route's path is cut from the front of the request's (as
    received, query included); with C{prepend_path} the target's own path is joined in
    front, the joined path's repeated slashes collapsed (the query is left alone).
    """
    url = raw_uri
    if not include_prefix and route.prefix_bytes:
        url = url[len(route.prefix_bytes):]
    if not prepend_path:
        return url if url.startswith(b"/") else b"/" + url
    path, question, query = url.partition(b"?")
    joined = b"/".join(part for part in (target.path, path) if part)
    while b"//" in joined:
        joined = joined.replace(b"//", b"/")
    if not joined.startswith(b"/"):
        joined = b"/" + joined
    return joined + question + query


def forwarded_for_chp(existing: dict, client: bytes, proto: bytes, host: bytes) -> list:
    """
    The C{X-Forwarded-*} headers CHP (http-proxy's C{xfwd}) sends, as (name, value)
    pairs, from the client's C{existing} ones ({lower-case name: value}): C{For},
    C{Port} and C{Proto} get this hop appended after a comma; C{Host} is set only when
    the client sent none.
    """
    port = b""
    if host:
        name, colon, maybe = host.rpartition(b":")
        port = maybe if colon and not maybe.endswith(b"]") and maybe.isdigit() else b""
    if not port:
        port = b"443" if proto in (b"https", b"wss") else b"80"

    def append(name: bytes, value: bytes) -> bytes:
        before = existing.get(name)
        return before + b"," + value if before else value

    pairs = [
        (b"X-Forwarded-For", append(b"x-forwarded-for", client)),
        (b"X-Forwarded-Port", append(b"x-forwarded-port", port)),
        (b"X-Forwarded-Proto", append(b"x-forwarded-proto", proto)),
    ]
    if not existing.get(b"x-forwarded-host"):
        pairs.append((b"X-Forwarded-Host", host))
    return pairs
