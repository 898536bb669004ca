"""
WebSocket bridging: a client's WebSocket to the app's, or (C{raw_socket_proxy}) to a plain
TCP or unix socket.

L{Forwarder} hands over a handshake once the app is running, with the upstream headers
built and the backend target computed; L{WebSocketBridge.bridge} takes it from there:

  1. Connect to the app and send it the handshake: the client's C{Sec-WebSocket-Key},
     subprotocols, extensions, cookies, C{Origin}, C{Authorization} and other end-to-end
     headers, plus hubtwist's C{X-Forwarded-*}.
  2. Read the app's answer. Anything but a valid 101 goes back to the client as an HTTP
     response, status and body included, and nothing is upgraded.
  3. On 101: answer the client with a 101 carrying the app's headers (its subprotocol,
     extensions, C{Set-Cookie}s), take the client connection over from twisted.web
     (L{take_over}) and splice the two connections.

Splicing passes the bytes through unchanged: frames stay masked, compressed frames stay
compressed, and the Python work per message is reading its frame header
(L{FrameSplicer}), which is what counts messages for the activity stamp, enforces
C{websocket_max_message_size} (close 1009 both ways) and finds the frame boundaries where
hubtwist inserts its keepalive pings and its own close frames. The bytes themselves move
through L{hubtwist.proxy.rawsocket}: plain sockets are driven by one inner epoll set (the
L{SocketPump}), other transports (TLS) stay Twisted's. Either way a slow reader pauses
reading from the fast writer, so memory stays bounded.

Closing: close frames pass through; once both have, both connections are closed. If the
app drops its connection without a close frame the client gets close 1011 (or, in the middle
of a frame, the connection just ends: 1006); if the client drops, the app's connection is
closed too (the app sees 1006, as it would without hubtwist). None of this is logged above
debug level.

Shutting down (L{WebSocketBridge.close_all}, before the apps are stopped): hubtwist goes away
as a server does, with a close 1001 (Going Away) to each client and, on a splice, a masked
close 1001 to the app, each at a frame boundary; it waits for the close handshakes (at most
L{GOING_AWAY_SECONDS}) and drops what is left.

Raw-socket routes (L{RawSession}) terminate the client's WebSocket in hubtwist
(L{FrameDecoder}): data frames become bytes on the socket to the app, and what the app
sends comes back as binary messages, one per read.
"""

from __future__ import annotations

from time import monotonic

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from hubtwist.counting import server_label
from hubtwist.proxy.errors import send_error
from hubtwist.proxy.rawsocket import SocketPump, TransportEnd, pumpable
from hubtwist.proxy.twisted_private import TakeoverUnavailable, upgrade_channel
from hubtwist.proxy.forward import mapped_headers
from hubtwist.proxy.http1 import connection_tokens
from hubtwist.proxy.ws_frames import (
    CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG,
    FrameDecoder, FrameSplicer, accept_key, close_frame, close_payload, encode_frame,
    frame_header, parse_close,
)
from hubtwist.proxy.ws_handshake import (
    BodyReader, HandshakeError, handshake_request, parse_head,
    select_raw_subprotocol, switching_protocols,
)

__all__ = ["TakeoverUnavailable", "WebSocketBridge", "take_over"]

log = Logger(namespace="hubtwist.proxy.websocket")

PING_PAYLOAD = b"hubtwist-keepalive"
PING_MISSES = 3  # intervals without a word from the client before it is considered gone
GOING_AWAY_SECONDS = 2.0  # at shutdown, for every close handshake together
GOING_AWAY_REASON = "hubtwist is stopping"


def take_over(request, protocol: Protocol) -> bytes:
    """
    Detach the client connection of C{request} from twisted.web and give it to C{protocol}
    (the only place hubtwist relies on twisted.web internals for WebSockets, through
    L{upgrade_channel}: Twisted's own WebSocket hook, C{HTTPChannel} private members).

    Bytes the client sent after the request head (frames sent before it has read the 101)
    are returned, to be read as WebSocket data: they are never parsed as a pipelined HTTP
    request. The channel stops being the transport's producer (C{protocol}'s owner
    registers its own), and reading resumes if the channel had paused it.

    @param protocol: must have its C{dataReceived} and C{connectionLost} set already; the
        channel captures them.
    @return: the bytes the client sent after the request head.
    @raise TakeoverUnavailable: when the members are missing.
    """
    channel = request.channel
    transport = channel.transport
    early = upgrade_channel(channel, protocol)
    transport.unregisterProducer()
    transport.resumeProducing()
    return early


