"""
A lean HTTP/1.1 client for talking to apps: pooled keep-alive connections per backend
address, the request head written in one piece, the response head parsed in one piece,
and the body handed on as it arrives, with backpressure.

Why not L{twisted.web.client.Agent}: measured on the proxy's hot path, Agent (URI parsing,
header objects with per-value sanitising, a line-by-line parser, several Deferreds per
request) cost about 300 us of CPU per small request, more than the rest of hubtwist put
together. A proxy knows its headers are already valid (they came off a parsed request) and
only needs: status, headers as pairs, and body framing. L{UpstreamPool.request} is the
whole surface.

Retries: a request without a body that fails on a reused connection before any byte of
the response arrived is retried once on a new connection (the app closed an idle
keep-alive connection as we picked it). Requests with a body are never retried.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from hubtwist.proxy.rewrite import (
    HOP_BY_HOP, has_line_breaks, is_header_name, only_crlf_line_ends, without_line_breaks,
)
from hubtwist.proxy.sending import direct_writer
from hubtwist.proxy.splicing import HAVE_SPLICE, SPLICE_MIN, BodySplice, spliceable
from hubtwist.supervise import BackendAddress

MAX_HEAD = 65536
READ_SIZE = 262144
_INTERIM = object()
_AFTER_CHUNK = -2
_TRAILERS = -1


class UpstreamError(Exception):
    """The app closed the connection or sent something that is not an HTTP/1.x response."""


class UpstreamResponse:
    """A response head from the app, and its body to come through L{deliver}."""

    __slots__ = ("code", "phrase", "headers", "length", "_connection")

    def __init__(self, code: int, phrase: bytes, headers: list, length: int | None, connection) -> None:
        self.code = code
        self.phrase = phrase
        self.headers = headers  # [(name, value)] as received
        self.length = length  # None when not known in advance (chunked, or until close)
        self._connection = connection

    def deliver(self, write: Callable[[bytes], None], done: Callable[[Failure | None], None]):
        """
        Send the body to C{write} as it arrives; C{done(None)} at its end, or
        C{done(failure)} if the connection broke. Returns the producer (pause/resume/stop)
        that controls the flow: register it with the consumer for backpressure.
        """
        return self._connection.deliver(write, done)

    def splice_ready(self, sink) -> bool:
        """Whether the rest of the body can go to C{sink} (a client transport) by splice:
        a fixed length of at least L{SPLICE_MIN}, plain sockets on both sides."""
        return self._connection._splice_ready(sink)

    def take_read_ahead(self) -> bytes:
        """The body bytes read together with the head (to send before a splice)."""
        return self._connection._take_read_ahead()

    def splice_to(self, sink, done: Callable[[Failure | None], None]):
        """
        Move the rest of the body to C{sink} in the kernel (L{BodySplice}); C{done} as in
        L{deliver}, with a L{ClientGone} failure when the client's side broke. Returns a
        producer whose C{stopProducing} stops the move and drops the app's connection.
        """
        return self._connection._splice_to(sink, done)


class _Connection(Protocol):
    """One keep-alive HTTP/1.1 connection to an app."""

    def __init__(self, pool: "UpstreamPool", address: BackendAddress) -> None:
        self._pool = pool
        self._address = address
        self._reset()
        self.reused = False
        self.idle_since = 0.0
        self.send_now = None  # the transport's direct writer, once connected
        self._splice = None  # a BodySplice moving the body, meanwhile

    def connectionMade(self) -> None:
        self.send_now = direct_writer(self.transport)

    def _reset(self) -> None:
        self._waiting: Deferred | None = None
        self._head = b""
        self._head_done = False
        self._method_head = False
        self._remaining: int | None = 0
        self._chunked = False
        self._chunk_state = b""
        self._until_close = False
        self._reusable = True
        self._write = None
        self._done = None
        self._pending_body = b""
        self._request_sent = True
        self._got_bytes = False

    # -- sending -------------------------------------------------------------------------

    def send(self, method: bytes, target: bytes, headers: list, body) -> Deferred:
        self._reset()
        self._waiting = Deferred(self._cancel)
        self._method_head = method == b"HEAD"
        lines = [method, b" ", target, b" HTTP/1.1\r\n"]
        for name, value in headers:
            lines += [name, b": ", value, b"\r\n"]
        if body is None:
            if method in (b"POST", b"PUT", b"PATCH"):
                lines.append(b"Content-Length: 0\r\n")
            lines.append(b"\r\n")
            self.send_now(b"".join(lines))
        else:
            self._request_sent = False
            chunked = not isinstance(body.length, int)
            lines.append(b"Transfer-Encoding: chunked\r\n\r\n" if chunked
                         else b"Content-Length: %d\r\n\r\n" % body.length)
            self.send_now(b"".join(lines))
            _BodySender(self, body, chunked).start()
        return self._waiting

    def _cancel(self, _deferred) -> None:
        self._waiting = None
        self._reusable = False
        self.transport.abortConnection()

    # -- receiving ------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self._got_bytes = True
        while not self._head_done:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    self._fail_head("the response head is larger than 64 KiB")
                return
            head, data = self._head[:end], self._head[end + 4:]
            self._head = b""
            if self._waiting is None:
                return  # cancelled meanwhile; the connection is being aborted
            outcome = self._parse_head(head, data)
            if outcome is _INTERIM:
                continue  # 100 Continue and friends: the real head follows
            return  # failed, or answered: the rest of `data` went with the response
        if data:
            self._body_data(data)

    def _parse_head(self, head: bytes, rest: bytes):
        """The response head -> the waiting request's L{UpstreamResponse}, with C{rest}
        (what followed the head in the same read) ready for its C{deliver}: a small
        response then reaches the client head and body in one write."""
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
            self._fail_head("the app did not answer with HTTP/1.x")
            return None
        code = int(status[1])
        if 100 <= code < 200 and code != 101:
            return _INTERIM
        suspect = not only_crlf_line_ends(head)  # rare: then each value is checked
        headers = []
        length = None
        declared_length = None
        named = ()  # headers the app's Connection header makes hop-by-hop
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not is_header_name(name):
                continue  # not a header line; twisted.web would refuse to send it anyway
            value = value.strip()
            if suspect and has_line_breaks(value):
                value = without_line_breaks(value)  # a lone CR/LF must not start a header
            lower = name.lower()
            if lower == b"content-length":
                length = int(value) if value.isdigit() else None
                declared_length = (name, value)
            elif lower == b"transfer-encoding":
                self._chunked = b"chunked" in value.lower()
            elif lower == b"connection":
                tokens = [token.strip() for token in value.lower().split(b",")]
                if b"close" in tokens:
                    self._reusable = False
                named = (*named, *tokens)
            elif lower not in HOP_BY_HOP:
                headers.append((name, value))
        if named:
            headers = [(name, value) for name, value in headers if name.lower() not in named]
        if status[0] == b"HTTP/1.0":
            self._reusable = False
        self._head_done = True
        if self._method_head or code in (204, 304):
            self._remaining, self._chunked = 0, False
            if self._method_head:
                length = 0
                if declared_length is not None:  # what a GET would get: no body follows
                    headers.append(declared_length)
        elif self._chunked:
            self._remaining, length = None, None
        elif length is not None:
            self._remaining = length
        else:
            self._until_close, self._reusable, self._remaining = True, False, None
        waiting, self._waiting = self._waiting, None
        self._pending_body = rest
        phrase = status[2] if len(status) > 2 else b""
        if suspect and has_line_breaks(phrase):
            phrase = without_line_breaks(phrase)
        waiting.callback(UpstreamResponse(code, phrase, headers, length, self))
        return True

    def _fail_head(self, why: str) -> None:
        self._reusable = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(UpstreamError(why))
        self.transport.abortConnection()

    def deliver(self, write, done):
        self._write, self._done = write, done
        pending, self._pending_body = self._pending_body, b""
        if pending:
            self._body_data(pending)
        elif self._remaining == 0 and not self._chunked and not self._until_close:
            self._body_finished()
        return _BodyFlow(self)

    def _body_data(self, data: bytes) -> None:
        if self._write is None:
            self._pending_body += data
            return
        if self._chunked:
            self._chunk_data(data)
        elif self._until_close:
            self._write(data)
        else:
            if len(data) > self._remaining:
                data = data[: self._remaining]  # bytes beyond the framing: ignore them
                self._reusable = False
            self._remaining -= len(data)
            if data:
                self._write(data)
            if self._remaining == 0:
                self._body_finished()

    def _chunk_data(self, data: bytes) -> None:
        """Decode C{Transfer-Encoding: chunked}; C{_remaining} is the state: bytes left in
        the current chunk (> 0), None (a size line is next), _AFTER_CHUNK (its CRLF is
        next) or _TRAILERS (trailer lines until an empty one)."""
        buffer = self._chunk_state + data
        self._chunk_state = b""
        while buffer:
            state = self._remaining
            if state is not None and state > 0:
                piece = buffer[:state]
                buffer = buffer[len(piece):]
                self._remaining = state - len(piece)
                self._write(piece)
                if self._remaining == 0:
                    self._remaining = _AFTER_CHUNK
                continue
            if state == _AFTER_CHUNK:
                if len(buffer) < 2:
                    self._chunk_state = buffer
                    return
                buffer, self._remaining = buffer[2:], None
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._malformed_chunk()
                    return
                self._chunk_state = buffer
                return
            line, buffer = buffer[:end], buffer[end + 2:]
            if state == _TRAILERS:
                if not line:
                    self._body_finished()
                    return
                continue
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._malformed_chunk()
                return
            self._remaining = size if size else _TRAILERS

    def _malformed_chunk(self) -> None:
        self._reusable = False
        self._end_body(Failure(UpstreamError("the app sent a malformed chunked body")))
        self.transport.abortConnection()

    def _body_finished(self) -> None:
        self._end_body(None)

    # -- splicing (see hubtwist.proxy.splicing) ----------------------------------------------

    def _splice_ready(self, sink) -> bool:
        return (HAVE_SPLICE and not self._chunked and not self._until_close
                and self._write is None and self._remaining is not None
                and self._remaining - len(self._pending_body) >= SPLICE_MIN
                and spliceable(self.transport) and spliceable(sink))

    def _take_read_ahead(self) -> bytes:
        pending, self._pending_body = self._pending_body, b""
        self._remaining -= len(pending)
        return pending

    def _splice_to(self, sink, done):
        self._done = done
        self._write = _no_write  # nothing reaches the protocol while the kernel moves it
        self._splice = BodySplice(self._pool._reactor, self.transport, sink, self._remaining,
                                  self._spliced)
        self._splice.start()
        return _SpliceFlow(self)

    def _spliced(self, failure: Failure | None) -> None:
        self._splice = None
        if failure is None:
            self._remaining = 0
            self._end_body(None)
            return
        self._reusable = False
        self._end_body(failure)
        self.transport.abortConnection()

    def _stop_splice(self) -> None:
        splice, self._splice = self._splice, None
        if splice is not None:
            splice.stop()
        self._reusable = False
        self._done = self._write = None
        self.transport.abortConnection()

    def _end_body(self, failure: Failure | None) -> None:
        done, self._done, self._write = self._done, None, None
        if done is None:
            return
        self._head_done = False
        if failure is None and self._reusable and self._request_sent:
            # The client may have paused us just before the body ended; an idle connection
            # must be reading again, or its next response would never be seen.
            self.transport.resumeProducing()
            self._pool._release(self._address, self)
        elif failure is None and not self._request_sent:
            # The app answered before it read the whole upload: the response is complete,
            # the rest of the upload is not wanted; dropping the connection also stops the
            # upload (its producer is told to stop).
            self.transport.abortConnection()
        elif failure is None:
            self.transport.loseConnection()
        done(failure)

    def connectionLost(self, reason=ConnectionDone) -> None:
        self._pool._lost(self._address, self)
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(_NeverAnswered(self.reused and not self._got_bytes, reason))
            return
        if self._done is not None:
            if self._until_close and reason.check(ConnectionDone):
                self._end_body(None)
            else:
                self._end_body(Failure(UpstreamError("the app closed the connection mid-response")))


def _no_write(_data: bytes) -> None:
    pass


class _SpliceFlow:
    """The producer of a spliced body: only stopping it means anything (the pipe paces)."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self._connection._stop_splice()


