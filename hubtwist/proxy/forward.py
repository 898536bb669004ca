"""
The HTTP reverse proxy: one request from the client, streamed to the app over a pooled
keep-alive connection (TCP or a unix socket), the response streamed back with backpressure.

A L{Route} says where a request goes (a supervised app, an external one, or a
C{/proxy/PORT/} target) and how its URL and headers are rewritten; L{Forwarder.forward}
does the exchange, through the lean keep-alive client of L{hubtwist.proxy.upstream}.
Requests come from L{hubtwist.proxy.early.StreamingSite}, whose C{request.body} streams
the upload as it arrives.
"""

from __future__ import annotations

import re

import attrs
from twisted.internet.defer import CancelledError, TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from hubtwist.config.jsp import call_for_server
from hubtwist.config.kinds import StrDict, load_callable
from hubtwist.counting import server_label
from hubtwist.config.schema import ServerConfig
from hubtwist.config.templates import expand, template_values
from hubtwist.proxy.errors import send_error
from hubtwist.proxy.progress import PROGRESS_GRACE, send_progress_page, wants_progress_page
from hubtwist.proxy.rewritable import ResponseHeaders, RewritableResponse, apply_rewriters
from hubtwist.proxy.http1 import strip_hop_by_hop
from hubtwist.proxy.urlrewrite import UrlRewriter, body_kind
from hubtwist.proxy.upstream import (
    DEFAULT_LIMITS, BackendBusy, BackendLimits, UpstreamError, UpstreamPool, UpstreamResponse,
)
from hubtwist.proxy.rewrite import (
    backend_path, forwarded_headers, rewrite_cookie_path, rewrite_location,
)
from hubtwist.supervise import BackendAddress, ServerUnavailable, State

log = Logger(namespace="hubtwist.proxy")

IDENTITY_HEADERS = frozenset({b"x-forwarded-user", b"x-hubtwist-user", b"x-cdsdashboards-jh-user"})
"""The headers that tell an app who is calling (set by the Hub gate with
C{forward_user_info}). Whatever a client sends under these names, in any spelling, never
reaches an app: see L{Forwarder.headers_for}."""

_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
              b"x-forwarded-port", b"x-forwarded-prefix")


def cgi_name(name: bytes) -> bytes:
    """The name a CGI/WSGI server gives header C{name} (C{HTTP_X_FORWARDED_USER} for both
    C{X-Forwarded-User} and C{X_Forwarded_User}), as a lower-case header name: two headers
    with the same C{cgi_name} are the same header to such an app."""
    return name.lower().replace(b"_", b"-")


@attrs.define
class Route:
    """
    Where a proxied request goes: C{keeper} (a Supervisor or ExternalServer) behind the
    public C{prefix} (bytes, with trailing slash), with its server options pre-digested.
    """

    keeper: object
    prefix: bytes
    config: ServerConfig
    public_base: str
    mappath: object = None
    exclude: re.Pattern | None = None
    rewriters: tuple = ()
    limits: BackendLimits = DEFAULT_LIMITS

    @classmethod
    def for_server(cls, keeper, prefix: bytes, config: ServerConfig, public_base: str) -> "Route":
        mappath = config.mappath
        if isinstance(mappath, str):
            mappath = load_callable(mappath)
        exclude = None
        if config.exclude_last_activity_patterns:
            exclude = re.compile("|".join(f"(?:{p})" for p in config.exclude_last_activity_patterns))
        # import paths (TOML) or the functions themselves (a Python configuration)
        rewriters = tuple(load_callable(item) if isinstance(item, str) else item
                          for item in config.rewrite_response)
        limits = BackendLimits(config.max_connections, config.max_connecting,
                               config.queue_timeout)
        return cls(keeper, prefix, config, public_base, mappath or None, exclude, rewriters,
                   limits)

    def counts_as_activity(self, target: bytes) -> bool:
        if not self.config.update_last_activity:
            return False
        return self.exclude is None or not self.exclude.search(target.decode("latin-1"))