def _no_delay(transport) -> None:
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError):
        pass  # a unix socket


def _unbound(data: bytes) -> None:
    raise RuntimeError("the client side is not connected yet")


def _side() -> Protocol:
    """A protocol object for one side; the session sets its callbacks."""
    return Protocol()


class WebSocketBridge:
    """
    The C{upgrades} object of L{hubtwist.proxy.forward.Forwarder}: bridges WebSocket
    handshakes to apps.

    @ivar sessions: the open (or opening) sessions.
    """

    def __init__(self, reactor, *, connect_timeout: float = 10.0, use_pump: bool = True) -> None:
        """
        @param connect_timeout: seconds to connect to an app.
        @param use_pump: drive plain sockets with the L{SocketPump} (faster); L{False}
            keeps every connection on its Twisted transport.
        """
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.use_pump = use_pump
        self.pump = SocketPump(reactor)
        self.sessions: set = set()
        self.stopping = False  # close_all was called: no new sessions
        # Told about each bridged WebSocket (metrics, access log), when set: traffic's
        # websocket_opened(server)/websocket_closed(server), and record(...) (as
        # LeanFactory.record) once the WebSocket has ended: status 101, its lifetime.
        self.traffic = None
        self.record = None
        self._all_ended: list[Deferred] = []

    def bridge(self, request, route, address, target: bytes, headers) -> None:
        """Bridge C{request} (an upgrade) to the app at C{address}; see the module doc."""
        if self.stopping:
            request.setHeader(b"connection", b"close")
            send_error(request, 503, "Shutting down", "hubtwist is stopping.")
            return
        problem = _bad_handshake(request)
        if problem:
            request.setHeader(b"connection", b"close")
            send_error(request, 400, "Bad WebSocket handshake", problem)
            return
        session_type = RawSession if route.config.raw_socket_proxy else SpliceSession
        session = session_type(self, request, route, address, target, headers)
        self.sessions.add(session)
        session.start()

    def close_all(self, timeout: float = GOING_AWAY_SECONDS) -> Deferred:
        """
        Shutting down: close every bridged WebSocket as a server going away does, before
        the apps are stopped (a dying app would close them with 1011, or just end them).

        Each client gets a close 1001 (Going Away), and each app of a spliced WebSocket a
        masked close 1001 (hubtwist is its client), at the next frame boundary of each
        direction; the close handshakes then end the connections as usual. Sessions still
        open after C{timeout} seconds (a peer that does not answer, a frame that never
        ends) are dropped; handshakes not yet answered get a 503. From now on new
        handshakes get a 503 too.

        @return: a Deferred that fires (never fails) once every session has ended or has
            been dropped.
        """
        self.stopping = True
        for session in list(self.sessions):
            session.go_away()
        ended: Deferred = Deferred()
        if self.sessions:
            self._all_ended.append(ended)
            ended.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda _result, _timeout: None)
        else:
            ended.callback(None)
        ended.addCallback(lambda _: self._drop_the_rest())
        return ended

    def _drop_the_rest(self) -> None:
        if self.sessions:
            log.debug("{count} WebSocket(s) did not close in time: dropping them",
                      count=len(self.sessions))
        for session in list(self.sessions):
            session.abort()

    def _ended(self, session: "_Session") -> None:
        self.sessions.discard(session)
        if not self.sessions and self._all_ended:
            waiting, self._all_ended = self._all_ended, []
            for ended in waiting:
                if not ended.called:
                    ended.callback(None)


_NOT_OWN = frozenset({b"server", b"date", b"content-type", b"content-length"})


def own_headers(request, given) -> list[tuple[bytes, bytes]]:
    """
    The response headers hubtwist itself put on C{request} before bridging it (the Hub
    gate's C{X-JupyterHub-Version}, say), for the 101 the bridge writes by hand; not
    twisted.web's defaults, and not a name C{given} (the app's) already has.
    """
    taken = {name.lower() for name, _ in given} | _NOT_OWN
    return [(name, value) for name, values in request.responseHeaders.getAllRawHeaders()
            if name.lower() not in taken for value in values]