class _BodyFlow:
    """The producer of a response body: pausing it stops reading from the app."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    def pauseProducing(self) -> None:
        self._connection.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._connection.transport.resumeProducing()

    def stopProducing(self) -> None:
        """The client went away: drop the app's response and its connection."""
        connection = self._connection
        connection._reusable = False
        connection._done = connection._write = None
        connection.transport.abortConnection()


class _NeverAnswered(UpstreamError):
    def __init__(self, retryable: bool, reason) -> None:
        self.retryable = retryable
        self.reason = reason
        super().__init__("the app closed the connection without answering")


class _BodySender:
    """Streams a request body producer into the connection (chunk-encoding if needed)."""

    def __init__(self, connection: _Connection, body, chunked: bool) -> None:
        self._connection = connection
        self._body = body
        self._chunked = chunked

    def start(self) -> None:
        transport = self._connection.transport
        transport.registerProducer(self._body, True)
        self._body.startProducing(self).addCallbacks(self._finished, self._failed)

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._connection.send_now(data)

    def _finished(self, _) -> None:
        transport = self._connection.transport
        transport.unregisterProducer()
        if self._chunked:
            transport.write(b"0\r\n\r\n")
        self._connection._request_sent = True

    def _failed(self, failure) -> None:
        self._connection._reusable = False
        transport = self._connection.transport
        transport.unregisterProducer()
        transport.abortConnection()


