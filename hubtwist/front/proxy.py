"""
The public side of C{hubtwist chp}: every request is matched against the route table and
proxied to its target with configurable-http-proxy's rules, through hubtwist's engine
(L{UpstreamPool} for HTTP, L{WebSocketBridge} for WebSockets).

CHP's behaviour kept here (see docs/front-proxy.md for the differences):
  - C{GET /_chp_healthz} (exactly) answers C{{"status": "OK"}}.
  - No route: 404; a target that fails (refused, reset, timed out): 503; a path that does
    not decode (C{/%}): 500. With C{--error-target URL} the page is C{GET URL/CODE?url=...}
    (its C{Content-Type} and C{Content-Encoding} kept); with C{--error-path DIR},
    C{DIR/CODE.html} or C{DIR/error.html}; else a short HTML page. WebSocket handshakes
    get the bare status.
  - C{last_activity} of the route is stamped when a response below 300 has been sent in
    full, when a request with a body was sent on, and for each WebSocket message (either
    way); errors never count (JupyterHub's idle culler reads it).
  - C{X-Forwarded-For/Port/Proto} extended, C{X-Forwarded-Host} set if absent (unless
    C{--no-x-forward}); the client's C{Host} passed on (C{--change-origin}: the target's);
    C{--custom-header}s added; C{Location} rewritten only with C{--auto-rewrite} /
    C{--protocol-rewrite}, and only when it points at the target itself.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import attrs
from twisted.internet.defer import CancelledError, TimeoutError as DeferredTimeout
from twisted.logger import Logger
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from hubtwist.front.routes import (
    ChpRoute, RouteTable, Target, forwarded_for_chp, upstream_target,
)
from hubtwist.proxy.forward import is_upgrade
from hubtwist.proxy.http1 import strip_hop_by_hop
from hubtwist.proxy.look import esc, page
from hubtwist.proxy.twisted_private import request_disconnected
from hubtwist.proxy.upstream import BackendLimits, UpstreamPool

__all__ = ["Front", "FrontOptions", "FrontResource", "chp_headers", "chp_location", "decode_path"]

log = Logger(namespace="hubtwist.front")

# CHP keeps no per-target limit; these only bound a runaway (queue) and are far above
# what one user's server sees.
FRONT_LIMITS = BackendLimits(max_connections=1024, max_connecting=64, queue_timeout=30.0)
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_REDIRECTS = frozenset({201, 301, 302, 307, 308})


@attrs.define
class FrontOptions:
    """The proxy behaviour the command line sets (CHP's option names in the comments)."""

    include_prefix: bool = True  # --no-include-prefix
    prepend_path: bool = True  # --no-prepend-path
    xfwd: bool = True  # --no-x-forward
    change_origin: bool = False  # --change-origin
    auto_rewrite: bool = False  # --auto-rewrite
    protocol_rewrite: str = ""  # --protocol-rewrite
    custom_headers: tuple = ()  # --custom-header, (name, value) byte pairs
    error_target: str = ""  # --error-target, with a trailing slash
    error_path: str = ""  # --error-path
    upstream_timeout: float | None = None  # --proxy-timeout / --timeout, seconds


def decode_path(raw: bytes) -> str:
    """The percent-decoded path, as JavaScript's C{decodeURIComponent} decodes it.

    @raise ValueError: a C{%} not followed by two hex digits, or bytes that are not UTF-8
        (CHP answers 500 to those)."""
    if _BAD_ESCAPE.search(raw):
        raise ValueError("bad percent escape")
    return unquote(raw.decode("utf-8"), errors="strict")


def chp_location(location: bytes, code: int, target: Target, request_host: bytes, *,
                 auto_rewrite: bool, protocol: str) -> bytes:
    """A redirect's C{Location} as CHP (http-proxy) rewrites it: only for 201/301/302/
    307/308, only when it points at the target's own host; C{auto_rewrite} puts the
    client's C{Host} there, C{protocol} the scheme."""
    if code not in _REDIRECTS or not (auto_rewrite or protocol):
        return location
    try:
        parts = urlsplit(location.decode("latin-1"))
    except ValueError:
        return location
    if not parts.scheme or parts.netloc.encode("idna").lower() != _default_port_less(target):
        return location
    netloc = request_host.decode("latin-1") if auto_rewrite and request_host else parts.netloc
    scheme = protocol or parts.scheme
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment)).encode("latin-1")


