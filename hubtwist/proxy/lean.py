"""
The lean path: the common proxied request without twisted.web's request machinery.

Measured on the 1 KB proxy benchmark, building a twisted.web request (line-by-line head
parsing, L{Headers} objects, resource rendering, response headers rebuilt and re-encoded)
costs about two thirds of the CPU time hubtwist spends per proxied request. Most requests
need none of it: a GET or HEAD without a body, on a plain connection, for an app that is
running, with nothing to rewrite. L{LeanChannel} parses such a request itself, sends it to
the app through the shared L{UpstreamPool} and relays the response, streaming, with
backpressure.

Everything else goes to twisted.web: the first request L{LeanChannel} does not take (a
body, a WebSocket upgrade, an app that is not running, hubtwist's own pages, C{/proxy/},
a C{rewrite_response} app, HTTP/1.0, anything unusual in the head, authentication) hands
the connection over, with the bytes read so far, to the site's ordinary
L{StreamingChannel}, which serves it from then on. So the lean path only ever answers
requests that twisted.web would have proxied the same way, and a bad request gets
twisted.web's answer. It is used on plain TCP or unix-socket connections (not TLS). With
a gate in front of the router, the gate decides each request first (C{admit}) with the
same code as on the ordinary path, over a L{LeanRequest}: it admits what it can decide
at once (the standalone token in a header or the login cookie; in Hub mode a token or
login cookie whose identity is cached, fresh and granted), and everything else (a first
sight of a cookie, an expired identity, C{?token=}, an XSRF check, the OAuth callback)
takes the ordinary path.

The hand-over swaps the connection's protocol, a private Twisted member
(L{hubtwist.proxy.twisted_private.swap_protocol}).
"""

from __future__ import annotations

import re
from time import monotonic

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.web.http import RESPONSES, datetimeToString

from hubtwist.proxy.early import HEAD_TIMEOUT
from hubtwist.proxy.errors import send_error
from hubtwist.proxy.forward import (
    Relaying, mapped_headers, send_upstream_error,
)
from hubtwist.proxy.http1 import (
    are_header_names, connection_tokens, only_crlf_line_ends, response_head,
)
from hubtwist.proxy.rewrite import backend_path
from hubtwist.proxy.sending import allow_bulk, direct_writer
from hubtwist.proxy.splicing import spliceable
from hubtwist.proxy.twisted_private import can_swap_protocol, set_cookie_value, swap_protocol
from hubtwist.supervise import State

__all__ = ["LeanChannel", "LeanExchange", "LeanFactory", "LeanRequest", "lean_description",
           "lean_possible"]

log = Logger(namespace="hubtwist.proxy")


MAX_HEAD = 16 * 1024  # larger heads go to twisted.web (its own limit: 16 KiB, then 400)
MAX_HEADERS = 500  # more header lines go to twisted.web (its own limit: 500, then 400)
MAX_PIPELINED = 64 * 1024  # read ahead while a request is in flight, at most
ABORT_TIMEOUT = 15.0  # after an idle timeout, for a client that does not read what is queued
_TARGET = re.compile(rb"/[\x21-\x7e]*")  # origin-form, visible ASCII only
_LEAN_METHODS = frozenset({b"GET", b"HEAD"})
_NOT_LEAN_HEADERS = frozenset({
    b"content-length", b"transfer-encoding", b"expect", b"upgrade", b"http2-settings",
})
_NO_BODY_CODES = frozenset({204, 304})


def lean_possible(transport) -> bool:
    """Whether a connection can start on the lean path: a plain TCP or unix socket
    (TLS wraps the protocol, and the hand-over needs to swap it)."""
    return can_swap_protocol(transport)


def lean_description(description: str) -> bool:
    """Whether connections from the listen endpoint C{description} are plain sockets."""
    return description.split(":", 1)[0].lower() in ("tcp", "tcp6", "unix", "systemd")


