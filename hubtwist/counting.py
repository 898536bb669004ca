"""
What hubtwist counts for its metrics, kept as plain ints and dicts.

The proxy counts on its hot path (the lean path serves a 1 KB request in well under
100 µs of CPU): a call into prometheus_client per request — a lock, a label lookup, a
float boxed into a C{Value} per series — would cost more than the counting itself. So
the proxy, the WebSocket bridge, the supervisors and the Hub client write into L{Traffic}
with dict lookups and integer additions, and hubtwist.web.metrics turns these into
Prometheus metric families when a scraper asks (a custom collector).

This module imports nothing of hubtwist: the proxy, hub and web packages may all use it.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["Histogram", "Traffic", "LATENCY_BOUNDS", "STARTUP_BOUNDS", "OWN_SERVER",
           "ChpCounts", "Sampled", "by_status", "FAST_BOUNDS", "SAMPLE_MASK",
           "server_label", "method_label"]

LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                  10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the request latency buckets (and the Hub API calls')."""

STARTUP_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
"""Upper bounds (seconds) of the app start-up duration buckets."""

OWN_SERVER = "_hubtwist"
"""The C{server} of requests no app answers: hubtwist's own pages, unknown paths, the
gates' logins and refusals (a name no server can have)."""

_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS",
                      b"TRACE", b"CONNECT", b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY",
                      b"MOVE", b"LOCK", b"UNLOCK", b"REPORT", b"SEARCH"})


def method_label(method: bytes) -> bytes:
    """C{method}, or C{OTHER} for a method nobody registered: clients choose methods, and
    every distinct one would otherwise be a new series (and a new dict key) forever."""
    return method if method in _METHODS else b"OTHER"


def server_label(name: str) -> str:
    """The C{server} of a route's keeper: its name, or C{proxy} for the C{/proxy/PORT/}
    targets (one series per port a client tries would grow without bound)."""
    return "proxy" if "/" in name else name