class Relaying:
    """
    What L{_Exchange} and the lean path's exchange share about the app's answer. Subclasses
    have C{request} (what error pages are written to), C{route}, C{pending}, C{flow},
    C{client_gone}, C{timed_out}, C{delivering} (the body was handed to C{deliver}) and
    C{_relay(response)}.
    """

    __slots__ = ()

    def abandon(self, _failure=None) -> None:
        """The client went away: stop waiting for the app, and drop its answer."""
        self.client_gone = True
        if self.pending is not None:
            self.pending.cancel()
        if self.flow is not None:
            self.flow.stopProducing()

    def _timeout_cancelled(self, result, timeout):
        # A cancelled request fails like any other; remember why it was cancelled.
        self.timed_out = True
        return result

    def _relay_failed(self, failure) -> None:
        """A bug while relaying the response (not the app's failure): log it, drop the
        app's connection, answer 502 (or end the response if it has started)."""
        log.failure("Error while relaying the response of {server}", failure,
                    server=self.route.keeper.name)
        if self.flow is not None:
            self.flow.stopProducing()
            self.flow = None
        if not self.client_gone:
            send_error(self.request, 502, "Bad gateway",
                       f"hubtwist could not relay the answer of {self.route.keeper.name!r}.")

    def _response(self, response: UpstreamResponse) -> None:
        self.pending = None
        if self.client_gone:
            response.deliver(_ignore, _ignore).stopProducing()
            return
        try:
            self._relay(response)
        except Exception:
            failure = Failure()
            if not self.delivering:  # the app's connection is still ours to drop
                response.deliver(_ignore, _ignore).stopProducing()
            self._relay_failed(failure)