class LeanFactory(Factory):
    """
    Serves connections with a L{LeanChannel} in front of C{site}'s ordinary channel.
    C{admit}, when a gate stands in front of the router, is the gate's own check for the
    lean path: C{admit(view)} gets a L{LeanRequest} and returns True when the request may
    be proxied now (the view's headers cleaned, identity and answer headers set on it), or
    False to leave the request to the gate on the ordinary path. C{served} counts the
    requests the lean path answered, C{spliced} the bodies it moved with splice(2)
    (L{hubtwist.proxy.splicing}), C{returned} the connections that came back from the
    ordinary path (L{take_back}). C{record}, when set, is told about every request the
    lean path answered (metrics, the access log): C{record(server, method, target, code,
    seconds, bytes_in, bytes_out, user, client, own)}, C{own} when hubtwist answered it
    itself (an error page).
    """

    noisy = False
    exchange = None  # the exchange class (a subclass of LeanExchange: hubtwist.front.lean)

    def __init__(self, site, router, forwarder, admit=None) -> None:
        self.site = site
        self.router = router
        self.forwarder = forwarder
        self.admit = admit
        self.served = 0
        self.spliced = 0
        self.returned = 0
        self.record = None

    def doStart(self) -> None:
        self.site.doStart()

    def doStop(self) -> None:
        self.site.doStop()

    def buildProtocol(self, addr):
        site = self.site
        channel = LeanChannel(self, lambda: site.buildProtocol(addr), site.timeOut)
        channel.factory = self
        return channel

    def take_back(self, transport) -> None:
        """A connection the site's channel served comes back to the lean path, idle
        between two requests (L{hubtwist.proxy.early.StreamingChannel._return_to_lean})."""
        self.returned += 1
        channel = self.buildProtocol(transport.getPeer())
        swap_protocol(transport, channel)
        channel.makeConnection(transport)