def _bad_handshake(request) -> str:
    if request.clientproto != b"HTTP/1.1":
        return "A WebSocket handshake must use HTTP/1.1."
    if not request.requestHeaders.getRawHeaders(b"sec-websocket-key"):
        return "The WebSocket handshake has no Sec-WebSocket-Key header."
    body = getattr(request, "body", None)
    if body is not None and body.length != 0:
        return "A WebSocket handshake cannot have a request body."
    if b"upgrade" not in b",".join(request.requestHeaders.getRawHeaders(b"connection", [])).lower():
        return "The WebSocket handshake lacks 'Connection: Upgrade'."
    return ""


class _Session:
    """
    One bridged connection, from the handshake to the end. Subclasses say what happens on
    connect (L{backend_connected}) and how bytes flow once both sides are open.
    """

    def __init__(self, bridge: WebSocketBridge, request, route, address, target: bytes,
                 headers) -> None:
        self.bridge = bridge
        self.reactor = bridge.reactor
        self.request = request
        self.route = route
        self.address = address
        self.target = target
        self.headers = headers
        self.name = route.keeper.name
        self.server = server_label(self.name)
        self.opened_at: float | None = None  # monotonic time of the 101, for the metrics
        self.accepted = False  # the client has its 101
        self.client = None  # the client side protocol, once accepted
        self.backend = None  # the backend side protocol, once connected
        self.client_open = False
        self.backend_open = False
        self.client_gone_early = False
        self.connecting = None
        self.timeout_call = None
        self.ping_call = None
        self.ping_misses = 0
        self.client_heard = False
        self.finished = False
        self.touch = route.keeper.touch if route.counts_as_activity(target) else None
        self.ping_interval = route.config.websocket_ping_interval
        self.max_message = route.config.websocket_max_message_size

    # -- connecting ------------------------------------------------------------------------

    def start(self) -> None:
        if self.touch is not None:
            self.touch()
        self.request.notifyFinish().addErrback(self._client_lost_early)
        backend = _side()
        backend.dataReceived = self._handshake_data
        backend.connectionLost = self._backend_lost_early
        backend.connectionMade = lambda: self._connected(backend)
        self.backend = backend
        endpoint = self.address.endpoint(self.reactor, timeout=self.bridge.connect_timeout)
        self.connecting = connectProtocol(endpoint, backend)
        self.connecting.addErrback(self._connect_failed)

    def _connected(self, backend) -> None:
        self.connecting = None
        self.backend_open = True
        _no_delay(backend.transport)
        if self.client_gone_early:
            backend.transport.abortConnection()
            return
        self.backend_connected()

    def backend_connected(self) -> None:
        raise NotImplementedError

    def _connect_failed(self, failure) -> None:
        self.connecting = None
        self._end()
        if self.client_gone_early:
            return
        send_error(self.request, 502, "App not reachable",
                   f"The app {self.name!r} at {self.address.describe()} refused the WebSocket "
                   f"connection ({failure.getErrorMessage()}). It may have just exited; "
                   "hubtwist restarts it.", logs=self.route.keeper.logs.tail(20))

    def _client_lost_early(self, _failure) -> None:
        # Before the takeover: the client left while we were connecting or handshaking.
        if self.accepted:
            return
        self.client_gone_early = True
        self._cancel_timeout()
        if self.connecting is not None:
            self.connecting.cancel()
        elif self.backend_open:
            self.backend.transport.abortConnection()
        self._end()

    def _handshake_data(self, data: bytes) -> None:
        raise NotImplementedError

    def _backend_lost_early(self, reason) -> None:
        raise NotImplementedError

    def _cancel_timeout(self) -> None:
        if self.timeout_call is not None and self.timeout_call.active():
            self.timeout_call.cancel()
        self.timeout_call = None

    def fail_handshake(self, status: int, title: str, detail: str) -> None:
        """Answer the client with an error (nothing is upgraded) and drop the app's side."""
        self._cancel_timeout()
        if self.backend_open:
            self.backend.transport.abortConnection()
        self._end()
        if not self.client_gone_early and not self.accepted:
            self.request.setHeader(b"connection", b"close")
            send_error(self.request, status, title, detail)

    # -- accepting -------------------------------------------------------------------------

    def accept(self, response_head: bytes, backend_data: bytes) -> None:
        """
        Send the client C{response_head} (its 101), take its connection over and start the
        flow both ways; C{backend_data} is what the app sent after its own 101.
        """
        self._cancel_timeout()
        client_feed, backend_feed = self.flow()
        if self.ping_interval > 0:
            client_feed = self._client_data_heard(client_feed)
        client = _side()
        client.dataReceived = client_feed
        client.connectionLost = self.client_lost
        backend = self.backend
        backend.dataReceived = backend_feed
        backend.connectionLost = self.backend_lost
        self.accepted = True
        try:
            early = take_over(self.request, client)
        except TakeoverUnavailable as error:
            log.error("Cannot bridge WebSockets: {error}", error=str(error))
            self.accepted = False
            self.fail_handshake(501, "WebSockets not available", str(error))
            return
        self.client = client
        self.client_open = True
        self.opened_at = monotonic()
        if self.bridge.traffic is not None:
            self.bridge.traffic.websocket_opened(self.server)
        client_transport, backend_transport = client.transport, backend.transport
        _no_delay(client_transport)
        if self.bridge.use_pump and pumpable(client_transport) and pumpable(backend_transport):
            pump = self.bridge.pump
            self.client_end = pump.attach(client_transport)
            self.backend_end = pump.attach(backend_transport)
        else:
            self.client_end = TransportEnd(client_transport)
            self.backend_end = TransportEnd(backend_transport)
        self.bind()
        self.client_end.write(response_head)
        self.client_end.couple(self.backend_end)
        self.client_end.start(client_feed)
        self.backend_end.start(backend_feed)
        if self.ping_interval > 0:
            self.ping_call = self.reactor.callLater(self.ping_interval, self._ping)
        log.debug("[{server}] WebSocket open: {target}", server=self.name,
                  target=self.target.decode("latin-1"))
        if backend_data:
            backend_feed(backend_data)
        if early and self.client_open:
            client_feed(early)

    def flow(self):
        """Make the readers of both directions; return (client's feed, app's feed)."""
        raise NotImplementedError

    def bind(self) -> None:
        """The ends are known: point the readers' output at them."""
        raise NotImplementedError

    def _client_data_heard(self, feed):
        def heard(data: bytes) -> None:
            self.client_heard = True
            feed(data)
        return heard

    # -- keepalive -------------------------------------------------------------------------

    def _ping(self) -> None:
        self.ping_call = None
        if not self.client_open:
            return
        if self.client_heard:
            self.ping_misses = 0
            self.client_heard = False
        else:
            self.ping_misses += 1
            if self.ping_misses >= PING_MISSES:
                log.debug("[{server}] WebSocket client silent for {n} pings: disconnecting",
                          server=self.name, n=self.ping_misses)
                self.client_end.abort()
                return
        self.send_ping()
        self.ping_call = self.reactor.callLater(self.ping_interval, self._ping)

    def _messages(self, count: int) -> None:
        """Data messages passed: the app was used (installed only when that counts)."""
        self.touch()

    def send_ping(self) -> None:
        raise NotImplementedError

    def _own_pong(self) -> None:
        self.client_heard = True

    # -- the end ---------------------------------------------------------------------------

    def client_lost(self, reason) -> None:
        self.client_open = False
        self._stop_pinging()
        if self.backend_open:
            self.backend_end.peer_gone()
            self.backend_end.lose()
        self._maybe_end()

    def backend_lost(self, reason) -> None:
        raise NotImplementedError

    def _backend_gone(self) -> None:
        self.backend_open = False
        if self.client_open:
            self.client_end.peer_gone()

    def _stop_pinging(self) -> None:
        if self.ping_call is not None and self.ping_call.active():
            self.ping_call.cancel()
        self.ping_call = None

    def _maybe_end(self) -> None:
        if not self.client_open and not self.backend_open:
            self._end()

    def _end(self) -> None:
        if not self.finished:
            self.finished = True
            self._stop_pinging()
            self.bridge._ended(self)
            if self.opened_at is not None:
                self._count_closed()

    def _count_closed(self) -> None:
        bridge, request = self.bridge, self.request
        if bridge.traffic is not None:
            bridge.traffic.websocket_closed(self.server)
        if bridge.record is not None:
            started = getattr(request, "hubtwist_started", self.opened_at)
            bridge.record(self.server, request.method, request.uri, 101, monotonic() - started,
                          0, 0, getattr(request, "hubtwist_user", None),
                          getattr(request.getClientAddress(), "host", "-"), False)

    def abort(self) -> None:
        """Drop both connections now."""
        if self.connecting is not None:
            self.connecting.cancel()
        if self.accepted:
            if self.backend_open:
                self.backend_end.abort()
            if self.client_open:
                self.client_end.abort()
            return
        if self.backend_open:
            self.backend.transport.abortConnection()
        if not self.client_gone_early:
            self.fail_handshake(503, "Shutting down", "hubtwist is stopping.")

    def go_away(self) -> None:
        """hubtwist is stopping: close the WebSocket with 1001 (see L{WebSocketBridge.close_all});
        a handshake still under way is refused (503)."""
        if self.finished:
            return
        if self.accepted:
            self.close_going_away()
        else:
            self.abort()

    def close_going_away(self) -> None:
        """Start the close handshakes with 1001 (Going Away) on both sides."""
        raise NotImplementedError

    def lose_both(self) -> None:
        """Close both connections once what is buffered for them is written."""
        if self.client_open:
            self.client_end.lose()
        if self.backend_open:
            self.backend_end.lose()


