"""
Early dispatch for twisted.web: render a request as soon as its headers are in, and
stream its body from the client as it arrives.

Why this module exists
======================

Stock C{twisted.web} reads the whole request body into C{request.content} (a
C{BytesIO}, or a temporary file above 100 kB) and only then calls
C{Resource.render}. A reverse proxy cannot work like that: a 300 MB upload would
be written to disk before the app sees the first byte, the app could not refuse
it early, and the client would get no backpressure from a slow app.

L{StreamingSite} changes one thing: for a request with a body (a
C{Content-Length} above zero, or C{Transfer-Encoding: chunked}) resource traversal
and C{render} run as soon as the headers have been parsed, and C{request.body}
(a L{RequestBody}, an L{IBodyProducer}) delivers the body chunk by chunk as it
comes off the socket. It can be handed straight to L{twisted.web.client.Agent}.
Requests without a body take Twisted's ordinary path, untouched, and share one
L{EMPTY_BODY}, so the hot path of small GETs costs what it costs on a plain
L{Site}.

How it works
============

L{HTTPChannel} parses the request head and then calls C{allHeadersReceived};
body bytes go through a transfer decoder to C{request.handleContentChunk}; at
the end of the body C{allContentReceived} calls C{request.requestReceived},
which normally starts processing. L{StreamingChannel} and L{StreamingRequest}
override those documented hooks:

  - C{allHeadersReceived} calls C{requestReceived} itself when a body follows
    (early dispatch). The later call from C{allContentReceived} then only marks
    the body complete.
  - C{gotLength} creates the L{RequestBody} instead of a buffer;
    C{handleContentChunk} feeds it. Chunks go straight to the consumer when it
    is ready; otherwise up to L{RequestBody.hold_limit} bytes are held and
    reading from the client socket pauses (the same happens whenever the
    consumer pauses us: that is the backpressure).
  - C{requestDone} (the response is finished) is deferred while the body is
    still arriving, because Twisted would otherwise parse the rest of the body
    as the next request. The remainder is drained and the connection kept
    alive when it is small (L{StreamingChannel.drain_limit}), otherwise the
    connection is closed.
  - C{loseConnection} while a body is still arriving does a lingering close:
    the write side is shut down (the client sees the response and EOF), the
    rest of the upload is read and discarded for at most
    L{StreamingChannel.linger_timeout} seconds, then the socket is closed.
    Closing a socket with unread data makes the kernel send a reset, which
    can destroy the response (a 413, say) before the client has read it.

What a resource sees
====================

  - C{request.body.startProducing(consumer)} fires when the whole body has been
    written to the consumer; it fails with L{BodyAborted} if the client
    disconnects (after C{notifyFinish} has failed, so a proxy that cancels its
    upstream request there stops the body quietly) or the connection is closed,
    and with L{BodyTooLarge} past C{max_body_size}. After C{stopProducing} (or
    cancelling the Deferred) it never fires.
  - Finishing the response before the body has arrived is allowed: the body is
    then stopped as if by C{stopProducing} (its Deferred never fires; Agent
    expects exactly that once it has handed over a response, and logs an error
    otherwise), and the rest is drained or the connection closed, as above.
  - With C{max_body_size}, a C{Content-Length} over the limit is answered with
    413 (instead of C{100 Continue}) without any resource seeing the request. A
    chunked body growing past it gets a 413 if the response has not started,
    before the consumer's Deferred fails, so error handlers must check
    C{request.finished}.
  - While reading is paused for the body (a paused or absent consumer), the
    site's idle timeout is suspended: the client is not idle, we are.
  - C{request.content} is an empty, shared, read-only C{BytesIO}.

Private Twisted attributes used
===============================

C{HTTPChannel._command}, C{HTTPChannel._path} and C{HTTPChannel._version}: the
parts of the request line, which C{allHeadersReceived} needs to start the request
before C{allContentReceived} would pass them on. (The line reader's buffer, for bare
LFs in a head, is read through L{hubtwist.proxy.twisted_private}.) Twisted has had them
for many releases, up to 26.10 at least;
C{tests/integration/test_early_dispatch.py::test_twisted_internals_present} fails
with an explanation if they, or the order in which Twisted calls the hooks above,
change. Everything else used here is a public (if "not intended for users")
method or attribute of L{HTTPChannel}, L{http.Request} and L{server.Request}.

HTTP/2 is not offered: the site's channel is L{StreamingChannel} directly, not
Twisted's ALPN-switching wrapper (which also saves a call per read).
"""