class _Exchange(Relaying):
    """One proxied request: waiting for the app, the upstream request, the relay."""

    __slots__ = ("forwarder", "request", "route", "client_gone", "pending", "flow", "target",
                 "timed_out", "delivering", "grace", "urls")

    def __init__(self, forwarder: "Forwarder", request, route: Route) -> None:
        self.forwarder = forwarder
        self.request = request
        self.route = route
        self.client_gone = False
        self.pending = None
        self.flow = None  # the response body's producer, once it streams
        self.target = b""
        self.timed_out = False
        self.delivering = False  # the response body was handed to deliver()
        self.grace = None  # a page view's wait before it gets the progress page
        self.urls: UrlRewriter | None = None  # rewrite_urls, for this response
        request.notifyFinish().addErrback(self.abandon)

    # -- the app ---------------------------------------------------------------------------

    def start(self) -> None:
        keeper = self.route.keeper
        if keeper.state is State.RUNNING:
            self.send(keeper.address)
            return
        keeper.note_origin_host(self.request.getHeader(b"host"))  # {origin_host}
        waiting = keeper.ensure_running()
        if wants_progress_page(self.request):
            # A page view: the progress page if the app is not there within the grace.
            self.grace = self.forwarder.reactor.callLater(PROGRESS_GRACE, self._show_progress)
        else:
            waiting.addTimeout(self.route.config.timeout + 1, self.forwarder.reactor)
        self.pending = waiting
        waiting.addCallbacks(self._app_ready, self._app_unavailable)

    def _show_progress(self) -> None:
        self.grace = None
        waiting, self.pending = self.pending, None
        if not self.client_gone:
            send_progress_page(self.request, self.route.keeper.name, self.route.keeper,
                               self.forwarder.own_root.decode("latin-1"))
        waiting.cancel()  # the start goes on; this request just no longer waits for it

    def _end_grace(self) -> None:
        if self.grace is not None and self.grace.active():
            self.grace.cancel()
        self.grace = None

    def _app_ready(self, address: BackendAddress) -> None:
        self.pending = None
        self._end_grace()
        if not self.client_gone:
            self.send(address)

    def _app_unavailable(self, failure) -> None:
        self.pending = None
        page_view = self.grace is not None
        self._end_grace()
        if self.client_gone or self.request.finished:
            return  # gone, or given the progress page (which follows the start itself)
        keeper = self.route.keeper
        if page_view and failure.check(ServerUnavailable):
            send_progress_page(self.request, keeper.name, keeper,
                               self.forwarder.own_root.decode("latin-1"),
                               reason=failure.value.reason)
            return
        if failure.check(ServerUnavailable):
            error = failure.value
            send_error(self.request, 503, "App unavailable",
                       f"The app {error.name!r} {error.reason}. Check its log below and its "
                       "configuration; hubtwist keeps the last lines of its output.",
                       logs=error.logs, retry_after=error.retry_after or 5)
        elif failure.check(CancelledError, DeferredTimeout):
            send_error(self.request, 503, "App still starting",
                       f"The app {keeper.name!r} did not become ready within "
                       f"{self.route.config.timeout:g} s. Reload in a moment.",
                       logs=keeper.logs.tail(30), retry_after=2)
        else:
            log.failure("Unexpected error while starting {server}", failure, server=keeper.name)
            send_error(self.request, 500, "Internal error", "hubtwist failed to start the app.")

    # -- the upstream request --------------------------------------------------------------

    def send(self, address: BackendAddress) -> None:
        request, route = self.request, self.route
        config = route.config
        try:
            self.target = backend_path(request.uri, route.prefix, config.absolute_url,
                                       route.mappath)
            headers = self.forwarder.upstream_headers(request, route, address)
        except Exception:  # a mappath or request_headers_override function failed
            log.failure("Error while preparing a request for {server}", server=route.keeper.name)
            send_error(request, 500, "Internal error",
                       f"hubtwist could not prepare the request for {route.keeper.name!r}.")
            return
        if is_upgrade(request):
            self.forwarder.upgrades.bridge(request, route, address, self.target,
                                           _headers_of(headers))
            return
        body = request.body
        if body.length == 0:
            body = None
        sending = self.forwarder.upstream.request(address, request.method, self.target, headers,
                                                  body, route.limits)
        if config.request_timeout:
            sending.addTimeout(config.request_timeout, self.forwarder.reactor,
                               onTimeoutCancel=self._timeout_cancelled)
        self.pending = sending
        sending.addCallbacks(self._response, self._upstream_failed, errbackArgs=(address,))

    def _upstream_failed(self, failure, address: BackendAddress) -> None:
        self.pending = None
        if self.client_gone:
            return
        send_upstream_error(self.request, failure, self.route, address, self.timed_out)

    def _relay(self, response: UpstreamResponse) -> None:
        request, route = self.request, self.route
        if route.counts_as_activity(self.target):
            route.keeper.touch()
        headers = mapped_headers(request, route, response.headers)
        if route.rewriters:
            self._buffer_and_rewrite(response, headers)
            return
        request.setResponseCode(response.code, response.phrase)
        request.from_app = True  # for the access log: the app answered, not hubtwist
        out = request.responseHeaders
        out.removeHeader(b"server")
        out.removeHeader(b"date")
        for name, value in headers:
            out.addRawHeader(name, value)
        write = request.write
        if route.config.rewrite_urls:
            self.urls = url_rewriter(route, response.code, headers)
        if self.urls is not None:
            # The rewritten body's length is known only at its end: sent chunked.
            urls = self.urls
            write = lambda data: request.write(urls.feed(data))  # noqa: E731
        elif response.length is not None and request.method != b"HEAD":
            out.setRawHeaders(b"content-length", [b"%d" % response.length])
        self.delivering = True
        client = request.channel.transport
        flow = response.deliver(write, self.body_done, client, client.abortConnection)
        if request.finished or self.client_gone:
            return  # all delivered already (its connection may serve another request now)
        self.flow = flow
        if not request.startedWriting:
            # No body yet (an SSE stream, a slow app): send the head now, so the client
            # sees the response start; small responses go out head and body together.
            request.write(b"")
        request.registerProducer(flow, True)

    def _buffer_and_rewrite(self, response: UpstreamResponse, headers) -> None:
        """C{rewrite_response}: the whole body is read, rewritten, then sent."""
        chunks: list[bytes] = []
        ended = []

        def done(failure) -> None:
            ended.append(True)
            self.flow = None
            if failure is not None:
                self._rewrite_failed(failure)
                return
            try:
                self._send_rewritten(b"".join(chunks), response, headers)
            except Exception:
                self._rewrite_failed(Failure())

        self.delivering = True
        flow = response.deliver(chunks.append, done)
        if not ended:
            self.flow = flow

    def _send_rewritten(self, body: bytes, response, headers) -> None:
        self.pending = None
        request, route = self.request, self.route
        rewritable = RewritableResponse(
            response.code, response.phrase.decode("latin-1"),
            ResponseHeaders([(name.decode("latin-1"), value.decode("latin-1"))
                             for name, value in headers]),
            body)
        address = route.keeper.address
        rewritten = apply_rewriters(list(route.rewriters), rewritable, {
            "request": request, "host": address.host if address else "",
            "port": address.port if address else 0, "path": self.target.decode("latin-1"),
        })
        request.setResponseCode(rewritten.code, rewritten.reason.encode("latin-1"))
        request.from_app = True
        out = request.responseHeaders
        for name in (b"server", b"date"):
            out.removeHeader(name)
        for name, value in rewritten.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                out.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        body = rewritten.body if isinstance(rewritten.body, bytes) else str(rewritten.body).encode()
        out.setRawHeaders(b"content-length", [b"%d" % len(body)])
        request.write(body)
        request.finish()

    def _rewrite_failed(self, failure) -> None:
        self.pending = None
        if self.client_gone:
            return
        log.failure("rewrite_response of {server} failed", failure, server=self.route.keeper.name)
        send_error(self.request, 502, "Response rewriting failed",
                   f"A rewrite_response function of {self.route.keeper.name!r} failed: "
                   f"{failure.getErrorMessage()}")

    def body_done(self, failure) -> None:
        """The app's response body ended: C{failure} is None when it ended as framed."""
        request = self.request
        self.flow = None
        if self.client_gone or request.finished:
            return
        request.unregisterProducer()
        if failure is None:
            if self.urls is not None:
                request.write(self.urls.close())
            request.finish()
        else:
            # The app died mid-response: end the client's connection so it sees the
            # truncation instead of a response that looks complete.
            request.loseConnection()