class SpliceSession(_Session):
    """A client WebSocket spliced to the app's WebSocket (see the module doc)."""

    up: FrameSplicer  # client -> app
    down: FrameSplicer  # app -> client
    refusal: BodyReader | None = None

    def backend_connected(self) -> None:
        self.buffer = b""
        self.backend.transport.write(handshake_request(self.target, self.headers.getAllRawHeaders()))
        timeout = self.route.config.request_timeout
        if timeout:
            self.timeout_call = self.reactor.callLater(timeout, self._handshake_timeout)

    def _handshake_timeout(self) -> None:
        self.timeout_call = None
        self.fail_handshake(504, "App timed out",
                            f"The app {self.name!r} did not answer the WebSocket handshake within "
                            f"{self.route.config.request_timeout:g} s (request_timeout).")

    def _handshake_data(self, data: bytes) -> None:
        if self.refusal is not None:
            self._refusal_data(data)
            return
        self.buffer += data
        while True:
            try:
                parsed = parse_head(self.buffer)
            except HandshakeError as error:
                self._bad_answer(str(error))
                return
            if parsed is None:
                return
            head, rest = parsed
            if head.interim:
                self.buffer = rest  # an interim response (100 Continue, 103 Early Hints)
                continue
            break
        self.buffer = b""
        if head.code == 101:
            self._switching(head, rest)
        else:
            self._refused(head, rest)

    def _bad_answer(self, what: str) -> None:
        self.fail_handshake(502, "Bad WebSocket handshake from the app",
                            f"The app {self.name!r} answered the WebSocket handshake wrongly: "
                            f"{what}.")

    def _switching(self, head, rest: bytes) -> None:
        if b"websocket" not in connection_tokens([head.upgrade]):
            self._bad_answer("its 101 does not say 'Upgrade: websocket'")
            return
        key = self.request.requestHeaders.getRawHeaders(b"sec-websocket-key")[0]
        if head.get(b"sec-websocket-accept") != [accept_key(key)]:
            self._bad_answer("its Sec-WebSocket-Accept does not match the key")
            return
        headers = mapped_headers(self.request, self.route, head.headers)
        self.accept(switching_protocols(own_headers(self.request, headers) + headers), rest)

    def flow(self):
        on_messages = self._messages if self.touch is not None else None
        self.up = FrameSplicer(
            _unbound, masked=True, max_message=self.max_message,
            on_messages=on_messages, on_close=self._close_seen,
            on_too_big=lambda: self._too_big(self.up, self.down, "the browser"),
            on_own_pong=self._own_pong)
        self.down = FrameSplicer(
            _unbound, masked=False, max_message=self.max_message, on_messages=on_messages,
            on_close=self._close_seen,
            on_too_big=lambda: self._too_big(self.down, self.up, "the app"))
        return self.up.feed, self.down.feed

    def bind(self) -> None:
        self.up.out = self.up.write = self.backend_end.write
        self.down.out = self.down.write = self.client_end.write

    def send_ping(self) -> None:
        down = self.down
        if down.forwarding and down.at_boundary:
            self.up.own_pong = PING_PAYLOAD
            down.inject(encode_frame(OP_PING, PING_PAYLOAD))

    def close_going_away(self) -> None:
        up, down = self.up, self.down
        if up.close_code is not None or down.close_code is not None:
            return  # a close handshake is under way: it ends the session
        log.debug("[{server}] WebSocket: closing it, hubtwist is stopping", server=self.name)
        # Each frame goes out at the next boundary of its direction; the answers (read, not
        # passed on: both splicers stop) complete the handshakes in _close_seen.
        if self.client_open:
            down.inject(close_frame(CLOSE_GOING_AWAY, GOING_AWAY_REASON), then_stop=True)
        if self.backend_open:
            up.inject(close_frame(CLOSE_GOING_AWAY, GOING_AWAY_REASON, masked=True),
                      then_stop=True)

    def _close_seen(self) -> None:
        # A close frame passed in one direction; once both have, the WebSocket is closed.
        if self.up.close_code is not None and self.down.close_code is not None:
            log.debug("[{server}] WebSocket closed: {code} {reason!r}", server=self.name,
                      code=self.up.close_code, reason=self.up.close_reason)
            self.lose_both()

    def _too_big(self, source: FrameSplicer, reverse: FrameSplicer, who: str) -> None:
        reason = f"message from {who} over {self.max_message} bytes"
        log.debug("[{server}] WebSocket closed: {reason}", server=self.name, reason=reason)
        # `source` is at a boundary: its receiver gets the close now.
        source.inject(close_frame(CLOSE_TOO_BIG, reason, masked=source.masked), then_stop=True)
        if reverse.forwarding and reverse.at_boundary:
            reverse.inject(close_frame(CLOSE_TOO_BIG, reason, masked=reverse.masked),
                           then_stop=True)
        else:
            reverse.stop()  # mid-frame: its receiver sees the connection end (1006)
        self.lose_both()

    def backend_lost(self, reason) -> None:
        self._backend_gone()
        if self.client_open:
            down = self.down
            if down.close_code is None and down.forwarding and down.at_boundary:
                if self.up.close_code is not None:
                    # The client closed and the app left without answering: answer for it.
                    frame = close_frame(self.up.close_code, self.up.close_reason)
                else:
                    frame = close_frame(CLOSE_INTERNAL_ERROR, "the app closed the connection")
                    log.debug("[{server}] WebSocket: the app closed the connection without a "
                              "close frame ({why})", server=self.name,
                              why=reason.getErrorMessage())
                down.inject(frame, then_stop=True)
            self.up.stop()
            self.client_end.lose()
        self._maybe_end()

    # -- before the 101 ----------------------------------------------------------------------

    def _backend_lost_early(self, reason) -> None:
        self.backend_open = False
        if self.refusal is not None:
            self._refusal_ended()
            return
        if not self.client_gone_early:
            self.fail_handshake(502, "App not reachable",
                                f"The app {self.name!r} closed the connection instead of answering "
                                "the WebSocket handshake.")
        self._end()

    def _refused(self, head, rest: bytes) -> None:
        """Pass the app's refusal (any non-101 answer) on to the client, body included."""
        self._cancel_timeout()
        try:
            self.refusal = BodyReader(head)
        except HandshakeError as error:
            self._bad_answer(str(error))
            return
        request = self.request
        request.setResponseCode(head.code, head.phrase)
        request.from_app = True  # the app's refusal, not hubtwist's answer
        out = request.responseHeaders
        out.removeHeader(b"server")
        out.removeHeader(b"date")
        for name, value in mapped_headers(request, self.route, head.headers):
            out.addRawHeader(name, value)
        if self.refusal.length is not None:
            out.setRawHeaders(b"content-length", [b"%d" % self.refusal.length])
        # The client may already have sent frames: never read them as a next request.
        out.setRawHeaders(b"connection", [b"close"])
        request.channel.persistent = False
        request.write(b"")
        request.registerProducer(self.backend.transport, True)
        self._refusal_data(rest)

    def _refusal_data(self, data: bytes) -> None:
        if self.client_gone_early or self.request.finished:
            return
        try:
            body = self.refusal.feed(data)
        except HandshakeError:
            self.request.unregisterProducer()
            self.request.loseConnection()
            self.backend.transport.abortConnection()
            return
        if body:
            self.request.write(body)
        if self.refusal.done:
            self.request.unregisterProducer()
            self.request.finish()
            self.backend.transport.loseConnection()

    def _refusal_ended(self) -> None:
        request = self.request
        if not self.client_gone_early and not request.finished:
            request.unregisterProducer()
            if self.refusal.until_close:
                request.finish()
            else:
                request.loseConnection()  # the body was cut short
        self._end()