def _default_port_less(target: Target) -> bytes:
    host = target.host.lower()
    default = b":443" if target.secure else b":80"
    return host[: -len(default)] if host.endswith(default) else host


def chp_headers(incoming, client: bytes, secure: bool, upgrade: bool, target: Target,
                options: FrontOptions) -> list:
    """
    The request headers CHP sends to C{target}, as (name, value) pairs, from the client's
    C{incoming} ones ((name, [values]) pairs): hop-by-hop ones dropped, C{Host} kept (the
    target's with C{change_origin}, or when the client sent none), C{X-Forwarded-*}
    extended with this hop (L{forwarded_for_chp}), the C{custom_headers} put in place of
    the client's of the same name. Shared by the ordinary path and the lean one
    (L{hubtwist.front.lean}).
    """
    kept = strip_hop_by_hop(incoming)
    host = b""
    existing: dict[bytes, bytes] = {}
    pairs = []
    for name, values in kept:
        lower = name.lower()
        if lower == b"host":
            host = values[0]
            if options.change_origin:
                continue
        if options.xfwd and lower.startswith(b"x-forwarded-"):
            existing[lower] = b",".join(values)
            continue
        pairs.extend((name, value) for value in values)
    if options.change_origin or not host:
        pairs.append((b"Host", target.host))
    if options.xfwd:
        proto = (b"wss" if secure else b"ws") if upgrade else (b"https" if secure else b"http")
        forwarded = forwarded_for_chp(existing, client, proto, host)
        names = {name.lower() for name, _ in forwarded}
        pairs += [(name, value) for name, value in existing.items() if name not in names]
        pairs += forwarded
    if options.custom_headers:
        custom = {name.lower() for name, _ in options.custom_headers}
        pairs = [pair for pair in pairs if pair[0].lower() not in custom]
        pairs += options.custom_headers
    return pairs


class _Logs:
    """What the WebSocket bridge reads of an app's log ring: nothing here."""

    def tail(self, _count=None) -> list:
        return []


class _BridgeKeeper:
    """The route as the WebSocket bridge sees its app. The bridge stamps activity once as
    the handshake starts and then per message; CHP counts messages only (a handshake to a
    target that is down is no activity), so the first stamp is skipped."""

    __slots__ = ("name", "address", "logs", "_route", "_clock", "_armed")

    def __init__(self, route: ChpRoute, clock) -> None:
        self.name = route.path
        self.address = route.target.address
        self.logs = _Logs()
        self._route = route
        self._clock = clock
        self._armed = False

    def touch(self) -> None:
        if self._armed:
            self._route.touch(self._clock())
        self._armed = True


@attrs.frozen
class _BridgeConfig:
    raw_socket_proxy: bool = False
    websocket_ping_interval: float = 0.0  # CHP sends no pings
    websocket_max_message_size: int = 0  # nor limits messages
    absolute_url: bool = True  # Set-Cookie paths are left alone
    request_timeout: float = 30.0  # for the target's answer to the handshake


_BRIDGE_CONFIG = _BridgeConfig()


class _BridgeRoute:
    __slots__ = ("keeper", "prefix", "config")

    def __init__(self, route: ChpRoute, clock) -> None:
        self.keeper = _BridgeKeeper(route, clock)
        self.prefix = route.prefix_bytes + b"/"
        self.config = _BRIDGE_CONFIG

    def counts_as_activity(self, _target: bytes) -> bool:
        return True