class LeanChannel(Protocol, TimeoutMixin):
    """
    The server side of one client connection on the lean path (see the module
    docstring). C{fallback()} makes the site's ordinary channel for the hand-over.
    """

    def __init__(self, lean: LeanFactory, fallback, idle_timeout: float | None) -> None:
        self._lean = lean
        self._router = lean.router
        self._forwarder = lean.forwarder
        self._fallback = fallback
        self._idle_timeout = idle_timeout
        self._buffer = b""
        self._exchange: _LeanExchange | None = None
        self._handed_over = False
        self._channel = None  # the site's channel, after the hand-over
        self._paused = False
        self._close_after = False
        self._client_host = b"127.0.0.1"
        self._peer = None  # the client's address as a gate reads it (LeanRequest)
        self._abort_call = None
        self._head_call = None  # the deadline of a head that arrives in pieces
        self._head_timeout = getattr(lean.site, "head_timeout", HEAD_TIMEOUT)
        self.send = None

    def connectionMade(self) -> None:
        transport = self.transport
        if not lean_possible(transport):
            self._hand_over()
            return
        allow_bulk(transport)
        self.send = direct_writer(transport)
        self._client_host = getattr(transport.getPeer(), "host", "127.0.0.1").encode()
        self._peer = _Peer(self._client_host.decode("latin-1"))
        self.setTimeout(self._idle_timeout)

    def dataReceived(self, data: bytes) -> None:
        if self._handed_over:
            self._channel.dataReceived(data)
            return
        self._buffer += data
        if self._exchange is not None:
            if len(self._buffer) > MAX_PIPELINED and not self._paused:
                self._paused = True
                self.transport.pauseProducing()
            return
        self.resetTimeout()
        self._next()

    def timeoutConnection(self) -> None:
        if self._exchange is not None:
            # The app, not the client, has the next move: the idle clock runs again from
            # the response's end (exchange_done). The clock is not stopped and restarted
            # around every request (a new timer per request costs more than this).
            self.setTimeout(self._idle_timeout)
            return
        # As twisted.web does: close, and drop the connection if what is queued for a
        # client that does not read keeps it open.
        self._abort_call = self.callLater(ABORT_TIMEOUT, self.transport.abortConnection)
        self.transport.loseConnection()

    def _refuse_head(self, status: bytes) -> None:
        """Answer a head the lean path will not wait for (408, 400) and close."""
        self._stop_head_deadline()
        self.setTimeout(None)
        self._buffer = b""
        self.send(b"HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status)
        self.timeoutConnection()

    def _head_timed_out(self) -> None:
        self._head_call = None
        if self._exchange is None and not self._handed_over and self.transport.connected:
            log.debug("Dropping {peer}: no complete request head within {timeout} s",
                      peer=self.transport.getPeer(), timeout=self._head_timeout)
            self._refuse_head(b"408 Request Timeout")

    def _stop_head_deadline(self) -> None:
        call, self._head_call = self._head_call, None
        if call is not None and call.active():
            call.cancel()

    def connectionLost(self, reason) -> None:
        if self._handed_over:
            self._channel.connectionLost(reason)
            return
        self.setTimeout(None)
        self._stop_head_deadline()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange.client_lost()

    # -- requests ----------------------------------------------------------------------------

    def _next(self) -> None:
        """Serve the next complete request in the buffer, or hand the connection over."""
        buffer = self._buffer
        if not buffer:
            return
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self._hand_over()
            elif buffer.count(b"\n") != buffer.count(b"\r\n"):
                self._refuse_head(b"400 Bad Request")  # a bare LF: no CRLF CRLF will come
            elif self._head_call is None:
                # Its idle timeout restarts with every byte: the whole head has a deadline.
                self._head_call = self.callLater(self._head_timeout, self._head_timed_out)
            return
        if self._head_call is not None:
            self._stop_head_deadline()
        if end > MAX_HEAD:
            self._hand_over()
            return
        head = buffer[:end]
        parsed = _parse(head)
        if parsed is None:
            self._hand_over()
            return
        method, target, by_name, close = parsed
        admit = self._lean.admit
        identity = answer_headers = ()
        user = None
        if admit is not None:
            view = LeanRequest.over_parsed(method, target, by_name, self._peer)
            if not admit(view):
                self._hand_over()
                return
            identity, answer_headers = view.identity_headers, view.response_headers
            user = view.hubtwist_user
        headers = list(by_name.values())
        path = target.partition(b"?")[0]
        route = self._router.route_for(path)
        # rewrite_urls: twisted.web's path rewrites (a response of unknown length there,
        # chunked, is what the lean relay would need to learn; the rewriting itself costs
        # far more than the path).
        if (route is None or route.rewriters or route.config.rewrite_urls
                or route.config.raw_socket_proxy
                or route.keeper.state is not State.RUNNING):
            self._hand_over()
            return
        self._buffer = buffer[end + 4:]
        self._close_after = close
        self._lean.served += 1
        self._exchange = (self._lean.exchange or _LeanExchange)(
            self, route, method, target, headers, user, identity, answer_headers)
        self._exchange.start()

    def exchange_done(self, reusable: bool) -> None:
        """The response was sent (C{reusable}) or cut short (the connection is closed)."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange.recorded()
        if not reusable or self._close_after:
            self.transport.loseConnection()
            return
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        self.resetTimeout()  # idle from now (a reset to later only moves its time)
        if self._buffer:
            # A pipelined request: not from inside the app connection's callbacks.
            self._forwarder.reactor.callLater(0, self._next_if_idle)

    def _next_if_idle(self) -> None:
        if self._exchange is None and not self._handed_over and self.transport.connected:
            self._next()

    def _hand_over(self) -> None:
        """From now on the site's ordinary channel serves this connection."""
        if self._handed_over:
            return
        self._handed_over = True
        self.setTimeout(None)
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        transport = self.transport
        channel = self._channel = self._fallback()
        if lean_possible(transport):
            swap_protocol(transport, channel)
            channel.lean_return = self._lean.take_back
        # else (not expected: lean_description picks the endpoints) this object stays the
        # transport's protocol and passes everything on; see dataReceived/connectionLost.
        channel.makeConnection(transport)
        buffer, self._buffer = self._buffer, b""
        if buffer:
            channel.dataReceived(buffer)


class _Peer:
    __slots__ = ("host",)

    def __init__(self, host: str) -> None:
        self.host = host


class LeanRequest:
    """
    What an auth gate sees of a request on the lean path: the members of twisted.web's
    request that the gates read and change (C{method}, C{uri}, C{path}, the request
    headers, the client's address, response headers, C{identity_headers}), over the
    lean path's parsed head; and L{header_values}, the hashable summary a gate keys a
    remembered decision on. So a gate decides a lean request with the very code that
    decides an ordinary one (L{hubtwist.hub.gate.HubGate.admit_lean}).

    @ivar response_headers: headers the gate put on the answer (C{setHeader}, and a
        C{Set-Cookie} per C{addCookie}).
    @ivar identity_headers: who is calling, for the app (C{forward_user_info}).
    @ivar hubtwist_user: who is calling, for the access log.
    """

    __slots__ = ("method", "uri", "path", "args", "_headers", "_peer", "response_headers",
                 "identity_headers", "hubtwist_user")

    def __init__(self, method: bytes, uri: bytes, headers, client_host: bytes) -> None:
        """C{headers}: (name, [values]) pairs, each name once."""
        self._start(method, uri, {name.lower(): (name, values) for name, values in headers},
                    _Peer(client_host.decode("latin-1")))

    @classmethod
    def over_parsed(cls, method: bytes, uri: bytes, by_name: dict, peer: _Peer) -> "LeanRequest":
        """A view over the lean parser's own header dict (lower-case name -> (name,
        [values])), which it then changes in place: no copy per request."""
        view = cls.__new__(cls)
        view._start(method, uri, by_name, peer)
        return view

    def _start(self, method: bytes, uri: bytes, by_name: dict, peer: _Peer) -> None:
        self.method = method
        self.uri = uri
        self.path = uri.partition(b"?")[0]
        self.args = None
        self._headers = by_name
        self._peer = peer
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.identity_headers = ()
        self.hubtwist_user = None  # who is calling, for the access log

    def header_values(self, lower_names: tuple[bytes, ...]) -> tuple:
        """For each of C{lower_names} (lower case), its values as a tuple, or None when
        absent: one hashable summary of the headers a decision reads."""
        get = self._headers.get
        found = []
        for name in lower_names:
            entry = get(name)
            found.append(None if entry is None else tuple(entry[1]))
        return tuple(found)

    # twisted.web.http_headers.Headers, as far as the gates use it
    @property
    def requestHeaders(self) -> "LeanRequest":
        return self

    def getRawHeaders(self, name: bytes, default=None):
        entry = self._headers.get(name.lower())
        return entry[1] if entry is not None else default

    def setRawHeaders(self, name: bytes, values) -> None:
        lower = name.lower()
        entry = self._headers.get(lower)
        self._headers[lower] = (entry[0] if entry is not None else name, list(values))

    def removeHeader(self, name: bytes) -> None:
        self._headers.pop(name.lower(), None)

    def getAllRawHeaders(self):
        return list(self._headers.values())

    # twisted.web.server.Request
    def getHeader(self, name: bytes) -> bytes | None:
        values = self.getRawHeaders(name)
        return values[-1] if values else None

    def getClientAddress(self) -> _Peer:
        return self._peer

    def isSecure(self) -> bool:
        return False

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.response_headers.append((name, value))

    def addCookie(self, name, value, **attributes) -> None:
        """As twisted.web's C{Request.addCookie}, with its formatting."""
        self.response_headers.append((b"Set-Cookie", set_cookie_value(name, value, **attributes)))


def _parse(head: bytes):
    """
    C{(method, target, headers, close)} for a head the lean path takes, C{headers} as
    C{{lower-case name: (name as sent, [values])}}; else C{None}: only HTTP/1.1 GET/HEAD
    in origin form, well-formed header lines with token names, no body, no upgrade, no
    line folding, CR and LF only as line ends.
    """
    if not only_crlf_line_ends(head):
        return None
    lines = head.split(b"\r\n")
    if len(lines) > MAX_HEADERS + 1:
        return None
    request_line = lines[0].split(b" ")
    if len(request_line) != 3:
        return None
    method, target, version = request_line
    if (method not in _LEAN_METHODS or version != b"HTTP/1.1"
            or _TARGET.fullmatch(target) is None):
        return None
    headers: dict[bytes, tuple[bytes, list[bytes]]] = {}
    close = False
    names = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        names.append(name)
        value = value.strip(b" \t")
        lower = name.lower()
        if lower in _NOT_LEAN_HEADERS:
            return None
        if lower == b"connection":
            tokens = connection_tokens((value,))
            if b"upgrade" in tokens:
                return None
            close = close or b"close" in tokens
        entry = headers.get(lower)
        if entry is None:
            headers[lower] = (name, [value])
        else:
            if lower == b"host":
                return None  # two Hosts: left to twisted.web
            entry[1].append(value)
    if not are_header_names(names) or b"host" not in headers:
        return None  # a name that is not a token; or no Host, which HTTP/1.1 requires
    return method, target, headers, close


class _LeanExchange(Relaying):
    """One request on the lean path: to the app and back."""

    __slots__ = ("channel", "route", "method", "target", "headers", "user", "identity",
                 "answer_headers", "pending", "flow",
                 "timed_out", "client_gone", "corked", "chunked", "address", "finished",
                 "startedWriting", "error_code", "error_headers", "delivering", "started",
                 "public_target", "code", "sent", "own")

    def __init__(self, channel: LeanChannel, route, method: bytes, target: bytes,
                 headers, user: str | None = None, identity=(), answer_headers=()) -> None:
        self.channel = channel
        self.route = route
        self.method = method
        self.target = target
        self.public_target = target  # the client's (target becomes the app's)
        self.headers = headers
        self.user = user
        self.identity = identity
        self.answer_headers = answer_headers
        self.started = monotonic()
        self.code = 0  # what the client got (0: nothing yet)
        self.sent = 0  # body bytes sent to the client
        self.own = False  # hubtwist answered (an error page)
        self.pending = None
        self.flow = None
        self.timed_out = False
        self.client_gone = False
        self.corked: list[bytes] | None = None
        self.chunked = False
        self.address = None
        # what send_error and rewrite_response_header use of a request
        self.finished = False
        self.startedWriting = False
        self.error_code = 502
        self.error_headers: list[tuple[bytes, bytes]] = list(answer_headers)
        self.delivering = False

    def start(self) -> None:
        route = self.route
        config = route.config
        address = self.address = route.keeper.address
        channel = self.channel
        forwarder = channel._forwarder
        try:
            app_target = backend_path(self.target, route.prefix, config.absolute_url,
                                      route.mappath)
            headers = forwarder.headers_for(self.headers, channel._client_host, False, route,
                                            address, self.identity)
        except Exception:  # a mappath callable failed, say: twisted.web would answer 500
            log.failure("Error while preparing a request for {server}",
                        server=route.keeper.name)
            send_error(self, 500, "Internal error",
                       f"hubtwist could not prepare the request for {route.keeper.name!r}.")
            return
        self.target = app_target
        sending = forwarder.upstream.request(address, self.method, app_target, headers, None,
                                             route.limits)
        if config.request_timeout:
            sending.addTimeout(config.request_timeout, forwarder.reactor,
                               onTimeoutCancel=self._timeout_cancelled)
        self.pending = sending
        sending.addCallbacks(self._response, self._failed)

    def recorded(self) -> None:
        """Tell the factory's C{record} about this request (once: the exchange is done)."""
        record = self.channel._lean.record
        started, self.started = self.started, None
        if record is not None and started is not None:
            record(self.route.keeper.name, self.method, self.public_target, self.code or 499,
                   monotonic() - started, 0, self.sent, self.user, self.channel._client_host,
                   self.own)

    def client_lost(self) -> None:
        self.recorded()
        self.abandon()

    # -- the app's answer ----------------------------------------------------------------

    def _failed(self, failure) -> None:
        self.pending = None
        if self.client_gone:
            return  # cancelled because the client left
        send_upstream_error(self, failure, self.route, self.address, self.timed_out)

    def _relay(self, response) -> None:
        route = self.route
        if route.counts_as_activity(self.target):
            route.keeper.touch()
        code = self.code = response.code
        lines = response_head(code, response.phrase, self._response_headers(response), end=False)
        for name, value in self.answer_headers:
            lines += (name, b": ", value, b"\r\n")
        no_body = self.method == b"HEAD" or code in _NO_BODY_CODES
        if response.length is not None and not no_body:
            lines.append(b"Content-Length: %d\r\n" % response.length)
        elif not no_body:
            self.chunked = True
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if self.channel._close_after:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        self.delivering = True
        transport = self.channel.transport
        if not no_body and not self.chunked and response.splice_ready(transport):
            # A large download: the head and what came with it now, the rest in the kernel.
            self.startedWriting = True
            self.channel.send(b"".join(lines) + response.take_read_ahead())
            if spliceable(transport):
                self.channel._lean.spliced += 1
                self.sent = response.length  # if it all arrives (else the count is off)
                self.flow = response.splice_to(transport, self._spliced)
                return
            lines = []  # the client did not take it all at once: the ordinary relay
        # Head and the body bytes already in (all of a small response) go out in one send.
        self.corked = lines
        flow = response.deliver(self._write, self._body_done, transport,
                                transport.abortConnection)
        self.startedWriting = True
        if self.finished:
            return  # delivered and sent already; the connection may serve another request
        self._flush()
        self.flow = flow
        self.channel.transport.registerProducer(flow, True)

    def _response_headers(self, response) -> list:
        """The app's response headers as the client gets them."""
        return mapped_headers(self, self.route, response.headers)

    def _spliced(self, failure) -> None:
        self.flow = None
        if self.client_gone:
            return
        self.finished = True
        # Cut short (the app's side or the client's broke): the client must see it.
        self.channel.exchange_done(reusable=failure is None)

    def _write(self, data: bytes) -> None:
        self.sent += len(data)
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        if self.corked is not None:
            self.corked.append(data)
        else:
            self.channel.send(data)

    def _body_done(self, failure) -> None:
        registered, self.flow = self.flow is not None, None
        if self.client_gone:
            return
        if registered:
            self.channel.transport.unregisterProducer()
        if failure is not None:
            # The app died mid-response: the client must see the truncation.
            self.finished = True
            self._flush()
            self.channel.exchange_done(reusable=False)
            return
        if self.chunked:
            self._write(b"")  # the last chunk: "0\r\n\r\n"
        self._flush()
        self.finished = True
        self.channel.exchange_done(reusable=True)

    def _flush(self) -> None:
        corked, self.corked = self.corked, None
        if corked:
            self.channel.send(b"".join(corked))

    # -- what send_error and rewrite_response_header use of a request --------------------

    @property
    def request(self) -> "_LeanExchange":
        """Error pages are written to this exchange itself (L{Relaying._relay_failed})."""
        return self

    def getHeader(self, name: bytes) -> bytes | None:
        """The last value of header C{name}, as twisted.web's C{Request.getHeader}."""
        for entry_name, values in self.headers:
            if entry_name.lower() == name:
                return values[-1]
        return None

    def isSecure(self) -> bool:
        return False

    def setResponseCode(self, code: int) -> None:
        self.error_code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.error_headers.append((name, value))

    def write(self, body: bytes) -> None:
        lines = response_head(self.error_code, RESPONSES.get(self.error_code, b""),
                              [(b"Date", datetimeToString()), *self.error_headers], end=False)
        if self.channel._close_after:
            lines.append(b"Connection: close\r\n")
        lines += (b"\r\n", b"" if self.method == b"HEAD" else body)
        self.code = self.error_code
        self.own = True
        self.sent = 0 if self.method == b"HEAD" else len(body)
        self.startedWriting = True
        self.channel.send(b"".join(lines))

    def finish(self) -> None:
        self.finished = True
        self.channel.exchange_done(reusable=True)

    def loseConnection(self) -> None:
        self.finished = True
        self.channel.exchange_done(reusable=False)


LeanExchange = _LeanExchange  # for subclasses elsewhere (LeanFactory.exchange)
