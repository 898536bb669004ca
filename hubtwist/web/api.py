"""
hubtwist's JSON API, under the own routes' root (the base URL, or C{_hubtwist/} under it
when an app owns the base URL; see L{hubtwist.router}). docs/api.md describes every route
and field.

  - C{api}, C{api/}: who and what this hubtwist is (the integration blueprint's shape).
  - C{api/health}: liveness, without authentication and without detail.
  - C{api/ready}: 200 when every C{autostart} server is RUNNING, else 503.
  - C{api/servers}, C{api/servers/NAME}: the apps' status; C{api/servers/NAME/logs}: their
    captured lines, as JSON or followed live as server-sent events.
  - C{api/services}: the blueprint's discovery shape.
  - C{POST api/servers/NAME/start|stop|restart}: an operator's controls.

Authentication is the gates' (L{hubtwist.hub.compose}): every route but C{api/health}
passes them, and they ask unsafe methods under cookie authentication for an XSRF token
(Hub mode) or refuse them from other origins (token mode). CORS, when configured
(C{cors_allow_origins}), is L{CorsFront}, in front of the gates: a browser's preflight
carries no credentials.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Iterable, Mapping, Sequence

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from hubtwist import __version__
from hubtwist.config.schema import Config
from hubtwist.supervise.logring import LogLine
from hubtwist.supervise.states import State

log = Logger(namespace="hubtwist.web")

# Lines an SSE follower holds while its client reads slower than the app writes; beyond
# that the oldest are dropped (and the client is told how many): memory per follower is
# bounded by this, the transport's buffer and one line (at most 16 KiB, LineSplitter).
FOLLOW_BACKLOG = 256
KEEPALIVE_INTERVAL = 15.0  # an SSE comment this often, so idle proxies keep the stream open
DETAIL_LOG_LINES = 50  # log lines in api/servers/NAME (api/servers/NAME/logs has them all)

_GET = (b"GET", b"HEAD")
_ALLOW_GET = b"GET, HEAD, OPTIONS"
_ALLOW_POST = b"POST, OPTIONS"
CONTROLS = ("start", "stop", "restart")


# -- pure helpers ----------------------------------------------------------------------


def iso(stamp: float | None) -> str | None:
    """A time (seconds since the epoch) as ISO 8601 UTC with microseconds, or C{None}."""
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1e6):06d}Z"


def log_line(line: LogLine) -> dict:
    """One captured line as the API shows it."""
    return {"time": iso(line.time), "stream": line.stream, "text": line.text}


def server_status(name: str, keeper, url: str, *, with_logs: bool = False) -> dict:
    """One app's status as the API shows it (see docs/api.md for every field)."""
    address = keeper.address
    config = keeper.config
    entry = config.launcher_entry
    last_exit = keeper.last_exit
    uptime = keeper.uptime
    status = {
        "name": name,
        "url": url,
        "state": keeper.state.value,
        "pid": keeper.pid,
        "endpoint": _endpoint(address),
        "address": address.describe() if address is not None else None,
        "uptime": round(uptime, 3) if uptime is not None else None,
        "restarts": keeper.restarts,
        "last_exit": None if last_exit is None else {
            "code": last_exit.code, "signal": last_exit.signal, "time": iso(last_exit.time),
            "uptime": round(last_exit.uptime, 3), "stopped": last_exit.stopped,
            "description": last_exit.describe(),
        },
        "last_activity": iso(keeper.last_activity),
        "external": config.is_external,
        "autostart": config.autostart,
        "launcher_entry": {
            "enabled": entry.enabled, "title": entry.title or name,
            "path_info": entry.path_info or f"{name}/", "category": entry.category,
            "new_browser_tab": config.new_browser_tab,
        },
    }
    if with_logs:
        status["logs"] = [log_line(line) for line in keeper.logs.tail(DETAIL_LOG_LINES)]
    return status


def _endpoint(address) -> dict | None:
    if address is None:
        return None
    if address.kind == "unix":
        return {"kind": "unix", "path": address.path}
    return {"kind": "tcp", "host": address.host, "port": address.port}


def readiness(keepers: Mapping[str, object]) -> tuple[bool, dict[str, str]]:
    """Ready when every C{autostart} server is RUNNING; the states of those that count."""
    states = {name: keeper.state.value for name, keeper in keepers.items()
              if keeper.config.autostart}
    return all(state == State.RUNNING.value for state in states.values()), states


def parse_tail(raw: str | None) -> int | None:
    """C{?tail=N}: a count of lines (C{None}: all). Raises ValueError with the reason."""
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise ValueError(f"tail must be a number of lines (0 or more), not {raw!r}")
    return int(raw)