class Front:
    """
    Proxies requests along the L{RouteTable}. C{pool} and C{bridge} are hubtwist's
    L{UpstreamPool} and L{WebSocketBridge}; C{clock()} is the time in epoch seconds.
    """

    def __init__(self, reactor, table: RouteTable, options: FrontOptions, pool: UpstreamPool,
                 bridge, clock) -> None:
        self.reactor = reactor
        self.table = table
        self.options = options
        self.pool = pool
        self.bridge = bridge
        self.clock = clock
        self.counts = table.counts  # for the metrics (hubtwist.front.metrics)
        self.error_target: Target | None = None
        if options.error_target:
            from hubtwist.front.routes import parse_target
            self.error_target = parse_target(options.error_target, table.https)

    # -- one request ---------------------------------------------------------------------

    def handle(self, request) -> object:
        """Serve C{request}; returns what twisted.web's C{render} returns."""
        request.defaultContentType = None
        uri = request.uri
        if uri == b"/_chp_healthz":
            body = b'{"status":"OK"}'
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"content-length", b"%d" % len(body))
            return body
        upgrade = is_upgrade(request)
        if upgrade:
            self.counts.ws += 1
        else:
            self.counts.web += 1  # (those the lean path serves are counted there)
        try:
            path = decode_path(uri.partition(b"?")[0])
        except (ValueError, UnicodeDecodeError):
            return self.error(request, 500, upgrade)
        if self.table.host_routing:
            host = (request.getHeader(b"host") or b"").split(b":")[0].decode("latin-1")
            path = "/" + host + path
        route = self.table.match(path)
        if route is None:
            return self.error(request, 404, upgrade)
        target = route.target
        if target is None:
            log.error("503 {method} {uri}: {problem}", method=request.method.decode("latin-1"),
                      uri=uri.decode("latin-1"), problem=route.problem)
            return self.error(request, 503, upgrade)
        options = self.options
        sent = upstream_target(uri, route, target, include_prefix=options.include_prefix,
                               prepend_path=options.prepend_path)
        headers = self.headers_for(request, target, upgrade)
        if upgrade:
            bridged = Headers()
            for name, value in headers:
                bridged.addRawHeader(name, value)
            self.bridge.bridge(request, _BridgeRoute(route, self.clock), target.address, sent,
                               bridged)
            return NOT_DONE_YET
        _Exchange(self, request, route, target, sent, headers).start()
        return NOT_DONE_YET

    def headers_for(self, request, target: Target, upgrade: bool) -> list:
        """The request headers for the target, as (name, value) pairs."""
        client = getattr(request.getClientAddress(), "host", "127.0.0.1").encode()
        return chp_headers(request.requestHeaders.getAllRawHeaders(), client,
                           request.isSecure(), upgrade, target, self.options)

    # -- errors ----------------------------------------------------------------------------

    def error(self, request, code: int, upgrade: bool = False) -> object:
        """Answer C{request} with CHP's error C{code} (see the module docstring)."""
        self.counts.proxy[code] += 1  # CHP counts an error as it handles it, answered or not
        if request.finished or request_disconnected(request):
            return NOT_DONE_YET
        if code != 404:
            log.error("{code} {method} {uri}", code=code, method=request.method.decode("latin-1"),
                      uri=request.uri.decode("latin-1"))
        if upgrade:
            request.setResponseCode(code)
            request.setHeader(b"connection", b"close")
            request.setHeader(b"content-length", b"0")
            _finish(request, b"")
            return NOT_DONE_YET
        if self.error_target is not None:
            self._error_from_target(request, code)
            return NOT_DONE_YET
        if self.options.error_path:
            for name in (f"{code}.html", "error.html"):
                file = os.path.join(self.options.error_path, name)
                try:
                    with open(file, "rb") as stream:
                        body = stream.read()
                except OSError:
                    continue
                _send(request, code, b"text/html", body)
                return NOT_DONE_YET
            log.error("No error page {code}.html or error.html in {path}", code=code,
                      path=self.options.error_path)
        _send_default(request, code)
        return NOT_DONE_YET

    def _error_from_target(self, request, code: int) -> None:
        target = self.error_target
        query = urlencode({"url": request.uri.decode("latin-1")}).encode("latin-1")
        path = target.path + (b"" if target.path.endswith(b"/") else b"/") + b"%d" % code
        headers = [(b"Host", target.host)]
        sending = self.pool.request(target.address, b"GET", path + b"?" + query, headers, None,
                                    FRONT_LIMITS)
        sending.addTimeout(10, self.reactor)

        def answered(response) -> None:
            chunks: list[bytes] = []

            def done(failure) -> None:
                if failure is not None:
                    _send_default(request, code)
                    return
                kept = [(name, value) for name, value in response.headers
                        if name.lower() in (b"content-type", b"content-encoding")]
                _send(request, code, None, b"".join(chunks), kept)

            response.deliver(chunks.append, done)

        def failed(failure) -> None:
            log.error("Failed to get the custom error page: {why}", why=failure.getErrorMessage())
            _send_default(request, code)

        sending.addCallbacks(answered, failed)


def _finish(request, body: bytes) -> None:
    if request.finished or request_disconnected(request):
        return
    if body:
        request.write(body)
    request.finish()