from __future__ import annotations

import io
from collections import deque

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from hubtwist.proxy.sending import allow_bulk, direct_writer
from hubtwist.proxy.twisted_private import busy_receiving, unparsed_line

__all__ = [
    "BodyAborted",
    "BodyTooLarge",
    "EMPTY_BODY",
    "RequestBody",
    "StreamingChannel",
    "StreamingRequest",
    "StreamingSite",
    "HEAD_TIMEOUT",
]

_log = Logger()

HEAD_TIMEOUT = 20.0
"""Seconds a client has to send a whole request head, from its first byte."""

# The per-request path calls the base implementations directly rather than through
# super(): a super() call costs about 0.1 us, a few percent of a small GET's whole
# cost in twisted.web, and StreamingSite must be no slower than a plain Site there.
_channel_dataReceived = http.HTTPChannel.dataReceived
_channel_headerReceived = http.HTTPChannel.headerReceived
_channel_allHeadersReceived = http.HTTPChannel.allHeadersReceived
_channel_allContentReceived = http.HTTPChannel.allContentReceived
_channel_requestDone = http.HTTPChannel.requestDone
_request_requestReceived = http.Request.requestReceived


class BodyTooLarge(Exception):
    """
    The request body is larger than allowed: the site's C{max_body_size}, or the
    C{max_bytes} given to L{RequestBody.read_all}.

    @ivar limit: the limit in bytes.
    @ivar size: the declared C{Content-Length}, or L{None} when the body was
        cut off while streaming (chunked, or more than C{read_all} allows).
    """

    def __init__(self, limit: int, size: int | None = None) -> None:
        self.limit = limit
        self.size = size
        if size is None:
            message = f"request body exceeds the limit of {limit} bytes"
        else:
            message = f"request body of {size} bytes exceeds the limit of {limit} bytes"
        super().__init__(message)


class BodyAborted(Exception):
    """
    The request body cannot be delivered completely: the client disconnected,
    the connection is being closed, or the response was finished first.

    @ivar reason: the underlying L{Failure} (e.g. C{ConnectionLost}), if any.
    """

    def __init__(self, message: str, reason: Failure | None = None) -> None:
        self.reason = reason
        super().__init__(message)


class _EmptyContent(io.BytesIO):
    """
    C{request.content} for every request: always empty, never closed.

    One instance is shared by all requests (Twisted closes C{request.content} after
    each request, hence the no-op C{close}); writing to it is a bug, since the body
    is only available from C{request.body}.
    """

    def close(self) -> None:
        pass

    def write(self, data) -> int:
        raise io.UnsupportedOperation("request.content is always empty; read request.body")

    def writelines(self, lines) -> None:
        raise io.UnsupportedOperation("request.content is always empty; read request.body")

    def truncate(self, size=None) -> int:
        raise io.UnsupportedOperation("request.content is always empty; read request.body")


_EMPTY_CONTENT = _EmptyContent()


@implementer(IBodyProducer)
class _EmptyBody:
    """
    The body of every request without one (L{EMPTY_BODY}): length 0, produces
    nothing, C{startProducing} fires at once.
    """

    length = 0
    buffered = 0
    received = 0

    def startProducing(self, consumer) -> Deferred[None]:
        """Nothing to write: fire immediately."""
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""

    def read_all(self, max_bytes: int) -> Deferred[bytes]:
        """Return C{b""} at once."""
        return succeed(b"")

    def __repr__(self) -> str:
        return "<EMPTY_BODY>"


EMPTY_BODY = _EmptyBody()
"""The shared C{request.body} of requests without a body."""

