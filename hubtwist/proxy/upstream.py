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

Retries: a GET, HEAD, OPTIONS or TRACE without a body that fails on a reused connection
before any byte of the response arrived is retried once on a new connection (the app closed
an idle keep-alive connection as we picked it). Other methods are never sent twice: the app
may have acted on the first one before its connection died (what twisted.web.client does).

Limits (L{BackendLimits}, in the spirit of HAProxy's C{maxconn}): per backend address, at
most C{max_connections} connections are open and at most C{max_connecting} are unproven
(being connected, or connected without a first response yet: the app may not have accepted
them). Requests beyond that wait in a FIFO queue and take keep-alive connections as they
free up; one that waits longer than C{queue_timeout} fails with L{BackendBusy}. Without
this, a burst of requests that waited for an app to start opened one connection each in
the same tick: an app with a small listen backlog (Python's C{http.server}: 5) dropped the
SYNs it could not queue, and the answers came in waves of SYN retransmits, up to tens of
seconds apart. Limiting unproven connections bounds what sits in the app's accept queue.

Stalled clients: a response body whose consumer (the client's connection) keeps it paused
for C{stall_timeout} seconds without taking a byte gets the C{stalled} callback given to
L{UpstreamResponse.deliver} (the exchanges drop the client; that drops the app's
connection too). A slow client that still reads is never cut.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from hubtwist.proxy.http1 import (
    MAX_HEAD, ChunkedDecoder, WireError, is_idempotent, parse_response_head, request_head,
    response_head_end,
)
from hubtwist.proxy.sending import direct_writer
from hubtwist.proxy.twisted_private import queued_bytes
from hubtwist.proxy.splicing import HAVE_SPLICE, SPLICE_MIN, BodySplice, spliceable
from hubtwist.supervise import BackendAddress

READ_SIZE = 262144
STALL_TIMEOUT = 60.0
_BODYLESS_WITH_LENGTH = frozenset({b"POST", b"PUT", b"PATCH"})


class UpstreamError(Exception):
    """The app closed the connection or sent something that is not an HTTP/1.x response."""


class BackendBusy(Exception):
    """A request waited longer than C{queue_timeout} for a connection to its app.

    @ivar waited: the seconds it waited.
    @ivar queued: the requests that were waiting for the same app then (itself included).
    """

    def __init__(self, waited: float, queued: int) -> None:
        self.waited = waited
        self.queued = queued
        super().__init__(f"no connection to the app was free within {waited:g} s "
                         f"({queued} requests waiting)")


def _positive_int(_instance, attribute, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{attribute.name} must be a whole number >= 1, not {value!r}")


def _positive_number(_instance, attribute, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number > 0, not {value!r}")


@attrs.frozen
class BackendLimits:
    """
    How many connections one app gets (see the module docstring).

    @ivar max_connections: open connections at most (busy, idle and being opened).
    @ivar max_connecting: connections being opened or not yet answered at most.
    @ivar queue_timeout: seconds a request may wait for a connection.
    """

    max_connections: int = attrs.field(default=256, validator=_positive_int)
    max_connecting: int = attrs.field(default=4, validator=_positive_int)
    queue_timeout: float = attrs.field(default=30.0, validator=_positive_number)


DEFAULT_LIMITS = BackendLimits()


class UpstreamResponse:
    """A response head from the app, and its body to come through L{deliver}."""

    __slots__ = ("code", "phrase", "headers", "length", "_connection")

    def __init__(self, code: int, phrase: bytes, headers: list, length: int | None, connection) -> None:
        self.code = code
        self.phrase = phrase
        self.headers = headers  # [(name, value)]: end-to-end, clean (hubtwist.proxy.http1)
        self.length = length  # None when not known in advance (chunked, or until close)
        self._connection = connection

    def deliver(self, write: Callable[[bytes], None], done: Callable[[Failure | None], None],
                client=None, stalled: Callable[[], None] | None = None):
        """
        Send the body to C{write} as it arrives; C{done(None)} at its end, or
        C{done(failure)} if the connection broke. Returns the producer (pause/resume/stop)
        that controls the flow: register it with the consumer for backpressure. When the
        consumer keeps it paused for the pool's C{stall_timeout} while C{client} (the
        client's transport) takes nothing of what is queued for it, C{stalled()} is called.
        """
        return self._connection.deliver(write, done, client, stalled)

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
        L{deliver}, with a L{ClientGone} failure when the client's side broke or took
        nothing for C{stall_timeout}. Returns a producer whose C{stopProducing} stops the
        move and drops the app's connection.
        """
        return self._connection._splice_to(sink, done)


class _Connection(Protocol):
    """
    One keep-alive HTTP/1.1 connection to an app.

    @ivar reused: it answered a request before the current one.
    @ivar proven: it answered at least one response head (the app accepted it).
    @ivar counted: the pool counts it in its backend's limits (it opened it).
    @ivar idle_since: when it was last released to the pool.
    """

    def __init__(self, pool: "UpstreamPool", address: BackendAddress) -> None:
        self._pool = pool
        self._address = address
        self._reset()
        self.reused = False
        self.proven = False
        self.counted = False
        self.idle_since = 0.0
        self.send_now = None  # the transport's direct writer, once connected
        self._splice = None  # a BodySplice moving the body, meanwhile

    def connectionMade(self) -> None:
        self.send_now = direct_writer(self.transport)

    def _reset(self) -> None:
        self._waiting: Deferred | None = None
        self._head = b""
        self._head_done = False
        self._method = b"GET"
        self._remaining: int | None = 0
        self._chunks: ChunkedDecoder | None = None
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
        self._method = method
        if body is None:
            framing = b"Content-Length: 0\r\n" if method in _BODYLESS_WITH_LENGTH else b""
            self.send_now(request_head(method, target, headers, framing))
        else:
            self._request_sent = False
            chunked = not isinstance(body.length, int)
            framing = (b"Transfer-Encoding: chunked\r\n" if chunked
                       else b"Content-Length: %d\r\n" % body.length)
            self.send_now(request_head(method, target, headers, framing))
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
            end, rest = response_head_end(self._head)
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    self._fail_head("the response head is larger than 64 KiB")
                return
            head, data = self._head[:end], self._head[rest:]
            self._head = b""
            if self._waiting is None:
                return  # cancelled meanwhile; the connection is being aborted
            if not self._parse_head(head, data):
                return  # failed, or answered: the rest of `data` went with the response
            # else 100 Continue and friends: the real head follows
        if data:
            self._body_data(data)

    def _parse_head(self, head: bytes, rest: bytes) -> bool:
        """The response head -> the waiting request's L{UpstreamResponse}, with C{rest}
        (what followed the head in the same read) ready for its C{deliver}: a small
        response then reaches the client head and body in one write. True for an interim
        (1xx) head: another one follows."""
        try:
            parsed = parse_response_head(head)
        except WireError as error:
            self._fail_head(str(error))
            return False
        if parsed.interim:
            return True
        if not self.proven:
            self.proven = True
            self._pool._proven(self)
        if not parsed.keep_alive:
            self._reusable = False
        self._head_done = True
        length = parsed.body_length(self._method)
        headers = parsed.headers
        if length == 0:
            self._remaining = 0
            if self._method == b"HEAD" and parsed.length is not None:
                # what a GET would get; no body follows
                headers = [*headers, (b"Content-Length", b"%d" % parsed.length)]
        elif parsed.chunked:
            self._remaining, self._chunks = None, ChunkedDecoder()
        elif length is not None:
            self._remaining = length
        else:
            self._until_close, self._reusable, self._remaining = True, False, None
        if parsed.length is not None and parsed.transfer_encoded:
            self._reusable = False  # both framings given: do not trust what follows
        waiting, self._waiting = self._waiting, None
        self._pending_body = rest
        waiting.callback(UpstreamResponse(parsed.code, parsed.phrase, headers, length, self))
        return False

    def _fail_head(self, why: str) -> None:
        self._reusable = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(UpstreamError(why))
        self.transport.abortConnection()

    def deliver(self, write, done, client=None, stalled=None):
        self._write, self._done = write, done
        pending, self._pending_body = self._pending_body, b""
        if pending:
            self._body_data(pending)
        elif self._remaining == 0 and self._chunks is None and not self._until_close:
            self._body_finished()
        return _BodyFlow(self, client, stalled)

    def _body_data(self, data: bytes) -> None:
        if self._write is None:
            self._pending_body += data
            return
        if self._chunks is not None:
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
        decoder = self._chunks
        try:
            pieces = decoder.feed(data)
        except WireError as error:
            self._reusable = False
            self._end_body(Failure(UpstreamError(f"the app sent a malformed chunked body: {error}")))
            self.transport.abortConnection()
            return
        write = self._write
        for piece in pieces:
            write(piece)
            if self._write is None:
                return  # the consumer went away while writing
        if decoder.done:
            if decoder.rest:
                self._reusable = False  # bytes beyond the framing
            self._body_finished()

    def _body_finished(self) -> None:
        self._end_body(None)

    # -- splicing (see hubtwist.proxy.splicing) ----------------------------------------------

    def _splice_ready(self, sink) -> bool:
        return (HAVE_SPLICE and self._chunks is None and not self._until_close
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
                                  self._spliced, stall_timeout=self._pool.stall_timeout)
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
        self._chunks = None
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
    """
    The producer of a response body: pausing it stops reading from the app. While the
    consumer keeps it paused, a timer checks every C{stall_timeout} seconds that the client
    took something of what is queued for it; when it did not, C{stalled()} is called.
    """

    __slots__ = ("_connection", "_client", "_stalled", "_paused", "_timer", "_queued")

    def __init__(self, connection: _Connection, client, stalled) -> None:
        self._connection = connection
        self._client = client
        self._stalled = stalled
        self._paused = False
        self._timer = None
        self._queued = 0

    def pauseProducing(self) -> None:
        self._paused = True
        self._connection.transport.pauseProducing()
        if self._stalled is not None and self._timer is None:
            self._watch()

    def resumeProducing(self) -> None:
        self._paused = False
        self._connection.transport.resumeProducing()

    def stopProducing(self) -> None:
        """The client went away: drop the app's response and its connection."""
        self._unwatch()
        connection = self._connection
        connection._reusable = False
        connection._done = connection._write = None
        connection.transport.abortConnection()

    def _watch(self) -> None:
        self._queued = queued_bytes(self._client)
        self._timer = self._connection._pool._reactor.callLater(
            self._connection._pool.stall_timeout, self._check)

    def _unwatch(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _check(self) -> None:
        self._timer = None
        if not self._paused or self._connection._write is None:
            return  # flowing again, or over
        if queued_bytes(self._client) < self._queued:
            self._watch()  # slow, but reading
            return
        stalled, self._stalled = self._stalled, None
        stalled()


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


class _Backend:
    """
    The pool's state for one app address.

    @ivar idle: connections ready for a request, the most recently released last.
    @ivar open: connections open or being opened (all of them, idle ones included).
    @ivar unproven: connections being opened, or open without a first response yet.
    @ivar connecting: connections being opened (not yet handed to a request).
    @ivar waiting: requests waiting for a connection, in arrival order (L{_Waiter}s).
    @ivar limits: the L{BackendLimits} the last request for this address came with.
    """

    __slots__ = ("idle", "open", "unproven", "connecting", "waiting", "limits")

    def __init__(self, limits: BackendLimits) -> None:
        self.idle: deque[_Connection] = deque()
        self.open = 0
        self.unproven = 0
        self.connecting = 0
        self.waiting: deque[_Waiter] = deque()
        self.limits = limits

    def may_open(self) -> bool:
        limits = self.limits
        return self.open < limits.max_connections and self.unproven < limits.max_connecting


class _Waiter:
    """A request waiting for a connection: C{deferred} fires with it."""

    __slots__ = ("deferred", "since", "timer")

    def __init__(self, deferred: Deferred, since: float) -> None:
        self.deferred = deferred
        self.since = since
        self.timer = None


class UpstreamPool:
    """
    Keep-alive connections to apps, per L{BackendAddress}: up to C{per_host} idle ones are
    kept for C{idle_timeout} seconds (below the usual app keep-alive, so we rarely pick a
    connection the app is closing); connections are opened within each request's
    L{BackendLimits}, and requests beyond them queue (see the module docstring).

    @ivar stall_timeout: seconds a client may take nothing of a response body while it
        pauses the app's connection.
    """

    def __init__(self, reactor, *, per_host: int = 64, idle_timeout: float = 4.0,
                 stall_timeout: float = STALL_TIMEOUT) -> None:
        self._reactor = reactor
        self._per_host = per_host
        self._idle_timeout = idle_timeout
        self.stall_timeout = stall_timeout
        self._backends: dict[BackendAddress, _Backend] = {}
        self._sweeper = None

    def request(self, address: BackendAddress, method: bytes, target: bytes, headers: list,
                body, limits: BackendLimits = DEFAULT_LIMITS) -> Deferred:
        """
        Send one request (C{headers} as (name, value) byte pairs, clean, without framing
        headers; C{body} an L{IBodyProducer} or None). Fires with an L{UpstreamResponse},
        or fails with L{UpstreamError}, L{BackendBusy} or the connect error; cancel it to
        abort the connection (or leave the queue).
        """
        backend = self._backends.get(address)
        if backend is None:
            backend = self._backends[address] = _Backend(limits)
        else:
            backend.limits = limits
        retry = body is None and is_idempotent(method)
        return self._attempt(address, backend, method, target, headers, body, retry)

    def _attempt(self, address, backend: _Backend, method, target, headers, body,
                 retry: bool) -> Deferred:
        idle = backend.idle
        while idle:
            connection = idle.pop()
            if connection.transport is not None and connection.transport.connected:
                return self._send(connection, address, backend, method, target, headers, body,
                                  retry)
        waiter = _Waiter(Deferred(lambda deferred: self._leave_queue(backend, deferred)),
                         self._reactor.seconds())
        backend.waiting.append(waiter)
        waiter.timer = self._reactor.callLater(backend.limits.queue_timeout, self._queue_expired,
                                               backend, waiter)
        self._open_more(address, backend)
        return waiter.deferred.addCallback(self._send, address, backend, method, target, headers,
                                           body, retry)

    def _send(self, connection: "_Connection", address, backend, method, target, headers, body,
              retry: bool) -> Deferred:
        sending = connection.send(method, target, headers, body)
        if retry and connection.reused:
            sending.addErrback(self._retry_on_stale, address, backend, method, target, headers,
                               body)
        return sending

    def _retry_on_stale(self, failure, address, backend, method, target, headers, body):
        if failure.check(_NeverAnswered) and failure.value.retryable:
            return self._attempt(address, backend, method, target, headers, body, retry=False)
        return failure

    # -- the queue ---------------------------------------------------------------------------

    def _open_more(self, address: BackendAddress, backend: _Backend) -> None:
        """Open connections for waiting requests, as far as the limits allow."""
        while len(backend.waiting) > backend.connecting and backend.may_open():
            backend.open += 1
            backend.unproven += 1
            backend.connecting += 1
            self._connect(address).addCallbacks(self._connected, self._connect_failed,
                                                (address, backend), None, (address, backend),
                                                None)

    def _connected(self, connection: "_Connection", address: BackendAddress,
                   backend: _Backend) -> None:
        connection.counted = True
        backend.connecting -= 1
        self._hand(address, backend, connection)

    def _connect_failed(self, failure: Failure, address: BackendAddress,
                        backend: _Backend) -> None:
        backend.open -= 1
        backend.unproven -= 1
        backend.connecting -= 1
        # The first waiting request gets the failure (a 502 for an app that refuses);
        # the others get their own attempts, so none waits for a connect nobody makes.
        waiter = self._next_waiter(backend)
        if waiter is not None:
            waiter.deferred.errback(failure)
        self._open_more(address, backend)

    def _hand(self, address: BackendAddress, backend: _Backend, connection: "_Connection") -> None:
        """A connection is free: to the first waiting request, else to the idle ones."""
        waiter = self._next_waiter(backend)
        if waiter is not None:
            waiter.deferred.callback(connection)
            return
        self._keep_idle(backend, connection)

    def _next_waiter(self, backend: _Backend) -> "_Waiter | None":
        waiting = backend.waiting
        while waiting:
            waiter = waiting.popleft()
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            if not waiter.deferred.called:
                return waiter
        return None

    def _leave_queue(self, backend: _Backend, deferred: Deferred) -> None:
        for waiter in backend.waiting:
            if waiter.deferred is deferred:
                backend.waiting.remove(waiter)
                if waiter.timer is not None and waiter.timer.active():
                    waiter.timer.cancel()
                return

    def _queue_expired(self, backend: _Backend, waiter: _Waiter) -> None:
        waiter.timer = None
        queued = len(backend.waiting)
        try:
            backend.waiting.remove(waiter)
        except ValueError:
            return
        waiter.deferred.errback(BackendBusy(self._reactor.seconds() - waiter.since, queued))

    # -- connections -------------------------------------------------------------------------

    def _connect(self, address: BackendAddress) -> Deferred:
        factory = Factory.forProtocol(lambda: _Connection(self, address))
        factory.noisy = False
        return address.endpoint(self._reactor, timeout=10).connect(factory).addCallback(_no_delay)

    def _proven(self, connection: _Connection) -> None:
        if connection.counted:
            backend = self._backends.get(connection._address)
            if backend is not None:
                backend.unproven -= 1
                self._open_more(connection._address, backend)

    def _release(self, address: BackendAddress, connection: _Connection) -> None:
        backend = self._backends.get(address)
        if backend is None:
            backend = self._backends[address] = _Backend(DEFAULT_LIMITS)
        connection.reused = True
        self._hand(address, backend, connection)

    def _keep_idle(self, backend: _Backend, connection: _Connection) -> None:
        idle = backend.idle
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
        for backend in self._backends.values():
            idle = backend.idle
            # Connections are appended as they are released: the stale ones are at the left.
            while idle and idle[0].idle_since <= oldest_allowed:
                idle.popleft().transport.loseConnection()
            remaining = remaining or bool(idle)
        if remaining:
            self._sweeper = self._reactor.callLater(self._idle_timeout / 4, self._sweep)

    def _lost(self, address: BackendAddress, connection: _Connection) -> None:
        backend = self._backends.get(address)
        if backend is None:
            return
        if connection in backend.idle:
            backend.idle.remove(connection)
        if connection.counted:
            connection.counted = False  # once
            backend.open -= 1
            if not connection.proven:
                backend.unproven -= 1
            if backend.waiting:
                self._open_more(address, backend)

    def open_connections(self, address: BackendAddress) -> int:
        """How many connections to C{address} are open or being opened."""
        backend = self._backends.get(address)
        return backend.open if backend is not None else 0

    def close(self) -> Deferred:
        """Close every idle connection (at shutdown)."""
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None
        for backend in self._backends.values():
            idle = backend.idle
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


__all__ = [
    "DEFAULT_LIMITS", "BackendBusy", "BackendLimits", "UpstreamError", "UpstreamPool",
    "UpstreamResponse",
]