class Histogram:
    """Bucket counts (the last one is +Inf), sum and count; cumulated at scrape time."""

    __slots__ = ("bounds", "buckets", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus' buckets: (upper bound, observations at or below it), +Inf last."""
        total = 0
        out = []
        for bound, count in zip((*map(_bound, self.bounds), "+Inf"), self.buckets):
            total += count
            out.append((bound, total))
        return out


def _bound(value: float) -> str:
    return repr(float(value))


class _ServerTraffic:
    __slots__ = ("latency", "bytes_in", "bytes_out")

    def __init__(self) -> None:
        self.latency = Histogram(LATENCY_BOUNDS)
        self.bytes_in = 0
        self.bytes_out = 0


class Traffic:
    """
    Everything counted since start: requests by (server, method, status), their latency
    and body bytes by server, WebSockets opened and closed, app start-ups, Hub API calls;
    C{lean} (set by the app) tells how many requests the lean path answered.
    Only the owner's reactor thread writes; a scrape reads (also on that thread).
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, bytes, int], int] = {}
        self.servers: dict[str, _ServerTraffic] = {}
        self.websockets_opened: dict[str, int] = {}
        self.websockets_closed: dict[str, int] = {}
        self.startups: dict[str, Histogram] = {}
        self.hub_calls: dict[str, Histogram] = {}
        self.hub_errors: dict[str, int] = {}
        # The lean path's factory, when the listeners have one: its C{served} counts the
        # requests it answered (no second counter on the hot path).
        self.lean = None

    def request(self, server: str, method: bytes, code: int, seconds: float, bytes_in: int,
                bytes_out: int) -> None:
        """One finished request (the hot path: two dict lookups and a few additions)."""
        key = (server, method, code)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        traffic = self.servers.get(server)
        if traffic is None:
            traffic = self.servers[server] = _ServerTraffic()
        traffic.latency.observe(seconds)
        traffic.bytes_in += bytes_in
        traffic.bytes_out += bytes_out

    def websocket_opened(self, server: str) -> None:
        self.websockets_opened[server] = self.websockets_opened.get(server, 0) + 1

    def websocket_closed(self, server: str) -> None:
        self.websockets_closed[server] = self.websockets_closed.get(server, 0) + 1

    def startup(self, server: str, seconds: float) -> None:
        """An app became ready C{seconds} after it was started."""
        histogram = self.startups.get(server)
        if histogram is None:
            histogram = self.startups[server] = Histogram(STARTUP_BOUNDS)
        histogram.observe(seconds)

    def hub_call(self, call: str, seconds: float, failed: bool) -> None:
        """One attempt of a Hub API call (C{failed}: no answer, or a 5xx)."""
        histogram = self.hub_calls.get(call)
        if histogram is None:
            histogram = self.hub_calls[call] = Histogram(LATENCY_BOUNDS)
        histogram.observe(seconds)
        if failed:
            self.hub_errors[call] = self.hub_errors.get(call, 0) + 1


# -- hubtwist chp: configurable-http-proxy's metrics ----------------------------------------

SAMPLE_MASK = 63
"""L{Sampled} times the calls whose number C{& SAMPLE_MASK} is 1: the first, then one in 64."""

FAST_BOUNDS = tuple(1e-7 * 10 ** (step / 8) for step in range(65))
"""Upper bounds (seconds) of L{Sampled}'s buckets: 0.1 µs to 10 s, 8 per decade (each
about 1.33 times the last), so a quantile read from them is within a third of the truth."""


class Sampled:
    """
    How often something fast happened (C{calls}, exact) and how long it took, measured on
    one call in 64 (C{timed}): timing every route lookup would cost more than the lookup.
    The caller counts and times inline (see L{hubtwist.front.routes.RouteTable.match})::

        sampled.calls += 1
        if sampled.calls & SAMPLE_MASK == 1:
            ... time this call, then sampled.timed.observe(seconds)
    """

    __slots__ = ("calls", "timed")

    def __init__(self) -> None:
        self.calls = 0
        self.timed = Histogram(FAST_BOUNDS)

    def total(self) -> float:
        """The estimated time of all C{calls}: their number times the timed ones' mean."""
        timed = self.timed
        return timed.sum / timed.count * self.calls if timed.count else 0.0

    def quantile(self, q: float) -> float:
        """The estimated C{q}-quantile (0 to 1) of the timed calls' durations (NaN if
        none was timed): interpolated inside the bucket that holds it."""
        timed = self.timed
        if not timed.count:
            return float("nan")
        rank = q * timed.count
        below = 0
        lower = 0.0
        for index, count in enumerate(timed.buckets):
            if index == len(timed.bounds):
                return timed.bounds[-1]  # beyond the last bound: no upper edge to use
            upper = timed.bounds[index]
            if count and below + count >= rank:
                return lower + (upper - lower) * max(rank - below, 0) / count
            below += count
            lower = upper
        return timed.bounds[-1]


class ChpCounts:
    """
    What C{hubtwist chp} counts for configurable-http-proxy's metrics (hubtwist.front.
    metrics renders them), with plain ints: C{proxy} and C{api} are indexed by status
    code (a response's status has three digits), so counting one is a list increment.

      - C{web}, C{ws}: requests the ordinary path took (those the lean path served are
        its factory's C{served}), WebSocket handshakes;
      - C{proxy[code]}: the targets' response statuses and the proxy's own errors (404,
        500, 503), as CHP's C{requests_proxy};
      - C{api[code]}: REST API answers; C{route_get} (whole table), C{route_add},
        C{route_delete}: the API's route calls as CHP counts them;
      - C{lookups}, C{activity}: route lookups and C{last_activity} stamps (L{Sampled}).
    """

    __slots__ = ("web", "ws", "proxy", "api", "route_get", "route_add", "route_delete",
                 "lookups", "activity")

    def __init__(self) -> None:
        self.web = 0
        self.ws = 0
        self.proxy = [0] * 1000
        self.api = [0] * 1000
        self.route_get = 0
        self.route_add = 0
        self.route_delete = 0
        self.lookups = Sampled()
        self.activity = Sampled()


def by_status(counts: list[int]) -> list[tuple[str, int]]:
    """The statuses seen (as label values) and their counts, from a list by status code."""
    return [(str(code), count) for code, count in enumerate(counts) if count]