def sse_event(number: int, line: LogLine) -> bytes:
    """One log line as a server-sent event; its C{id} lets a reconnecting client resume."""
    return b"id: %d\ndata: %s\n\n" % (number, json.dumps(log_line(line)).encode())


def cors_headers(origin: str, allowed: Sequence[str], *, preflight: bool) -> list[tuple[bytes, bytes]] | None:
    """
    The CORS headers for a request from C{origin}, or C{None} when that origin is not
    allowed. An origin listed by name is echoed and may send credentials (cookies, HTTP
    auth); C{*} lets any origin read without credentials — never both, as the Fetch
    standard forbids C{Access-Control-Allow-Credentials} with C{*}.
    """
    lowered = origin.lower()
    if lowered in (entry.lower() for entry in allowed if entry != "*"):
        headers = [(b"access-control-allow-origin", origin.encode("latin-1")),
                   (b"access-control-allow-credentials", b"true")]
    elif "*" in allowed:
        headers = [(b"access-control-allow-origin", b"*")]
    else:
        return None
    if preflight:
        headers += [
            (b"access-control-allow-methods", b"GET, HEAD, POST, OPTIONS"),
            (b"access-control-allow-headers",
             b"Authorization, Content-Type, X-XSRFToken, X-CSRFToken, X-Requested-With, "
             b"Last-Event-ID"),
            (b"access-control-max-age", b"600"),
        ]
    return headers


class FollowBuffer:
    """
    What one log follower holds while its client is paused: at most C{limit} events, the
    oldest dropped first and counted, so a client that stops reading costs bounded memory.
    """

    def __init__(self, limit: int = FOLLOW_BACKLOG) -> None:
        self._events: deque[bytes] = deque(maxlen=limit)
        self.dropped = 0

    def push(self, event: bytes) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)

    def drain(self) -> list[bytes]:
        """The held events, preceded by a C{dropped} event when some were lost."""
        events = list(self._events)
        self._events.clear()
        if self.dropped:
            events.insert(0, b"event: dropped\ndata: %s\n\n"
                          % json.dumps({"dropped": self.dropped}).encode())
            self.dropped = 0
        return events

    def __len__(self) -> int:
        return len(self._events)


# -- the log stream ------------------------------------------------------------------------