class RawSession(_Session):
    """
    A client WebSocket bridged to a plain socket: data frames become bytes to the app, the
    app's bytes become binary messages (websockify's and jupyter-server-proxy's
    C{raw_socket_proxy}).
    """

    def backend_connected(self) -> None:
        request = self.request
        key = request.requestHeaders.getRawHeaders(b"sec-websocket-key")[0]
        headers = [(b"Sec-WebSocket-Accept", accept_key(key))]
        chosen = select_raw_subprotocol(request.requestHeaders.getRawHeaders(b"sec-websocket-protocol", []))
        if chosen is not None:
            headers.append((b"Sec-WebSocket-Protocol", chosen))
        self.accept(switching_protocols(own_headers(request, headers) + headers), b"")

    def _handshake_data(self, data: bytes) -> None:
        pass  # not reached: the 101 goes out as soon as the socket is connected

    def _backend_lost_early(self, reason) -> None:
        self.backend_open = False
        self._end()

    def flow(self):
        self.decoder = FrameDecoder(
            on_data=_unbound, on_control=self._control,
            on_messages=self._messages if self.touch is not None else None,
            on_too_big=self._too_big, on_invalid=self._invalid, max_message=self.max_message)
        self.close_sent = False
        return self.decoder.feed, self._from_app

    def bind(self) -> None:
        self.decoder.on_data = self.backend_end.write
        self.to_client = self.client_end.write

    def _from_app(self, data: bytes) -> None:
        if self.close_sent:
            return
        if self.touch is not None:
            self.touch()
        self.to_client(frame_header(OP_BINARY, len(data)) + data)

    def _send_close(self, code: int | None, reason: str = "") -> None:
        if not self.close_sent and self.client_open:
            self.close_sent = True
            self.to_client(encode_frame(OP_CLOSE, close_payload(code, reason)))

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            if not self.close_sent:
                self.to_client(encode_frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            if payload == PING_PAYLOAD:
                self._own_pong()
        elif opcode == OP_CLOSE:
            code, reason = parse_close(payload)
            log.debug("[{server}] WebSocket closed by the client: {code} {reason!r}",
                      server=self.name, code=code, reason=reason)
            self.decoder.failed = True  # nothing after a close frame
            self._send_close(code, reason)
            self.lose_both()

    def _too_big(self) -> None:
        reason = f"message from the browser over {self.max_message} bytes"
        log.debug("[{server}] WebSocket closed: {reason}", server=self.name, reason=reason)
        self._send_close(CLOSE_TOO_BIG, reason)
        self.lose_both()

    def _invalid(self, what: str) -> None:
        log.debug("[{server}] WebSocket closed: the browser sent {what}", server=self.name,
                  what=what)
        self._send_close(CLOSE_PROTOCOL_ERROR, what)
        self.lose_both()

    def close_going_away(self) -> None:
        # What goes to the client is always whole frames: the close can go out now. The
        # client's answer (in _control) closes both connections.
        if self.client_open and not self.close_sent:
            log.debug("[{server}] WebSocket: closing it, hubtwist is stopping", server=self.name)
            self._send_close(CLOSE_GOING_AWAY, GOING_AWAY_REASON)

    def send_ping(self) -> None:
        if not self.close_sent:
            self.to_client(encode_frame(OP_PING, PING_PAYLOAD))

    def backend_lost(self, reason) -> None:
        self._backend_gone()
        if self.client_open:
            if reason.check(ConnectionDone):
                self._send_close(CLOSE_NORMAL, "the app closed the connection")
            else:
                self._send_close(CLOSE_INTERNAL_ERROR, "the app's connection was lost")
            self.client_end.lose()
        self._maybe_end()