# RequestBody states.
_RECEIVING = "receiving"  # bytes still coming from the client
_ENDED = "ended"  # all bytes received (maybe not yet all delivered)
_STOPPED = "stopped"  # stopProducing, or the response finished first: discard the rest
_FAILED = "failed"  # client gone, connection closing, or too large


@implementer(IBodyProducer)
class RequestBody:
    """
    The body of a L{StreamingRequest}, produced as it arrives from the client.

    An L{IBodyProducer}: pass it to C{Agent.request} as the body producer, or call
    L{startProducing} with any L{IConsumer}, or L{read_all} for small bodies.

    @ivar length: the C{Content-Length}, or L{UNKNOWN_LENGTH} for a chunked body.
    @ivar hold_limit: bytes held for a consumer that is absent or paused before
        reading from the client is paused.
    """

    hold_limit = 64 * 1024

    def __init__(self, channel: StreamingChannel, request: StreamingRequest,
                 length: int | None, max_size: int) -> None:
        self.length = UNKNOWN_LENGTH if length is None else length
        self._channel = channel
        self._request = request
        self._max_size = max_size
        self._state = _RECEIVING
        self._received = 0
        self._held: deque[bytes] = deque()
        self._held_size = 0
        self._consumer = None
        self._deferred: Deferred[None] | None = None
        self._started = False
        self._paused = False
        self._flushing = False
        self._failure: Failure | None = None

    def __repr__(self) -> str:
        return (f"<RequestBody length={self.length} state={self._state} "
                f"received={self._received} buffered={self._held_size}>")

    @property
    def received(self) -> int:
        """Body bytes received from the client so far."""
        return self._received

    @property
    def buffered(self) -> int:
        """Bytes received from the client but not yet written to the consumer."""
        return self._held_size

    # -- IBodyProducer ----------------------------------------------------------------

    def startProducing(self, consumer) -> Deferred[None]:
        """
        Write the body to C{consumer} as it arrives (held chunks first).

        @return: a L{Deferred} that fires with L{None} once the whole body has been
            written, or fails with L{BodyAborted} (client gone, connection closing,
            response finished first) or L{BodyTooLarge}. Cancelling it stops
            production. It never fires after L{stopProducing}.
        @raise RuntimeError: if called twice.
        """
        if self._started:
            raise RuntimeError("RequestBody.startProducing called twice")
        self._started = True
        if self._failure is not None:
            self._held.clear()
            self._held_size = 0
            return fail(self._failure)
        d: Deferred[None] = Deferred(self._cancel)
        self._consumer = consumer
        self._deferred = d
        self._flush()
        self._sync_reading()
        return d

    def pauseProducing(self) -> None:
        """Stop reading from the client until L{resumeProducing}."""
        self._paused = True
        self._sync_reading()

    def resumeProducing(self) -> None:
        """Deliver held chunks and read from the client again."""
        self._paused = False
        self._flush()
        self._sync_reading()

    def stopProducing(self) -> None:
        """
        Deliver nothing more and never fire the L{startProducing} Deferred. The rest
        of the body is discarded once the response is finished (or the connection is
        closed if too much remains); until then the client is not read.
        """
        self._consumer = None
        self._deferred = None
        self._held.clear()
        self._held_size = 0
        if self._state is _RECEIVING:
            self._state = _STOPPED
            self._failure = Failure(BodyAborted("request body production was stopped"))
            self._channel._pause_reading()

    def read_all(self, max_bytes: int) -> Deferred[bytes]:
        """
        Collect the whole body, for small bodies (hubtwist's own endpoints).

        @return: a L{Deferred} firing with the body as L{bytes}, or failing with
            L{BodyTooLarge} as soon as more than C{max_bytes} are declared or
            received (the rest is then discarded), or with L{BodyAborted}.
        """
        if self.length is not UNKNOWN_LENGTH and self.length > max_bytes:
            self.stopProducing()
            return fail(BodyTooLarge(max_bytes, self.length))
        return _BodyCollector(self, max_bytes).start()

    # -- feeding, called by the request and channel -----------------------------------

    def _data_received(self, data: bytes) -> None:
        state = self._state
        if state is _RECEIVING:
            self._received += len(data)
            if self._max_size and self._received > self._max_size:
                self._too_large()
                return
            consumer = self._consumer
            if consumer is not None and not self._paused and not self._held:
                consumer.write(data)
                return
            self._held.append(data)
            self._held_size += len(data)
            if self._held_size >= self.hold_limit:
                self._channel._pause_reading()
        elif state is _STOPPED:
            self._received += len(data)
            self._channel._discarded(len(data))
        # _FAILED: the connection is going away; drop it.

    def _end(self) -> None:
        """The client has sent the whole body."""
        if self._state is not _RECEIVING:
            return
        self._state = _ENDED
        if self._consumer is not None and not self._held:
            self._finish_delivery()

    def _fail(self, failure: Failure) -> None:
        """The body cannot be completed (client gone, connection closing)."""
        if self._state is not _RECEIVING:
            # Already complete (held chunks still get delivered), stopped, or failed.
            return
        self._mark_failed(failure)
        self._notify_failure()

    def _halt(self) -> None:
        """
        The response was finished before the body was complete: nobody will read
        the rest, so stop delivering as L{stopProducing} would. C{read_all}'s
        collector is told; other consumers' Deferreds never fire, which is what
        L{Agent} expects once it has a response (an errback would make it log).
        """
        if self._state is not _RECEIVING:
            return
        consumer = self._consumer
        self.stopProducing()
        self._failure = Failure(BodyAborted("the response was finished before the request body"))
        if isinstance(consumer, _BodyCollector):
            consumer.abort(self._failure)

    def _reject(self, limit: int) -> None:
        """Refused before reading (Content-Length over the limit)."""
        self._mark_failed(Failure(BodyTooLarge(limit, self.length)))

    def _mark_failed(self, failure: Failure) -> None:
        self._state = _FAILED
        self._failure = failure
        self._held.clear()
        self._held_size = 0

    def _notify_failure(self) -> None:
        d = self._deferred
        self._deferred = None
        self._consumer = None
        if d is not None:
            d.errback(self._failure)

    def _too_large(self) -> None:
        # Mark the body failed first, so that the 413 below (which finishes the
        # request) closes the connection instead of draining; then answer the
        # client before the consumer hears about it, so that a proxy's error
        # handler finds the response already sent instead of racing it with a 502.
        self._mark_failed(Failure(BodyTooLarge(self._max_size)))
        self._channel.persistent = False
        request = self._request
        if not request.finished:
            if not request.startedWriting:
                request._send_body_too_large(self._max_size)
            else:
                request.loseConnection()
        self._notify_failure()

    def _drainable(self, limit: int) -> bool:
        if self._state is not _STOPPED:
            return False
        if self.length is UNKNOWN_LENGTH:
            return True  # the channel gives up once more than `limit` bytes arrive
        return self.length - self._received <= limit

    # -- delivery -------------------------------------------------------------------

    def _flush(self) -> None:
        # consumer.write may call pause/resume/stopProducing synchronously; the flag
        # keeps a nested resumeProducing from flushing out of order.
        if self._flushing:
            return
        self._flushing = True
        try:
            held = self._held
            while held and not self._paused and self._consumer is not None:
                chunk = held.popleft()
                self._held_size -= len(chunk)
                self._consumer.write(chunk)
        finally:
            self._flushing = False
        if self._state is _ENDED and not self._held and self._consumer is not None:
            self._finish_delivery()

    def _finish_delivery(self) -> None:
        d = self._deferred
        self._deferred = None
        self._consumer = None
        if d is not None:
            d.callback(None)

    def _sync_reading(self) -> None:
        if self._state is not _RECEIVING:
            return
        if self._paused or self._held_size >= self.hold_limit:
            self._channel._pause_reading()
        else:
            self._channel._resume_reading()

    def _cancel(self, d: Deferred) -> None:
        # Deferred.cancel: stop; the Deferred then fails with CancelledError.
        if self._deferred is d:
            self.stopProducing()