def _ignore(*_args) -> None:
    pass


def url_rewriter(route: Route, code: int, headers) -> UrlRewriter | None:
    """
    The L{UrlRewriter} for a response of a C{rewrite_urls} route, or C{None} when it is
    passed on untouched: not HTML or CSS, a partial (206) or body-less answer, or
    compressed (the app was asked for C{identity}, see L{Forwarder.headers_for}; one
    that compresses all the same is not decoded).
    """
    if code in (204, 206, 304) or code < 200 or route.prefix == b"/":
        return None
    kind = encoded = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-type":
            kind = body_kind(value)
        elif lower == b"content-encoding" and value.strip().lower() != b"identity":
            encoded = value
    if kind is None:
        return None
    if encoded is not None:
        log.debug("[{server}] not rewriting URLs of a {encoding} response",
                  server=route.keeper.name, encoding=encoded.decode("latin-1"))
        return None
    return UrlRewriter(route.prefix, kind)


def send_upstream_error(request, failure, route: Route, address: BackendAddress,
                        timed_out: bool) -> None:
    """The 502 or 504 page for a request the app did not answer."""
    name = route.keeper.name
    if failure.check(BackendBusy):
        busy = failure.value
        log.warn("[{server}] busy: a request waited {waited:.1f} s for a connection "
                 "({queued} waiting); see max_connections", server=name, waited=busy.waited,
                 queued=busy.queued)
        send_error(request, 503, "App busy",
                   f"The app {name!r} has all its connections in use "
                   f"(max_connections = {route.limits.max_connections}) and none came free "
                   f"within {busy.waited:.0f} s. Try again in a moment.", retry_after=2)
    elif timed_out:
        send_error(request, 504, "App timed out",
                   f"The app {name!r} did not answer within "
                   f"{route.config.request_timeout:g} s (request_timeout).")
    elif failure.check(ConnectError, ConnectionRefusedError, UpstreamError):
        send_error(request, 502, "App not reachable",
                   f"The app {name!r} at {address.describe()} closed or refused the "
                   "connection. It may have just exited; hubtwist restarts it.",
                   logs=route.keeper.logs.tail(20))
    else:
        send_error(request, 502, "Bad gateway",
                   f"The request to the app {name!r} failed: {failure.getErrorMessage()}")