def _send(request, code: int, content_type: bytes | None, body: bytes, headers=()) -> None:
    if request.finished or request_disconnected(request) or request.startedWriting:
        if not request.finished and not request_disconnected(request):
            request.loseConnection()
        return
    request.setResponseCode(code)
    if content_type is not None:
        request.setHeader(b"content-type", content_type)
    for name, value in headers:
        request.setHeader(name, value)
    request.setHeader(b"content-length", b"%d" % len(body))
    _finish(request, b"" if request.method == b"HEAD" else body)


def _send_default(request, code: int) -> None:
    phrase = RESPONSES.get(code, b"Error").decode("latin-1")
    detail = {404: "Nothing is routed at this address.",
              503: "The server behind this address is not answering. It may be starting "
                   "or stopped; try again in a moment.",
              500: "The proxy could not handle this request."}.get(code, "")
    body = page(f"{code}: {phrase}",
                f'<main class="failed"><p class="status">{code}: {esc(phrase)}</p>'
                f'<h1>{esc(phrase)}</h1><p class="detail">{esc(detail)}</p></main>')
    _send(request, code, b"text/html; charset=utf-8", body)


class _Exchange:
    """One proxied HTTP request: to the target through the pool, and the answer back."""

    __slots__ = ("front", "request", "route", "target", "sent", "headers", "pending", "flow",
                 "client_gone", "code")

    def __init__(self, front: Front, request, route: ChpRoute, target: Target, sent: bytes,
                 headers: list) -> None:
        self.front = front
        self.request = request
        self.route = route
        self.target = target
        self.sent = sent
        self.headers = headers
        self.pending = None
        self.flow = None
        self.client_gone = False
        self.code = 0
        request.notifyFinish().addErrback(self._client_lost)

    def _client_lost(self, _failure) -> None:
        self.client_gone = True
        if self.pending is not None:
            self.pending.cancel()
        if self.flow is not None:
            self.flow.stopProducing()

    def start(self) -> None:
        request = self.request
        body = request.body
        if body.length == 0:
            body = None
        front = self.front
        sending = front.pool.request(self.target.address, request.method, self.sent,
                                     self.headers, body, FRONT_LIMITS)
        timeout = front.options.upstream_timeout
        if timeout:
            sending.addTimeout(timeout, front.reactor)
        self.pending = sending
        sending.addCallbacks(self._response, self._failed)

    def _failed(self, failure) -> None:
        self.pending = None
        if self.client_gone:
            return
        if not failure.check(CancelledError, DeferredTimeout):
            log.debug("{uri} -> {target}: {why}", uri=self.request.uri.decode("latin-1"),
                      target=self.route.data.get("target"), why=failure.getErrorMessage())
        self.front.error(self.request, 503)

    def _response(self, response) -> None:
        self.pending = None
        request = self.request
        if self.client_gone:
            response.deliver(_ignore, _ignore).stopProducing()
            return
        front = self.front
        if request.body is not None and request.body.length != 0:
            self.route.touch(front.clock())  # the upload went through
        code = self.code = response.code
        front.counts.proxy[code] += 1
        options = front.options
        request.setResponseCode(code, response.phrase)
        out = request.responseHeaders
        out.removeHeader(b"server")
        out.removeHeader(b"date")
        rewrite = options.auto_rewrite or options.protocol_rewrite
        for name, value in response.headers:
            if rewrite and name.lower() == b"location":
                value = chp_location(value, code, self.target, request.getHeader(b"host") or b"",
                                     auto_rewrite=options.auto_rewrite,
                                     protocol=options.protocol_rewrite)
            out.addRawHeader(name, value)
        if response.length is not None and request.method != b"HEAD":
            out.setRawHeaders(b"content-length", [b"%d" % response.length])
        client = request.channel.transport
        flow = response.deliver(request.write, self._body_done, client, client.abortConnection)
        if request.finished or self.client_gone:
            return
        self.flow = flow
        if not request.startedWriting:
            request.write(b"")  # the head now: the client sees the response start
        request.registerProducer(flow, True)

    def _body_done(self, failure) -> None:
        request = self.request
        self.flow = None
        if self.client_gone or request.finished:
            return
        request.unregisterProducer()
        if failure is None:
            if self.code < 300:
                self.route.touch(self.front.clock())
            request.finish()
        else:
            request.loseConnection()  # the target died mid-response: show the truncation


def _ignore(*_args) -> None:
    pass


class FrontResource(Resource):
    """The root resource of the public site: everything goes to L{Front.handle}."""

    isLeaf = True

    def __init__(self, front: Front) -> None:
        super().__init__()
        self.front = front

    def render(self, request):
        return self.front.handle(request)