class UpstreamPool:
    """
    Keep-alive connections to apps, per L{BackendAddress}: up to C{per_host} idle ones are
    kept for C{idle_timeout} seconds (below the usual app keep-alive, so we rarely pick a
    connection the app is closing).
    """

    def __init__(self, reactor, *, per_host: int = 64, idle_timeout: float = 4.0) -> None:
        self._reactor = reactor
        self._per_host = per_host
        self._idle_timeout = idle_timeout
        self._idle: dict[BackendAddress, deque[_Connection]] = {}
        self._sweeper = None

    def request(self, address: BackendAddress, method: bytes, target: bytes, headers: list, body) -> Deferred:
        """
        Send one request (C{headers} as (name, value) byte pairs, without framing headers;
        C{body} an L{IBodyProducer} or None). Fires with an L{UpstreamResponse}; cancel it
        to abort the connection.
        """
        # (cancelling it cancels what it waits on: the connect, the response, a retry)
        return self._attempt(address, method, target, headers, body, retry=body is None)

    def _attempt(self, address, method, target, headers, body, retry: bool) -> Deferred:
        idle = self._idle.get(address)
        while idle:
            connection = idle.pop()
            if connection.transport is not None and connection.transport.connected:
                connection.reused = True
                sending = connection.send(method, target, headers, body)
                if retry:
                    sending.addErrback(self._retry_on_stale, address, method, target, headers, body)
                return sending
        return self._connect(address).addCallback(
            lambda connection: connection.send(method, target, headers, body))

    def _retry_on_stale(self, failure, address, method, target, headers, body):
        if failure.check(_NeverAnswered) and failure.value.retryable:
            return self._attempt(address, method, target, headers, body, retry=False)
        return failure

    def _connect(self, address: BackendAddress) -> Deferred:
        factory = Factory.forProtocol(lambda: _Connection(self, address))
        factory.noisy = False
        return address.endpoint(self._reactor, timeout=10).connect(factory).addCallback(_no_delay)

    def _release(self, address: BackendAddress, connection: _Connection) -> None:
        idle = self._idle.setdefault(address, deque())
        if len(idle) >= self._per_host:
            connection.transport.loseConnection()
            return
        connection.idle_since = self._reactor.seconds()
        idle.append(connection)
        if self._sweeper is None:
            # One timer for the whole pool, not one per request: the sweep closes
            # connections idle for longer than idle_timeout.
            self._sweeper = self._reactor.callLater(self._idle_timeout / 4, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        oldest_allowed = self._reactor.seconds() - self._idle_timeout
        remaining = False
        for idle in self._idle.values():
            # Connections are appended as they are released: the stale ones are at the left.
            while idle and idle[0].idle_since <= oldest_allowed:
                idle.popleft().transport.loseConnection()
            remaining = remaining or bool(idle)
        if remaining:
            self._sweeper = self._reactor.callLater(self._idle_timeout / 4, self._sweep)

    def _lost(self, address: BackendAddress, connection: _Connection) -> None:
        idle = self._idle.get(address)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> Deferred:
        """Close every idle connection (at shutdown)."""
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None
        for idle in self._idle.values():
            while idle:
                idle.pop().transport.loseConnection()
        return succeed(None)


def _no_delay(protocol):
    """
    Nagle off: a head and a body written apart must not wait for the peer's delayed ACK.
    And larger reads: Twisted reads 64 KiB per wake-up; bulk responses pass in fewer,
    larger pieces with 256 KiB, at no cost for small ones.
    """
    transport = protocol.transport
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:  # not on unix sockets
        set_no_delay(True)
    transport.bufferSize = READ_SIZE
    transport.SEND_LIMIT = READ_SIZE  # uploads: one send per piece read from the client
    return protocol


__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse"]