@implementer(IPushProducer)
class LogStream:
    """
    One client following one app's log (C{text/event-stream}). It is the request's
    producer: while the client's socket is backed up it is paused and lines wait in a
    L{FollowBuffer}. It ends when the client goes (or hubtwist stops: L{end}).
    """

    def __init__(self, request, ring, clock, streams: set) -> None:
        self._request = request
        self._ring = ring
        self._clock = clock
        self._streams = streams
        self._buffer = FollowBuffer()
        self._paused = False
        self._ended = False
        self._unfollow = None
        self._keepalive = None

    def start(self, after: int, tail: int | None) -> None:
        request = self._request
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx in front: do not buffer it
        backlog = self._ring.numbered(after)
        if tail is not None:
            backlog = backlog[-tail:] if tail else []
        request.write(b"retry: 2000\n\n" + b"".join(sse_event(n, line) for n, line in backlog))
        self._number = self._ring.total
        self._unfollow = self._ring.follow(self._line)
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(lambda _: self._stop())
        self._streams.add(self)
        self._keepalive = self._clock.callLater(KEEPALIVE_INTERVAL, self._ping)

    def _line(self, line: LogLine) -> None:
        if self._ended:
            return
        self._number += 1
        event = sse_event(self._number, line)
        if self._paused:
            self._buffer.push(event)
        else:
            self._request.write(event)

    def _ping(self) -> None:
        self._keepalive = None
        if not self._paused:
            self._request.write(b": keep-alive\n\n")
        self._keepalive = self._clock.callLater(KEEPALIVE_INTERVAL, self._ping)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        events = self._buffer.drain()
        if events and not self._ended:
            self._request.write(b"".join(events))

    def stopProducing(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._streams.discard(self)
        if self._unfollow is not None:
            self._unfollow()
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None

    def end(self) -> None:
        """Finish the stream from this side (hubtwist is stopping)."""
        if self._ended:
            return  # the client is gone already
        self._stop()
        self._request.unregisterProducer()
        self._request.finish()


# -- the API -------------------------------------------------------------------------------


class Api:
    """Renders C{api/...}; see the module docstring and docs/api.md."""

    def __init__(self, config: Config, keepers: Mapping[str, object]) -> None:
        self._config = config
        self._keepers = keepers
        self.started = time.time()
        self.auth = None  # the AuthPlan (hubtwist.app sets it): mode, Hub user, server name
        self.streams: set[LogStream] = set()
        self._clock = None

    def configure(self, *, clock, auth) -> None:
        """What the API learns from the running hubtwist: its reactor and L{AuthPlan}."""
        self._clock = clock
        self.auth = auth

    @property
    def clock(self):
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock

    def close(self) -> None:
        """End the open log streams (hubtwist is stopping)."""
        for stream in list(self.streams):
            stream.end()

    def url_of(self, name: str) -> str:
        return f"{self._config.base_url}{name}/"

    # -- dispatch ------------------------------------------------------------------------

    def render(self, request, rest: bytes):
        """C{rest} is the path below the own routes' root, starting with C{api}."""
        own_root = request.path[: len(request.path) - len(rest)].decode("latin-1")
        parts = [p for p in rest.decode("latin-1").split("/") if p][1:]
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        method = request.method
        if parts == []:
            return self._get(request, _ALLOW_GET, lambda: self._info(own_root))
        if parts == ["health"]:
            return self._get(request, _ALLOW_GET, lambda: {"status": "ok"})
        if parts == ["ready"]:
            return self._get(request, _ALLOW_GET, lambda: self._ready(request))
        if parts == ["servers"]:
            return self._get(request, _ALLOW_GET, lambda: {"servers": [
                server_status(name, keeper, self.url_of(name))
                for name, keeper in self._keepers.items()]})
        if parts == ["services"]:
            return self._get(request, _ALLOW_GET, self._services)
        if len(parts) >= 2 and parts[0] == "servers" and len(parts) <= 3:
            name = parts[1]
            keeper = self._keepers.get(name)
            action = parts[2] if len(parts) == 3 else None
            if action not in (None, "logs", *CONTROLS):
                return self._not_found(request)
            if keeper is None:
                return error(request, 404, "No such server",
                             f"No server is named {name!r}; the servers are: "
                             f"{', '.join(self._keepers) or 'none'}.")
            if action is None:
                return self._get(request, _ALLOW_GET, lambda: server_status(
                    name, keeper, self.url_of(name), with_logs=True))
            if action == "logs":
                if method in _GET and b"text/event-stream" in (request.getHeader(b"accept") or b""):
                    return self._follow(request, keeper)
                return self._get(request, _ALLOW_GET, lambda: self._logs(request, name, keeper))
            if method != b"POST":
                return self._wrong_method(request, _ALLOW_POST)
            return self._control(request, name, keeper, action)
        return self._not_found(request)

    def _get(self, request, allow: bytes, answer):
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"allow", allow)
            return b""
        if request.method not in _GET:
            return self._wrong_method(request, allow)
        try:
            value = answer()
        except _Refusal as refusal:
            return error(request, refusal.status, refusal.title, refusal.message)
        if isinstance(value, tuple):
            status, value = value
            request.setResponseCode(status)
        return _json(request, value)

    @staticmethod
    def _wrong_method(request, allow: bytes):
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"allow", allow)
            return b""
        request.setHeader(b"allow", allow)
        return error(request, 405, "Method not allowed",
                     f"{request.method.decode('latin-1')} is not allowed here; use "
                     f"{allow.decode()}.")

    @staticmethod
    def _not_found(request):
        return error(request, 404, "Not found",
                     f"hubtwist's API has no route {request.path.decode('latin-1')}; "
                     "see docs/api.md.")

    # -- answers -------------------------------------------------------------------------

    def _info(self, own_root: str) -> dict:
        auth = self.auth
        hub = auth.hub if auth is not None else None
        api = own_root + "api/"
        return {
            "status": "running",
            "name": "hubtwist",
            "version": __version__,
            "mode": auth.mode if auth is not None else "standalone",
            "user": (hub.user or None) if hub is not None else None,
            "server_name": hub.server_name if hub is not None else "",
            "service_prefix": hub.service_prefix if hub is not None else self._config.base_url,
            "base_url": self._config.base_url,
            "started": iso(self.started),
            "endpoints": {
                "api": api,
                "service": self._config.base_url,
                "launcher": own_root,
                "health": api + "health",
                "ready": api + "ready",
                "servers": api + "servers",
                "services": api + "services",
            },
        }

    def _ready(self, request):
        ready, states = readiness(self._keepers)
        return (200 if ready else 503), {"ready": ready, "servers": states}

    def _services(self) -> dict:
        services = {}
        for name, keeper in self._keepers.items():
            address = keeper.address
            port = keeper.config.port or None
            if address is not None and address.kind == "tcp":
                port = address.port
            services[name] = {
                "port": port,
                "status": keeper.state.value,
                "description": keeper.config.launcher_entry.title or name,
                "url": self.url_of(name),
            }
        return {"services": services}

    def _logs(self, request, name: str, keeper) -> dict:
        try:
            tail = parse_tail(_arg(request, b"tail"))
        except ValueError as problem:
            raise _Refusal(400, "Bad request", str(problem)) from None
        return {"name": name, "lines": [log_line(line) for line in keeper.logs.tail(tail)]}

    def _follow(self, request, keeper):
        try:
            tail = parse_tail(_arg(request, b"tail"))
        except ValueError as problem:
            return error(request, 400, "Bad request", str(problem))
        last = (request.getHeader(b"last-event-id") or b"").strip()
        after = int(last) if last.isdigit() else 0
        if request.method == b"HEAD":
            request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
            return b""
        LogStream(request, keeper.logs, self.clock, self.streams).start(after, tail)
        return NOT_DONE_YET

    def _control(self, request, name: str, keeper, action: str):
        if keeper.config.is_external:
            return error(request, 409, "Not supervised",
                         f"{name!r} is an external server (no command): hubtwist does not "
                         "run it, so it cannot start or stop it.")
        wait = (_arg(request, b"wait") or "true").lower() not in ("0", "false", "no")
        log.info("[{server}] {action} requested through the API", server=name, action=action)
        if action == "stop":
            done = keeper.stop()
        elif action == "start":
            done = keeper.start()
        else:
            done = keeper.restart()
        if not wait:
            done.addErrback(lambda failure: None)  # the supervisor logs why
            request.setResponseCode(202)
            return _json(request, server_status(name, keeper, self.url_of(name)))
        answered = []
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(status: int, failure=None) -> None:
            if answered:
                return
            answered.append(True)
            if limit.active():
                limit.cancel()
            if gone or request.finished:
                return
            body = server_status(name, keeper, self.url_of(name))
            if failure is not None:
                request.setResponseCode(status)
                body = {"status": status, "error": "Start failed",
                        "message": failure.getErrorMessage(), "server": body}
            elif status != 200:
                request.setResponseCode(status)
            request.write(_json(request, body))
            request.finish()

        # A start that takes longer than the app's own start timeout is answered with the
        # state it is in (202): the caller polls api/servers/NAME from there.
        limit = self.clock.callLater(keeper.config.timeout + 5, answer, 202)

        def failed(failure) -> None:
            if not failure.check(CancelledError):
                answer(503, failure)

        done.addCallbacks(lambda _: answer(200), failed)
        return NOT_DONE_YET