@implementer(IConsumer)
class _BodyCollector:
    """The consumer behind L{RequestBody.read_all}."""

    def __init__(self, body: RequestBody, max_bytes: int) -> None:
        self._body = body
        self._max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self._result: Deferred[bytes] = Deferred(lambda d: self._body.stopProducing())

    def start(self) -> Deferred[bytes]:
        self._body.startProducing(self).addCallbacks(self._done, self._failed)
        return self._result

    def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max_bytes:
            self._chunks = []
            self._body.stopProducing()
            self.abort(Failure(BodyTooLarge(self._max_bytes)))
            return
        self._chunks.append(data)

    def registerProducer(self, producer, streaming) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def abort(self, failure: Failure) -> None:
        if not self._result.called:
            self._result.errback(failure)

    def _done(self, _ignored) -> None:
        if not self._result.called:
            self._result.callback(b"".join(self._chunks))
        self._chunks = []

    def _failed(self, failure: Failure) -> None:
        if not self._result.called:
            self._result.errback(failure)


class StreamingRequest(server.Request):
    """
    A L{server.Request} that is rendered before its body arrives.

    @ivar body: an L{IBodyProducer} for the request body: a L{RequestBody}, or
        L{EMPTY_BODY} (length 0) when there is none.
    @ivar content: always an empty, read-only C{BytesIO} (compatibility only).
    """

    body: RequestBody | _EmptyBody = EMPTY_BODY
    _dispatched = False

    # -- HTTPChannel -> Request hooks --------------------------------------------------

    def gotLength(self, length: int | None) -> None:
        """Called by the channel with the body length: set up C{content} and C{body}."""
        self.content = _EMPTY_CONTENT
        if length != 0:
            channel = self.channel
            self.body = RequestBody(channel, self, length, channel.site.max_body_size)

    def handleContentChunk(self, data: bytes) -> None:
        """Called by the channel's transfer decoder with decoded body bytes."""
        self.body._data_received(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        Start processing; for an early-dispatched request, the channel's second call
        (at the end of the body) only marks the body complete.
        """
        if self._dispatched:
            self.body._end()
            return
        _request_requestReceived(self, command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        """The client went away: fail C{notifyFinish}, then the body."""
        # notifyFinish observers go first: a proxy reacts by cancelling its upstream
        # request, which stops this body quietly instead of failing it under Agent's
        # feet (Agent logs body failures once the response has started).
        super().connectionLost(reason)
        body = self.body
        if body is not EMPTY_BODY:
            body._fail(Failure(BodyAborted(
                "client disconnected before the request body was complete: "
                + reason.getErrorMessage(), reason)))

    # -- used by StreamingChannel / RequestBody ----------------------------------------

    def _dispatch_early(self, command: bytes, path: bytes, version: bytes) -> None:
        self._dispatched = True
        _request_requestReceived(self, command, path, version)

    def _reject_body_too_large(self, command: bytes, path: bytes, version: bytes,
                               limit: int) -> None:
        # Just enough of requestReceived/process for a response and an access log
        # line, without letting any resource see the request.
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        self.args = {}
        self.site = self.channel.site
        self.setHeader(b"Server", server.version)
        self.setHeader(b"Date", http.datetimeToString())
        self._send_body_too_large(limit)

    def write(self, data: bytes) -> None:
        """
        Twisted's C{write}, with what it hands the channel (the head on the first call,
        the data, a chunk's framing) gathered and sent at once: one C{send}, not one per
        piece, and not on the next reactor iteration (see L{StreamingChannel.write}).
        """
        channel = self.channel
        if channel is None or channel._corked is not None:
            super().write(data)
            return
        channel._corked = corked = []
        try:
            super().write(data)
        finally:
            channel._corked = None
        if corked:
            channel._send_now(corked[0] if len(corked) == 1 else b"".join(corked))

    def _send_body_too_large(self, limit: int) -> None:
        message = b"Request body too large: the limit is %d bytes.\n" % (limit,)
        self.setResponseCode(http.REQUEST_ENTITY_TOO_LARGE)
        self.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        self.responseHeaders.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
        self.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % (len(message),)])
        self.write(message)
        self.finish()


class StreamingChannel(http.HTTPChannel):
    """
    An L{HTTPChannel} that dispatches requests with a body right after their
    headers and streams the body (see the module docstring).

    @ivar drain_limit: when a response is finished before its request body, up to
        this many remaining bytes are read and discarded to keep the connection
        alive; with more, the connection is closed.
    @ivar linger_timeout: seconds to keep reading (and discarding) an unfinished
        upload after the response, before the socket is closed.
    """

    drain_limit = 64 * 1024
    linger_timeout = 5.0
    head_timeout = HEAD_TIMEOUT

    _awaiting_head = True  # between requests: the next bytes are a request head
    _head_started: float | None = None  # when its first byte came
    _head_call = None  # the deadline of a head that arrives in pieces
    _hosts = 0  # Host headers of the head being parsed
    lean_return = None  # takes the connection back to the lean path it came from

    _body: RequestBody | None = None  # the body being received, until it is complete
    _draining: StreamingRequest | None = None  # finished, its body remainder discarded
    _drain_budget = 0
    _reading_paused = False  # by the body: consumer paused/absent, or stopped
    _suspended_timeout = None
    _send_blocked = False  # the transport's send buffer is full
    _lingering = False
    _linger_call = None
    _send_now = None  # the transport's direct writer (hubtwist.proxy.sending)
    _corked: list[bytes] | None = None  # while a request's write() gathers its pieces

    def connectionMade(self) -> None:
        super().connectionMade()
        allow_bulk(self.transport)
        self._send_now = direct_writer(self.transport)
        self.head_timeout = getattr(self.site, "head_timeout", HEAD_TIMEOUT)

    # -- reading request heads ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        Twisted's, plus what it lacks for request heads: a deadline for the whole head
        (its idle timeout restarts with every byte, so a client sending one byte a second
        held a connection forever), a 400 for a head with a bare LF (Twisted waits for a
        CRLF that never comes), and one Host only (L{headerReceived}).
        """
        if not self._awaiting_head or busy_receiving(self):
            # (busy: a reentrant call, from requestDone inside a read; Twisted only
            # buffers the data, the outer call parses it)
            _channel_dataReceived(self, data)
            return
        now = self.site.reactor.seconds()
        started = self._head_started
        if started is None:
            self._head_started = started = now
        elif now - started > self.head_timeout:
            self._head_timed_out()
            return
        _channel_dataReceived(self, data)
        if not self._awaiting_head or self.transport.disconnecting or self.paused:
            return
        if self._head_started is None:
            # The head was complete and answered at once (requestDone reset the clock):
            # the next head has not begun, and `started` is the answered one's.
            return
        # Still inside a head. Twisted consumed every CRLF-terminated line, so an LF left
        # in its line buffer is a bare one.
        if b"\n" in unparsed_line(self):
            self._bad_head()
        elif self._head_call is None:
            self._head_call = self.callLater(max(0.0, started + self.head_timeout - now),
                                             self._head_timed_out)

    def headerReceived(self, line: bytes) -> bool:
        """Twisted's, refusing a second Host header (RFC 9112 3.2: a 400), which Twisted
        would pass on: the app and hubtwist could then disagree about the host."""
        if line[:5].lower() == b"host:":
            self._hosts += 1
            if self._hosts > 1:
                self._bad_head()
                return False
        return _channel_headerReceived(self, line)

    def _head_done(self) -> None:
        self._awaiting_head = False
        self._head_started = None
        self._hosts = 0
        call, self._head_call = self._head_call, None
        if call is not None and call.active():
            call.cancel()

    def _next_head(self) -> None:
        """The connection goes back to reading a request head."""
        self._awaiting_head = True
        self._head_started = None

    def _head_timed_out(self) -> None:
        self._head_call = None
        if not self._awaiting_head or self.transport.disconnecting:
            return
        _log.debug("Dropping {peer}: no complete request head within {timeout} s",
                   peer=self.transport.getPeer(), timeout=self.head_timeout)
        self._refuse_head(b"408 Request Timeout")

    def _bad_head(self) -> None:
        self._refuse_head(b"400 Bad Request")

    def _refuse_head(self, status: bytes) -> None:
        self._head_done()
        self.persistent = False
        self.transport.write(b"HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                             % status)
        self.loseConnection()

    # -- writing to the client --------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send now when nothing is buffered (no wait for the next reactor iteration)."""
        if self._corked is not None:
            self._corked.append(data)
        else:
            self._send_now(data)

    def writeSequence(self, iovec) -> None:
        if self._corked is not None:
            self._corked.extend(iovec)
        else:
            self._send_now(b"".join(iovec))

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers) -> None:
        """The status line and headers, through L{writeSequence} (Twisted's goes to the
        transport directly)."""
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        lines = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        self.writeSequence(lines)

    # -- request lifecycle ------------------------------------------------------------

    def allHeadersReceived(self) -> None:
        """Dispatch now if a body follows; requests without one go the usual way."""
        self._head_done()
        length = self.length
        if length == 0:
            _channel_allHeadersReceived(self)
            return
        request = self.requests[-1]
        limit = self.site.max_body_size
        if limit and length is not None and length > limit:
            # No "100 Continue" and no reading: the 413 goes out right away.
            self.persistent = False
            request.gotLength(length)
            self._body = request.body
            request.body._reject(limit)
            request._reject_body_too_large(self._command, self._path, self._version, limit)
            return
        _channel_allHeadersReceived(self)
        self._body = request.body
        request._dispatch_early(self._command, self._path, self._version)

    def allContentReceived(self) -> None:
        """The body is complete: let Twisted move on, and finish a drained request."""
        if self._body is None:
            _channel_allContentReceived(self)
            return
        self._body = None
        if self._lingering:
            return
        # Restore the idle timeout before Twisted saves and disables it for the
        # request processing phase.
        self._resume_reading()
        _channel_allContentReceived(self)
        request = self._draining
        if request is not None:
            self._draining = None
            self._next_head()
            _channel_requestDone(self, request)

    def requestDone(self, request: http.Request) -> None:
        """
        The response is finished. If its body is still arriving, drain a small
        remainder (keeping the connection) or close; never parse it as a request.
        """
        body = self._body
        if body is None:
            self._next_head()
            _channel_requestDone(self, request)
            if self.lean_return is not None:
                self._return_to_lean()
            return
        body._halt()
        if self.persistent and body._drainable(self.drain_limit):
            self._draining = request
            self._drain_budget = self.drain_limit
            self._resume_reading()
            return
        self.persistent = False
        _channel_requestDone(self, request)

    def _return_to_lean(self) -> None:
        """
        Between requests, give the connection back to the lean path it came from
        (L{hubtwist.proxy.lean}): one request it could not take (a POST, a login) must
        not keep the connection on this slower path for good. Only when nothing is left
        of the last exchange: no request, nothing buffered or half-parsed, nothing paused.
        """
        transport = self.transport
        if (not self.persistent or self.requests or not self._awaiting_head
                or self._head_started is not None or self._reading_paused or self._send_blocked
                or self._lingering or transport.disconnecting or unparsed_line(self)):
            return
        take_back, self.lean_return = self.lean_return, None
        self.setTimeout(None)
        self._head_done()  # no head deadline of this channel may fire on the lean one's
        transport.unregisterProducer()
        take_back(transport)

    def _discarded(self, size: int) -> None:
        # Body bytes discarded after stopProducing or a finished response.
        if self._draining is None:
            return
        self._drain_budget -= size
        if self._drain_budget < 0:
            request = self._draining
            self._draining = None
            self.persistent = False
            _channel_requestDone(self, request)

    # -- reading from the client ------------------------------------------------------

    def _pause_reading(self) -> None:
        if self._reading_paused or self._lingering:
            return
        self._reading_paused = True
        # We, not the client, are holding things up: no idle timeout meanwhile.
        self._suspended_timeout = self.setTimeout(None)
        self.transport.pauseProducing()

    def _resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        self.setTimeout(self._suspended_timeout)
        if not self._send_blocked:
            self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        """The transport's send buffer is full (Twisted then stops reading too)."""
        self._send_blocked = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        """The send buffer drained; keep reading paused if the body wants that."""
        self._send_blocked = False
        super().resumeProducing()
        if self._reading_paused:
            self.transport.pauseProducing()

    def rawDataReceived(self, data: bytes) -> None:
        """Body bytes (or pipelined requests); discarded during a lingering close."""
        if self._lingering:
            return
        super().rawDataReceived(data)

    # -- closing ----------------------------------------------------------------------

    def loseConnection(self) -> None:
        """Close; with an upload still arriving, close lingeringly (see module doc)."""
        if self._lingering:
            return
        if self._body is not None:
            self._start_linger()
            return
        super().loseConnection()

    def _start_linger(self) -> None:
        self._lingering = True
        self._body._fail(Failure(BodyAborted(
            "the connection was closed before the request body was complete")))
        self.setTimeout(None)
        self._reading_paused = False
        self.setRawMode()
        transport = self.transport
        if not ITCPTransport.providedBy(transport):
            super().loseConnection()
            return
        transport.unregisterProducer()
        transport.loseWriteConnection()
        transport.resumeProducing()
        self._linger_call = self.callLater(self.linger_timeout, self._linger_expired)

    def _linger_expired(self) -> None:
        self._linger_call = None
        _log.debug("Closing {peer}: upload still arriving {timeout}s after the response",
                   peer=self.transport.getPeer(), timeout=self.linger_timeout)
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        """Cancel a lingering close and the head deadline, and fail what is still pending."""
        if self._head_call is not None:
            if self._head_call.active():
                self._head_call.cancel()
            self._head_call = None
        if self._linger_call is not None:
            if self._linger_call.active():
                self._linger_call.cancel()
            self._linger_call = None
        super().connectionLost(reason)
        self._body = None
        self._draining = None


class StreamingSite(server.Site):
    """
    A L{server.Site} whose requests (L{StreamingRequest}) are rendered as soon as
    their headers are in, with the body streamed from C{request.body}.

    @ivar max_body_size: the largest accepted request body in bytes, 0 for no limit.
        A larger C{Content-Length} gets an immediate 413 (no body is read); a chunked
        body that grows past it fails its producer with L{BodyTooLarge} and gets a
        413 if the response has not started; either way the connection is closed.
    @ivar head_timeout: seconds a client has, from the first byte of a request head, to
        send all of it; then it gets a 408 and the connection is closed. A head with a
        bare LF gets a 400, and so does one with two Host headers.
    """

    protocol = StreamingChannel
    requestFactory = StreamingRequest

    def __init__(self, resource, *, max_body_size: int = 0, head_timeout: float = HEAD_TIMEOUT,
                 **site_kwargs) -> None:
        """
        @param resource: the root resource.
        @param max_body_size: see L{max_body_size}.
        @param head_timeout: see L{head_timeout}.
        @param site_kwargs: passed to L{server.Site} (C{requestFactory} must produce
            L{StreamingRequest}s; C{parsePOSTFormSubmission} is always C{False}).
        """
        if not isinstance(max_body_size, int) or max_body_size < 0:
            raise ValueError(f"max_body_size must be an int >= 0, not {max_body_size!r}")
        if site_kwargs.pop("parsePOSTFormSubmission", False):
            raise ValueError("StreamingSite never buffers request bodies, so it cannot "
                             "parse form submissions")
        factory = site_kwargs.get("requestFactory")
        if isinstance(factory, type) and not issubclass(factory, StreamingRequest):
            raise TypeError(f"requestFactory must be a StreamingRequest subclass, not {factory!r}")
        super().__init__(resource, parsePOSTFormSubmission=False, **site_kwargs)
        self.max_body_size = max_body_size
        self.head_timeout = head_timeout