_REWRITTEN = frozenset({b"location", b"content-location", b"set-cookie"})


def _headers_of(pairs) -> Headers:
    """(name, value) pairs as L{Headers}, repeated names kept."""
    headers = Headers()
    for name, value in pairs:
        headers.addRawHeader(name, value)
    return headers


def mapped_headers(request, route: Route, pairs) -> list[tuple[bytes, bytes]]:
    """An app's response headers with C{Location}, C{Content-Location} and C{Set-Cookie}
    mapped under the route's public prefix (L{rewrite_response_header}); the rest as is."""
    return [(name, rewrite_response_header(request, route, name.lower(), value))
            if name.lower() in _REWRITTEN else (name, value) for name, value in pairs]


def rewrite_response_header(request, route: Route, name: bytes, value: bytes) -> bytes:
    """An app's C{Set-Cookie} path or C{Location}/C{Content-Location} URL, mapped under
    the route's public prefix (HTTP responses and WebSocket handshakes alike)."""
    config = route.config
    if name == b"set-cookie":
        return value if config.absolute_url else rewrite_cookie_path(value, route.prefix)
    address = route.keeper.address
    netlocs = frozenset()
    if address is not None and address.kind == "tcp":
        netlocs = frozenset({f"127.0.0.1:{address.port}", f"localhost:{address.port}"})
    host = (request.getHeader(b"host") or b"localhost").decode("latin-1")
    origin = ("https://" if request.isSecure() else "http://") + host
    return rewrite_location(
        value.decode("latin-1"), prefix=route.prefix.decode("latin-1"),
        absolute_url=config.absolute_url, public_origin=origin, backend_netlocs=netlocs,
    ).encode("latin-1")


def is_upgrade(request) -> bool:
    """A WebSocket handshake (GET with C{Upgrade: websocket})."""
    upgrade = request.requestHeaders.getRawHeaders(b"upgrade")
    return bool(upgrade) and request.method == b"GET" and b"websocket" in b",".join(upgrade).lower()


class NoUpgrades:
    """The upgrade handler when no WebSocket bridge is configured: a clear 501."""

    def bridge(self, request, route, address, target, headers) -> None:
        send_error(request, 501, "WebSockets not available",
                   "This hubtwist cannot bridge WebSocket connections.")


