"""
The HTTP reverse proxy: one request from the client, streamed to the app through a pooled
L{Agent} over TCP or a unix socket, the response streamed back with backpressure.

A L{Route} says where a request goes (a supervised app, an external one, or a
C{/proxy/PORT/} target) and how its URL and headers are rewritten; L{Forwarder.forward}
does the exchange. Requests come from L{hubtwist.proxy.early.StreamingSite}, whose
C{request.body} streams the upload as it arrives.
"""

from __future__ import annotations

import importlib
import re
from typing import Callable

import attrs
from twisted.internet.defer import CancelledError, TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import (
    URI, Agent, HTTPConnectionPool, ResponseDone, ResponseNeverReceived, readBody,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, UNKNOWN_LENGTH
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from hubtwist.config.schema import ServerConfig
from hubtwist.config.templates import expand, template_values
from hubtwist.proxy.errors import send_error
from hubtwist.proxy.rewritable import ResponseHeaders, RewritableResponse, apply_rewriters
from hubtwist.proxy.rewrite import (
    backend_path, forwarded_headers, rewrite_cookie_path, rewrite_location, strip_hop_by_hop,
)
from hubtwist.supervise import BackendAddress, ServerUnavailable, State

log = Logger(namespace="hubtwist.proxy")


def load_callable(import_path: str) -> Callable:
    """C{"package.module:name"} -> the object (config values of mappath, rewrite_response)."""
    module, _, name = import_path.partition(":")
    target = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


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

    @classmethod
    def for_server(cls, keeper, prefix: bytes, config: ServerConfig, public_base: str) -> "Route":
        mappath = config.mappath
        if isinstance(mappath, str):
            mappath = load_callable(mappath)
        exclude = None
        if config.exclude_last_activity_patterns:
            exclude = re.compile("|".join(f"(?:{p})" for p in config.exclude_last_activity_patterns))
        rewriters = tuple(load_callable(path) for path in config.rewrite_response)
        return cls(keeper, prefix, config, public_base, mappath or None, exclude, rewriters)

    def counts_as_activity(self, target: bytes) -> bool:
        if not self.config.update_last_activity:
            return False
        return self.exclude is None or not self.exclude.search(target.decode("latin-1"))


@implementer(IAgentEndpointFactory)
class _AddressEndpoints:
    """
    Backend origins for addresses (C{http://127.0.0.1:PORT}, or C{http://unix-N} for a
    socket) and endpoints for them. Each address gets its own origin, so the pool never
    mixes connections of different backends.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._origins: dict[BackendAddress, bytes] = {}
        self._addresses: dict[tuple[bytes, int], BackendAddress] = {}

    def origin(self, address: BackendAddress) -> bytes:
        origin = self._origins.get(address)
        if origin is None:
            if address.kind == "unix":
                origin = b"http://unix-%d" % len(self._origins)
            else:
                origin = b"http://" + address.describe().encode("idna")
            uri = URI.fromBytes(origin)
            self._addresses[(uri.host, uri.port)] = address
            self._origins[address] = origin
        return origin

    def endpointForURI(self, uri):
        return _NoDelay(self._addresses[(uri.host, uri.port)].endpoint(self._reactor, timeout=10))


class _NoDelay:
    """
    Connects like the wrapped endpoint, then turns Nagle off: a proxy writes a request or
    response head and its body in separate segments, and Nagle holding the second until the
    peer's delayed ACK adds up to 40 ms to a request.
    """

    def __init__(self, endpoint) -> None:
        self._endpoint = endpoint

    def connect(self, factory):
        return self._endpoint.connect(factory).addCallback(_no_delay)


def _no_delay(protocol):
    set_no_delay = getattr(protocol.transport, "setTcpNoDelay", None)
    if set_no_delay is not None:  # not on unix sockets
        set_no_delay(True)
    return protocol


class BackendAgent:
    """An Agent with a persistent connection pool, able to reach any L{BackendAddress}."""

    def __init__(self, reactor, *, per_host: int = 64, idle_timeout: float = 4.0) -> None:
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = per_host
        # Below the usual app keep-alive (Node: 5 s), so we rarely reuse a connection the app
        # is closing; a POST on such a connection would fail without retry.
        self._pool.cachedConnectionTimeout = idle_timeout
        self._endpoints = _AddressEndpoints(reactor)
        self._agent = Agent.usingEndpointFactory(reactor, self._endpoints, pool=self._pool)

    def request(self, address: BackendAddress, method: bytes, target: bytes, headers: Headers, body):
        return self._agent.request(method, self._endpoints.origin(address) + target, headers, body)

    def close(self):
        """Close idle pooled connections (at shutdown); returns a Deferred."""
        return self._pool.closeCachedConnections()


class _Relay(Protocol):
    """Streams the app's response body into the client's request, with backpressure."""

    def __init__(self, exchange: "_Exchange") -> None:
        self._exchange = exchange

    def connectionMade(self) -> None:
        request = self._exchange.request
        if not self._exchange.client_gone:
            request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        if not self._exchange.client_gone:
            self._exchange.request.write(data)

    def connectionLost(self, reason) -> None:
        self._exchange.body_done(reason)


class _Exchange:
    """One proxied request: waiting for the app, the upstream request, the relay."""

    __slots__ = ("forwarder", "request", "route", "client_gone", "pending", "relay", "target",
                 "timed_out")

    def __init__(self, forwarder: "Forwarder", request, route: Route) -> None:
        self.forwarder = forwarder
        self.request = request
        self.route = route
        self.client_gone = False
        self.pending = None
        self.relay = None
        self.target = b""
        self.timed_out = False
        request.notifyFinish().addErrback(self._client_lost)

    def _client_lost(self, _failure) -> None:
        self.client_gone = True
        if self.pending is not None:
            self.pending.cancel()
        if self.relay is not None and self.relay.transport is not None:
            self.relay.transport.stopProducing()

    # -- the app ---------------------------------------------------------------------------

    def start(self) -> None:
        keeper = self.route.keeper
        if keeper.state is State.RUNNING:
            self.send(keeper.address)
            return
        waiting = keeper.ensure_running()
        waiting.addTimeout(self.route.config.timeout + 1, self.forwarder.reactor)
        self.pending = waiting
        waiting.addCallbacks(self._app_ready, self._app_unavailable)

    def _app_ready(self, address: BackendAddress) -> None:
        self.pending = None
        if not self.client_gone:
            self.send(address)

    def _app_unavailable(self, failure) -> None:
        self.pending = None
        if self.client_gone:
            return
        keeper = self.route.keeper
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
        self.target = backend_path(request.uri, route.prefix, config.absolute_url, route.mappath)
        headers = self.forwarder.upstream_headers(request, route, address)
        if is_upgrade(request):
            self.forwarder.upgrades.bridge(request, route, address, self.target, headers)
            return
        body = request.body
        if body.length == 0:
            body = None
        sending = self.forwarder.agent.request(address, request.method, self.target, headers, body)
        if config.request_timeout:
            sending.addTimeout(config.request_timeout, self.forwarder.reactor,
                               onTimeoutCancel=self._timeout_cancelled)
        self.pending = sending
        sending.addCallbacks(self._response, self._upstream_failed, errbackArgs=(address,))

    def _timeout_cancelled(self, result, timeout):
        # Agent reports a cancelled request as ResponseNeverReceived; remember why.
        self.timed_out = True
        return result

    def _upstream_failed(self, failure, address: BackendAddress) -> None:
        self.pending = None
        if self.client_gone:
            return
        name = self.route.keeper.name
        if self.timed_out:
            send_error(self.request, 504, "App timed out",
                       f"The app {name!r} did not answer within "
                       f"{self.route.config.request_timeout:g} s (request_timeout).")
        elif failure.check(ConnectError, ConnectionRefusedError, ResponseNeverReceived):
            send_error(self.request, 502, "App not reachable",
                       f"The app {name!r} at {address.describe()} closed or refused the "
                       "connection. It may have just exited; hubtwist restarts it.",
                       logs=self.route.keeper.logs.tail(20))
        else:
            send_error(self.request, 502, "Bad gateway",
                       f"The request to the app {name!r} failed: {failure.getErrorMessage()}")

    def _response(self, response) -> None:
        self.pending = None
        request, route = self.request, self.route
        if self.client_gone:
            response.deliverBody(Protocol())  # drain and drop; closes the connection
            return
        if route.counts_as_activity(self.target):
            route.keeper.touch()
        rewrite = self.forwarder.rewrite_header
        headers = []
        for name, values in response.headers.getAllRawHeaders():
            lower = name.lower()
            if lower in (b"location", b"content-location", b"set-cookie"):
                values = [rewrite(request, route, lower, value) for value in values]
            headers.append((name, values))
        if route.rewriters:
            self._buffer_and_rewrite(response, headers)
            return
        request.setResponseCode(response.code, response.phrase)
        out = request.responseHeaders
        out.removeHeader(b"server")
        out.removeHeader(b"date")
        for name, values in headers:
            out.setRawHeaders(name, values)
        if response.length is not UNKNOWN_LENGTH and request.method != b"HEAD":
            out.setRawHeaders(b"content-length", [b"%d" % response.length])
        request.write(b"")  # headers out now: an SSE stream's first event must not wait
        self.relay = _Relay(self)
        response.deliverBody(self.relay)

    def _buffer_and_rewrite(self, response, headers) -> None:
        """C{rewrite_response}: the whole body is read, rewritten, then sent."""
        reading = readBody(response)
        self.pending = reading
        reading.addCallback(self._send_rewritten, response, headers)
        reading.addErrback(self._rewrite_failed)

    def _send_rewritten(self, body: bytes, response, headers) -> None:
        self.pending = None
        request, route = self.request, self.route
        rewritable = RewritableResponse(
            response.code, response.phrase.decode("latin-1"),
            ResponseHeaders([(name.decode("latin-1"), value.decode("latin-1"))
                             for name, values in headers for value in values]),
            body)
        address = route.keeper.address
        rewritten = apply_rewriters(list(route.rewriters), rewritable, {
            "request": request, "host": address.host if address else "",
            "port": address.port if address else 0, "path": self.target.decode("latin-1"),
        })
        request.setResponseCode(rewritten.code, rewritten.reason.encode("latin-1"))
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

    def body_done(self, reason) -> None:
        request = self.request
        if self.client_gone:
            return
        request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            request.finish()
        else:
            # The app died mid-response: end the client's connection so it sees the
            # truncation instead of a response that looks complete.
            request.loseConnection()


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
    Proxies requests along L{Route}s through one shared L{BackendAgent}. WebSocket
    handshakes go to C{upgrades} (an object with C{bridge(request, route, address, target,
    headers)}) once the app is running and the upstream headers are built.
    """

    def __init__(self, reactor, agent: BackendAgent | None = None, upgrades=None) -> None:
        self.reactor = reactor
        self.agent = agent or BackendAgent(reactor)
        self.upgrades = upgrades or NoUpgrades()

    def forward(self, request, route: Route):
        """Proxy C{request} along C{route}; returns C{NOT_DONE_YET} for twisted.web."""
        request.defaultContentType = None
        if route.config.raw_socket_proxy and not is_upgrade(request):
            request.setHeader(b"allow", b"GET")
            send_error(request, 405, "WebSocket only",
                       f"{route.keeper.name!r} is a raw socket app: connect to it with a "
                       "WebSocket (GET with Upgrade: websocket).")
            return NOT_DONE_YET
        _Exchange(self, request, route).start()
        return NOT_DONE_YET

    def upstream_headers(self, request, route: Route, address: BackendAddress) -> Headers:
        incoming = request.requestHeaders
        kept = strip_hop_by_hop(incoming.getAllRawHeaders())
        headers = Headers()
        existing = {}
        for name, values in kept:
            headers.setRawHeaders(name, values)
            existing[name.lower()] = values
        client = request.getClientAddress()
        host = incoming.getRawHeaders(b"host", [b""])[0]
        secure = request.isSecure()
        port = host.rpartition(b":")[2] if b":" in host and not host.endswith(b"]") else (
            b"443" if secure else b"80")
        for name, values in forwarded_headers(
            existing, getattr(client, "host", "127.0.0.1").encode(),
            b"https" if secure else b"http", host, port, route.prefix,
        ).items():
            headers.setRawHeaders(name, values)
        if route.config.request_headers_override:
            values = template_values(address.port, address.path, route.public_base)
            for name, value in route.config.request_headers_override.items():
                headers.setRawHeaders(name.encode("latin-1"), [expand(value, values).encode("latin-1")])
        return headers

    def rewrite_header(self, request, route: Route, name: bytes, value: bytes) -> bytes:
        config = route.config
        if name == b"set-cookie":
            return value if config.absolute_url else rewrite_cookie_path(value, route.prefix)
        keeper_address = route.keeper.address
        netlocs = frozenset()
        if keeper_address is not None and keeper_address.kind == "tcp":
            port = keeper_address.port
            netlocs = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})
        host = (request.getHeader(b"host") or b"localhost").decode("latin-1")
        origin = ("https://" if request.isSecure() else "http://") + host
        return rewrite_location(
            value.decode("latin-1"), prefix=route.prefix.decode("latin-1"),
            absolute_url=config.absolute_url, public_origin=origin, backend_netlocs=netlocs,
        ).encode("latin-1")