class _Refusal(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def _arg(request, name: bytes) -> str | None:
    values = (request.args or {}).get(name)
    return values[0].decode("utf-8", "replace") if values else None


def _json(request, value: object) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value).encode()


def error(request, status: int, title: str, message: str) -> bytes:
    """A JSON error answer, the same shape as L{hubtwist.proxy.errors.send_error}'s twin."""
    request.setResponseCode(status)
    request.setHeader(b"cache-control", b"no-store")
    return _json(request, {"status": status, "error": title, "message": message})


# -- CORS ----------------------------------------------------------------------------------


class CorsFront(Resource):
    """
    CORS for hubtwist's API (C{cors_allow_origins}), in front of the auth gate: a
    preflight (C{OPTIONS} with C{Access-Control-Request-Method}) carries no credentials, so
    it is answered here; other requests from an allowed origin get the headers and go on
    to the gate, so its refusals (401, 403) are readable by the calling page too. Paths
    outside the API (the apps') are passed on untouched: their CORS is theirs.
    """

    isLeaf = True

    def __init__(self, inner: Resource, api_root: bytes, origins: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        self._api_root = api_root
        self._origins = tuple(origins)

    def render(self, request):
        path = request.path
        root = self._api_root
        if not (path == root or path.startswith(root + b"/")):
            return self._inner.render(request)
        request.setHeader(b"vary", b"Origin")
        origin = request.getHeader(b"origin")
        if origin is None:
            return self._inner.render(request)
        preflight = (request.method == b"OPTIONS"
                     and request.getHeader(b"access-control-request-method") is not None)
        headers = cors_headers(origin.decode("latin-1"), self._origins, preflight=preflight)
        if preflight:
            if headers is None:
                return error(request, 403, "Origin not allowed",
                             f"{origin.decode('latin-1')} is not in cors_allow_origins.")
            for name, value in headers:
                request.setHeader(name, value)
            request.setResponseCode(204)
            return b""
        for name, value in headers or ():
            request.setHeader(name, value)
        return self._inner.render(request)