class Forwarder:
    """
    Proxies requests along L{Route}s through one shared L{UpstreamPool}. WebSocket
    handshakes go to C{upgrades} (an object with C{bridge(request, route, address, target,
    headers)}) once the app is running and the upstream headers are built.
    """

    def __init__(self, reactor, upstream: UpstreamPool | None = None, upgrades=None) -> None:
        self.reactor = reactor
        self.upstream = upstream or UpstreamPool(reactor)
        self.upgrades = upgrades or NoUpgrades()
        # Where hubtwist's own routes live (set by the router): the progress page polls there.
        self.own_root = b"/"

    def forward(self, request, route: Route):
        """Proxy C{request} along C{route}; returns C{NOT_DONE_YET} for twisted.web."""
        request.defaultContentType = None
        request.hubtwist_server = server_label(route.keeper.name)  # metrics, access log
        if route.config.raw_socket_proxy and not is_upgrade(request):
            request.setHeader(b"allow", b"GET")
            send_error(request, 405, "WebSocket only",
                       f"{route.keeper.name!r} is a raw socket app: connect to it with a "
                       "WebSocket (GET with Upgrade: websocket).")
            return NOT_DONE_YET
        _Exchange(self, request, route).start()
        return NOT_DONE_YET

    def upstream_headers(self, request, route: Route, address: BackendAddress) -> list:
        """The request headers for the app, as (name, value) pairs (with the identity
        headers a gate put on C{request.identity_headers})."""
        client = getattr(request.getClientAddress(), "host", "127.0.0.1").encode()
        return self.headers_for(request.requestHeaders.getAllRawHeaders(), client,
                                request.isSecure(), route, address,
                                getattr(request, "identity_headers", ()))

    def headers_for(self, incoming, client: bytes, secure: bool, route: Route,
                    address: BackendAddress, identity=()) -> list:
        """
        The request headers for the app, as (name, value) pairs, from the client's
        C{incoming} ones as (name, [values]) pairs. First the client's are cleaned:
        hop-by-hop ones dropped (with those its C{Connection} names, never C{Host}), and
        every header hubtwist sets itself dropped in any spelling a CGI/WSGI server would
        fold into the same name (L{cgi_name}: C{X_Forwarded_User}). Then hubtwist's are
        added: forwarding ones (C{client} is the client's address), the C{identity}
        headers ((name, value) pairs, L{IDENTITY_HEADERS}), overrides. Adding after
        stripping is what keeps a client's C{Connection: X-Forwarded-User} from removing
        hubtwist's own header.
        """
        override = route.config.request_headers_override
        if callable(override):  # a Python configuration's function, called per request
            override = call_for_server(override, StrDict(), address.port, address.path,
                                       route.public_base, "request_headers_override",
                                       fill=False)  # filled below, once
        kept = [(name, values) for name, values in strip_hop_by_hop(incoming)
                if not _set_by_hubtwist(name, override)]
        existing = {name.lower(): values for name, values in kept}
        host = existing.get(b"host", [b""])[0]
        port = host.rpartition(b":")[2] if b":" in host and not host.endswith(b"]") else (
            b"443" if secure else b"80")
        forwarded = forwarded_headers(existing, client, b"https" if secure else b"http", host,
                                      port, route.prefix)
        pairs = [(name, value) for name, values in kept if name.lower() not in forwarded
                 for value in values]
        pairs += [(name, values[0]) for name, values in forwarded.items()]
        pairs += identity
        if route.config.rewrite_urls:
            # The body is rewritten as it streams: ask for it uncompressed.
            pairs = [(name, value) for name, value in pairs
                     if name.lower() != b"accept-encoding"]
            pairs.append((b"Accept-Encoding", b"identity"))
        if not host:
            pairs = [(name, value) for name, value in pairs if name.lower() != b"host"]
            pairs.append((b"Host", address.describe().encode("idna") if address.kind == "tcp" else b"localhost"))
        if override:
            values = template_values(address.port, address.path, route.public_base,
                                     route.prefix.decode("utf-8", "replace"),
                                     getattr(route.keeper, "origin_host", None))
            pairs += [(name.encode("latin-1"), expand(value, values).encode("latin-1"))
                      for name, value in override.items()]
        return pairs



def _set_by_hubtwist(name: bytes, override) -> bool:
    """Whether a client's header C{name} stands for one hubtwist sets itself (identity,
    forwarding, a C{request_headers_override}), in any spelling; those never pass."""
    if b"_" not in name and not name[:2].lower() == b"x-" and not override:
        return False  # the common case, decided without building anything
    folded = cgi_name(name)
    if folded in IDENTITY_HEADERS or folded in _FORWARDED and b"_" in name:
        return True
    return bool(override) and folded in {cgi_name(key.encode("latin-1")) for key in override}
