"""
Integration tests for L{hubtwist.proxy.early}: real sockets on 127.0.0.1, real clients.

Most tests talk raw HTTP/1.1 over a TCP connection (L{RawClient}) so that they control
exactly when each byte of a request is sent; the large-upload test goes through a real
L{Agent} to a second local server.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import os
import struct
from typing import Callable, NamedTuple

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import Resource
from zope.interface import implementer
from zope.interface.verify import verifyObject

from hubtwist.proxy.early import (
    EMPTY_BODY,
    BodyAborted,
    BodyTooLarge,
    RequestBody,
    StreamingChannel,
    StreamingRequest,
    StreamingSite,
)
from tests.helpers import poll, reactor, sleep, within

TIMEOUT = 10.0


_reactor = reactor


def with_timeout(d: defer.Deferred, seconds: float = TIMEOUT) -> defer.Deferred:
    return within(d, seconds)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll C{predicate} every few milliseconds; fail after C{timeout} seconds."""
    await poll(predicate, timeout, interval=0.005, message=what)


# Let the reactor run for a while: for asserting that something does NOT happen.
observe = sleep


# -- HTTP client side ----------------------------------------------------------------------


class Response(NamedTuple):
    code: int
    headers: dict[bytes, bytes]
    body: bytes


def parse_response(buffer: bytearray, closed: bool) -> tuple[Response, int] | None:
    """One response from the start of C{buffer}: (response, bytes used), or None if incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).split(b"\r\n")
    code = int(head[0].split(b" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if 100 <= code < 200 or code in (204, 304):
        return Response(code, headers, b""), start
    if b"content-length" in headers:
        stop = start + int(headers[b"content-length"])
        if len(buffer) < stop:
            return None
        return Response(code, headers, bytes(buffer[start:stop])), stop
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body, pos = bytearray(), start
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buffer[pos:line_end]).split(b";")[0], 16)
            pos = line_end + 2
            if size == 0:
                if buffer[pos:pos + 2] != b"\r\n":
                    return None
                return Response(code, headers, bytes(body)), pos + 2
            if len(buffer) < pos + size + 2:
                return None
            body += buffer[pos:pos + size]
            pos += size + 2
    if not closed:
        return None
    return Response(code, headers, bytes(buffer[start:])), len(buffer)


class RawClient(protocol.Protocol):
    """A client that writes raw bytes and parses responses as they arrive."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._check()

    def connectionLost(self, reason=None) -> None:
        self.closed = True
        self.reason = reason
        self._check()
        self.lost.callback(None)

    def closed_cleanly(self) -> bool:
        """Closed with a FIN from the server, not a reset (which can lose a response)."""
        return self.closed and self.reason.check(ConnectionDone) is not None

    def _check(self) -> None:
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate():
                self._waiters.remove(waiter)
                d.callback(None)

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> defer.Deferred:
        if predicate():
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        waiter = (predicate, d)
        self._waiters.append(waiter)

        def forget(result):
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return result

        d.addBoth(forget)
        return with_timeout(d, timeout)

    async def response(self, timeout: float = TIMEOUT) -> Response:
        await self.wait_for(
            lambda: self.closed or parse_response(self.buffer, self.closed) is not None, timeout
        )
        parsed = parse_response(self.buffer, self.closed)
        if parsed is None:
            raise AssertionError(f"connection closed mid-response: {bytes(self.buffer)!r}")
        response, used = parsed
        del self.buffer[:used]
        return response

    async def wait_closed(self, timeout: float = TIMEOUT) -> None:
        await self.wait_for(lambda: self.closed, timeout)


@implementer(IPushProducer)
class Uploader:
    """
    Streams C{total} bytes into a transport as fast as it accepts them, generating each
    64 KiB chunk on the fly (never holding the upload in memory) and hashing it.
    """

    chunk_size = 64 * 1024

    def __init__(self, transport, total: int) -> None:
        self.transport = transport
        self.total = total
        self.sent = 0
        self.sha = hashlib.sha256()
        self.paused = False
        self.stopped = False
        self.done: defer.Deferred[None] = defer.Deferred()
        self._base = os.urandom(self.chunk_size)

    def start(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.stopped and self.sent < self.total:
            size = min(self.chunk_size, self.total - self.sent)
            chunk = struct.pack(">Q", self.sent) + self._base[8:size]
            chunk = chunk[:size]
            self.sha.update(chunk)
            self.sent += size
            self.transport.write(chunk)
        if self.sent >= self.total and not self.done.called:
            self.transport.unregisterProducer()
            self.done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.stopped = True


class _BodyReader(protocol.Protocol):
    def __init__(self, done: defer.Deferred) -> None:
        self.done = done
        self.data = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason=None) -> None:
        self.done.callback(bytes(self.data))


def read_body(response) -> defer.Deferred:
    """Like treq/readBody, minus readBody's DeprecationWarning about the transport."""
    done: defer.Deferred[bytes] = defer.Deferred()
    response.deliverBody(_BodyReader(done))
    return done


def head(method: bytes, path: bytes, *headers: bytes) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


# -- server side -----------------------------------------------------------------------------


def respond(request, code: int, body: bytes) -> None:
    """Finish C{request} unless it is already finished or its client is gone."""
    if request.finished or getattr(request, "client_gone", False):
        return
    request.setResponseCode(code)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.setHeader(b"Content-Type", b"application/octet-stream")
    request.write(body)
    request.finish()


class Probe(Resource):
    """A leaf resource recording every request; C{handler(request)} renders it."""

    isLeaf = True

    def __init__(self, handler: Callable) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[StreamingRequest] = []
        self.paths: list[bytes] = []

    def render(self, request):
        self.requests.append(request)
        self.paths.append(request.path)
        request.client_gone = False
        request.finished_result = None

        def gone(failure):
            request.client_gone = True
            request.finished_result = failure

        request.notifyFinish().addErrback(gone)
        return self.handler(request)


def echo(request):
    """Read the whole body, answer with it (413/400 on failure)."""

    def failed(failure):
        code = 413 if failure.check(BodyTooLarge) else 400
        respond(request, code, failure.getErrorMessage().encode())

    request.body.read_all(50_000_000).addCallbacks(
        lambda data: respond(request, 200, data), failed
    )
    return server.NOT_DONE_YET


def answer_now(request):
    """Answer without looking at the body."""
    request.setHeader(b"Content-Type", b"text/plain")
    return b"early:" + request.path


@implementer(IConsumer)
class RecordingConsumer:
    """Counts and hashes what it is given; can pause its producer after N bytes."""

    def __init__(self, producer=None, pause_after: int | None = None) -> None:
        self.producer = producer
        self.pause_after = pause_after
        self.count = 0
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.count += len(data)
        self.sha.update(data)
        if self.pause_after is not None and self.count >= self.pause_after:
            self.pause_after = None
            self.producer.pauseProducing()

    def registerProducer(self, producer, streaming) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


class Harness:
    """Listening ports, server connections and clients of one test, all closed at the end."""

    def __init__(self) -> None:
        self.ports = []
        self.channels: list[StreamingChannel] = []
        self.clients: list[RawClient] = []
        self.pools: list[HTTPConnectionPool] = []

    def serve(self, resource, **site_kwargs) -> int:
        site = StreamingSite(resource, **site_kwargs)
        build = site.buildProtocol

        def build_and_track(addr):
            channel = build(addr)
            self.channels.append(channel)
            return channel

        site.buildProtocol = build_and_track
        port = _reactor().listenTCP(0, site, interface="127.0.0.1")
        self.ports.append(port)
        return port.getHost().port

    async def connect(self, port: int) -> RawClient:
        endpoint = TCP4ClientEndpoint(_reactor(), "127.0.0.1", port, timeout=5)
        client = await with_timeout(connectProtocol(endpoint, RawClient()))
        self.clients.append(client)
        return client

    def agent(self) -> Agent:
        pool = HTTPConnectionPool(_reactor(), persistent=False)
        self.pools.append(pool)
        return Agent(_reactor(), pool=pool)

    async def close(self) -> None:
        for client in self.clients:
            if not client.closed:
                client.transport.abortConnection()
        for channel in self.channels:
            if channel.transport.connected:
                channel.transport.abortConnection()
        for client in self.clients:
            await client.wait_closed()
        await wait_until(lambda: not any(c.transport.connected for c in self.channels),
                         "server connections to close")
        for port in self.ports:
            await with_timeout(defer.maybeDeferred(port.stopListening))
        for pool in self.pools:
            await with_timeout(pool.closeCachedConnections())


@pytest_twisted.async_yield_fixture
async def harness():
    h = Harness()
    yield h
    await h.close()


@pytest.fixture(autouse=True)
def no_logged_errors():
    """Fail a test that makes anything log an error (tracebacks, unhandled Deferreds)."""
    errors = []

    def observer(event):
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observer)
    yield errors
    gc.collect()  # "Unhandled error in Deferred" is logged when the Deferred is collected
    globalLogPublisher.removeObserver(observer)
    assert not errors, "errors were logged: " + "; ".join(
        str(e.get("log_failure") or e.get("log_format") or e) for e in errors
    )


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


# -- 1. early dispatch -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_render_is_called_before_the_upload_completes(harness):
    probe = Probe(echo)
    port = harness.serve(probe)
    client = await harness.connect(port)

    client.send(head(b"POST", b"/upload", b"Content-Length: 10") + b"hello")
    await wait_until(lambda: probe.requests, "render() with half of the body sent")
    request = probe.requests[0]
    assert request.method == b"POST" and request.path == b"/upload"
    assert isinstance(request.body, RequestBody)
    assert verifyObject(IBodyProducer, request.body)
    assert request.body.length == 10
    assert request.content.read() == b""
    assert not request.finished

    client.send(b"world")
    response = await client.response()
    assert (response.code, response.body) == (200, b"helloworld")


# -- 2. large upload through Agent, constant memory -------------------------------------------


@pytest_twisted.ensureDeferred
async def test_large_upload_streams_through_agent_in_constant_memory(harness):
    total = int(os.environ.get("HUBTWIST_TEST_UPLOAD_MB", "300")) * 1024 * 1024
    reactor = _reactor()

    def count(request):
        consumer = RecordingConsumer()
        done = request.body.startProducing(consumer)
        done.addCallbacks(lambda _: respond(request, 200, json.dumps(
            {"count": consumer.count, "sha256": consumer.sha.hexdigest(),
             "length": request.body.length}).encode()), lambda _: None)
        return server.NOT_DONE_YET

    backend_port = harness.serve(Probe(count))
    backend_url = b"http://127.0.0.1:%d/count" % backend_port
    agent = harness.agent()

    def forward(request):
        sending = agent.request(b"POST", backend_url, Headers(), request.body)
        sending.addCallback(read_body)
        sending.addCallback(lambda body: respond(request, 200, body))
        sending.addErrback(lambda f: respond(request, 502, f.getErrorMessage().encode()))
        return server.NOT_DONE_YET

    front_port = harness.serve(Probe(forward))
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset VmHWM, the peak RSS
        peak_field = "VmHWM"
    except OSError:
        peak_field = "VmRSS"
    before = rss_kib()
    started = reactor.seconds()
    peak = [before]
    sampler = task.LoopingCall(lambda: peak.append(rss_kib(peak_field)))
    sampler.clock = reactor
    sampler.start(0.05)
    try:
        client = await harness.connect(front_port)
        client.send(head(b"POST", b"/big", b"Content-Length: %d" % total))
        uploader = Uploader(client.transport, total)
        uploader.start()
        await with_timeout(uploader.done, 150)
        response = await client.response(timeout=150)
    finally:
        sampler.stop()
    peak.append(rss_kib(peak_field))
    growth_mib = (max(peak) - before) / 1024
    print(f"streamed {total >> 20} MiB in {reactor.seconds() - started:.2f}s, "
          f"peak RSS growth {growth_mib:.1f} MiB ({peak_field})")

    assert response.code == 200, response.body
    result = json.loads(response.body)
    assert result["length"] == total  # Agent forwarded the Content-Length
    assert result["count"] == total
    assert result["sha256"] == uploader.sha.hexdigest()
    assert growth_mib < 50, f"RSS grew by {growth_mib:.1f} MiB while streaming {total} bytes"


# -- 3. backpressure -------------------------------------------------------------------------


@pytest.mark.parametrize("consumer_state", ["paused", "not yet attached"])
@pytest_twisted.ensureDeferred
async def test_backpressure_stops_reading_from_the_client(harness, consumer_state):
    total = 64 * 1024 * 1024
    consumer = RecordingConsumer()
    outcome = []

    def slow(request):
        if consumer_state == "paused":
            consumer.producer, consumer.pause_after = request.body, 1
            start_consuming(request)
        return server.NOT_DONE_YET

    def start_consuming(request):
        done = request.body.startProducing(consumer)
        done.addCallbacks(lambda _: respond(request, 200, b"%d %s" % (
            consumer.count, consumer.sha.hexdigest().encode())), outcome.append)

    probe = Probe(slow)
    # A short idle timeout: it must not fire while *we* hold the upload back.
    port = harness.serve(probe, timeout=0.5)
    client = await harness.connect(port)
    client.send(head(b"POST", b"/slow", b"Content-Length: %d" % total))
    uploader = Uploader(client.transport, total)
    uploader.start()

    if consumer_state == "paused":
        await wait_until(lambda: consumer.count > 0, "the first bytes (then a pause)")
    else:
        await wait_until(
            lambda: probe.requests and probe.requests[0].body.buffered >= RequestBody.hold_limit,
            "hold_limit bytes to be held")
    await wait_until(lambda: uploader.paused, "the client's transport to push back")
    request = probe.requests[0]
    body = request.body
    read_when_blocked = consumer.count + body.buffered
    await observe(1.0)  # longer than the idle timeout
    # The server stopped reading: what it has read stays put, and it holds at most about
    # hold_limit plus one socket read. The rest waits in the kernel's socket buffers
    # (which may still grow a little as TCP autotunes them) and then in the client.
    assert consumer.count + body.buffered == read_when_blocked, "the server kept reading"
    assert body.buffered <= RequestBody.hold_limit + 256 * 1024, body
    assert consumer.count < 1024 * 1024
    assert uploader.paused and uploader.sent < total // 4, uploader.sent
    assert not client.closed

    if consumer_state == "paused":
        body.resumeProducing()
    else:
        start_consuming(request)
    await with_timeout(uploader.done, 60)
    response = await client.response(timeout=60)
    assert outcome == []
    assert response.code == 200
    assert response.body == b"%d %s" % (total, uploader.sha.hexdigest().encode())


# -- 4. chunked uploads ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_chunked_upload_has_unknown_length_and_exact_bytes(harness):
    probe = Probe(echo)
    port = harness.serve(probe)
    client = await harness.connect(port)
    pieces = [b"a" * 1, b"bc" * 1000, os.urandom(70_000), b"\r\n0\r\n\r\n", b"z" * 5]

    client.send(head(b"POST", b"/chunked", b"Transfer-Encoding: chunked") + chunk(pieces[0]))
    await wait_until(lambda: probe.requests, "render() of the chunked request")
    assert probe.requests[0].body.length is UNKNOWN_LENGTH
    for piece in pieces[1:]:
        client.send(chunk(piece))
    client.send(LAST_CHUNK)
    response = await client.response()
    assert response.code == 200
    assert response.body == b"".join(pieces)


# -- 5. max_body_size ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_content_length_over_the_limit_gets_413_without_sending_the_body(harness):
    probe = Probe(echo)
    port = harness.serve(probe, max_body_size=1000)
    client = await harness.connect(port)

    client.send(head(b"POST", b"/big", b"Content-Length: 1001"))
    response = await client.response()
    assert response.code == 413
    assert b"1000" in response.body
    assert response.headers[b"connection"] == b"close"
    await client.wait_closed()
    assert probe.requests == []

    # At the limit is fine.
    client = await harness.connect(port)
    client.send(head(b"POST", b"/ok", b"Content-Length: 1000") + b"x" * 1000)
    response = await client.response()
    assert (response.code, len(response.body)) == (200, 1000)


@pytest_twisted.ensureDeferred
async def test_content_length_over_the_limit_with_the_body_on_its_way(harness):
    # The client sends the body anyway: the 413 must still reach it (no reset).
    probe = Probe(echo)
    port = harness.serve(probe, max_body_size=1000)
    client = await harness.connect(port)
    client.send(head(b"POST", b"/big", b"Content-Length: 2000000") + os.urandom(1_000_000))
    response = await client.response()
    assert response.code == 413
    client.send(os.urandom(1_000_000))  # still uploading after the response
    await client.wait_closed()
    assert client.closed_cleanly(), client.reason
    assert probe.requests == []


@pytest.mark.parametrize("response_started", [False, True])
@pytest_twisted.ensureDeferred
async def test_chunked_body_over_the_limit_fails_the_body_and_closes(harness, response_started):
    outcomes = []

    def consume(request):
        if response_started:
            request.setHeader(b"Content-Type", b"text/plain")
            request.write(b"started")
        consumer = RecordingConsumer()
        request.body.startProducing(consumer).addCallbacks(
            lambda _: outcomes.append("completed"), outcomes.append)
        return server.NOT_DONE_YET

    probe = Probe(consume)
    port = harness.serve(probe, max_body_size=100_000)
    client = await harness.connect(port)
    client.send(head(b"POST", b"/chunked", b"Transfer-Encoding: chunked"))
    for _ in range(5):
        client.send(chunk(b"x" * 30_000))

    await wait_until(lambda: outcomes, "the body to fail")
    assert isinstance(outcomes[0], Failure) and outcomes[0].check(BodyTooLarge), outcomes
    await client.wait_closed()
    if response_started:
        # Headers and part of a chunked response, then the connection ends.
        assert bytes(client.buffer).startswith(b"HTTP/1.1 200 OK")
        assert not bytes(client.buffer).endswith(LAST_CHUNK)
        await wait_until(lambda: probe.requests[0].client_gone, "notifyFinish to fail")
    else:
        response = await client.response()
        assert response.code == 413
        assert response.headers[b"connection"] == b"close"


# -- 6. client disconnects mid-upload --------------------------------------------------------


@pytest.mark.parametrize("consuming", [True, False])
@pytest_twisted.ensureDeferred
async def test_client_disconnect_mid_upload_fails_body_and_notify_finish(harness, consuming):
    outcomes = []
    consumers = []
    order = []

    def consume(request):
        request.notifyFinish().addErrback(lambda _: order.append("notifyFinish"))
        if consuming:
            consumer = RecordingConsumer()
            consumers.append(consumer)
            started = request.body.startProducing(consumer)
            started.addErrback(lambda f: (order.append("body"), f)[1])
            started.addCallbacks(outcomes.append, outcomes.append)
        return server.NOT_DONE_YET

    probe = Probe(consume)
    port = harness.serve(probe)
    client = await harness.connect(port)
    client.send(head(b"POST", b"/up", b"Content-Length: 1000000") + b"x" * 1000)
    if consuming:
        await wait_until(lambda: consumers and consumers[0].count == 1000, "the first bytes")
    else:
        await wait_until(lambda: probe.requests and probe.requests[0].body.buffered == 1000,
                         "the first bytes to be held")
    request = probe.requests[0]

    client.transport.abortConnection()
    await wait_until(lambda: request.client_gone, "notifyFinish to fail")
    assert request.finished_result.check(Exception)
    if consuming:
        await wait_until(lambda: outcomes, "the body Deferred to fail")
        # notifyFinish first, so that a proxy can cancel its upstream request quietly
        # before the body fails under it.
        assert order == ["notifyFinish", "body"]
    else:
        # Nobody asked yet: a late startProducing fails at once.
        request.body.startProducing(RecordingConsumer()).addBoth(outcomes.append)
    failure = outcomes[0]
    assert isinstance(failure, Failure) and failure.check(BodyAborted), failure
    assert "client disconnected" in failure.getErrorMessage()
    assert request.body.buffered == 0


@pytest.mark.parametrize("cancel_on_disconnect", [True, False])
@pytest_twisted.ensureDeferred
async def test_client_disconnect_while_forwarding_through_agent(harness, cancel_on_disconnect):
    # What hubtwist's proxy does: Agent streams request.body to the app. The client
    # vanishing mid-upload must fail or cancel everything quietly (no logged errors).
    backend_bodies = []
    backend_outcomes = []

    def count(request):
        consumer = RecordingConsumer()
        backend_bodies.append(consumer)
        request.body.startProducing(consumer).addBoth(backend_outcomes.append)
        return server.NOT_DONE_YET

    backend_port = harness.serve(Probe(count))
    agent = harness.agent()
    upstream = []

    def forward(request):
        sending = agent.request(b"POST", b"http://127.0.0.1:%d/" % backend_port, Headers(),
                                request.body)
        upstream.append(sending)
        if cancel_on_disconnect:
            request.notifyFinish().addErrback(lambda _: sending.cancel())
        sending.addBoth(lambda result: upstream.append(result))
        return server.NOT_DONE_YET

    probe = Probe(forward)
    port = harness.serve(probe)
    client = await harness.connect(port)
    client.send(head(b"POST", b"/up", b"Content-Length: 10000000") + b"x" * 100_000)
    await wait_until(lambda: backend_bodies and backend_bodies[0].count == 100_000,
                     "the upload to reach the app")
    client.transport.abortConnection()
    await wait_until(lambda: len(upstream) == 2, "the upstream request to end")
    assert isinstance(upstream[1], Failure)
    await wait_until(lambda: backend_outcomes, "the app to see the upload end")
    assert isinstance(backend_outcomes[0], Failure)
    assert backend_outcomes[0].check(BodyAborted)
    assert probe.requests[0].client_gone


@pytest_twisted.ensureDeferred
async def test_app_answering_before_reading_the_upload_through_agent(harness):
    # The app answers at once; Agent hands over its response while it is still sending
    # the request body. Finishing the client's response must stop the body quietly
    # (an errback would make Agent log "Error writing request").
    backend_port = harness.serve(Probe(answer_now))
    agent = harness.agent()

    def forward(request):
        sending = agent.request(b"POST", b"http://127.0.0.1:%d/app" % backend_port, Headers(),
                                request.body)
        sending.addCallback(lambda response: read_body(response).addCallback(
            lambda data: respond(request, response.code, data)))
        sending.addErrback(lambda f: respond(request, 502, f.getErrorMessage().encode()))
        return server.NOT_DONE_YET

    port = harness.serve(Probe(forward))
    client = await harness.connect(port)
    client.send(head(b"POST", b"/up", b"Content-Length: 10000000") + b"x" * 200_000)
    response = await client.response()
    assert (response.code, response.body) == (200, b"early:/app")
    client.send(b"x" * 200_000)
    await client.wait_closed()
    assert client.closed_cleanly(), client.reason


# -- 7. keep-alive, pipelining, responses before the body --------------------------------------


@pytest_twisted.ensureDeferred
async def test_keep_alive_and_pipelining_with_bodies(harness):
    probe = Probe(echo)
    port = harness.serve(probe)
    client = await harness.connect(port)

    client.send(head(b"POST", b"/one", b"Content-Length: 3") + b"one")
    assert (await client.response()).body == b"one"
    client.send(head(b"PUT", b"/two", b"Transfer-Encoding: chunked") + chunk(b"two") + LAST_CHUNK)
    assert (await client.response()).body == b"two"
    # Pipelined: three requests in one write.
    client.send(head(b"POST", b"/3", b"Content-Length: 5") + b"three"
                + head(b"GET", b"/4")
                + head(b"POST", b"/5", b"Transfer-Encoding: chunked")
                + chunk(b"five") + LAST_CHUNK)
    bodies = [(await client.response()).body for _ in range(3)]
    assert bodies == [b"three", b"", b"five"]
    assert probe.paths == [b"/one", b"/two", b"/3", b"/4", b"/5"]
    assert len(harness.channels) == 1 and not client.closed


@pytest_twisted.ensureDeferred
async def test_pipelined_request_after_a_body_answered_before_it_was_read(harness):
    probe = Probe(lambda request: answer_now(request) if request.path.startswith(b"/now")
                  else echo(request))
    port = harness.serve(probe)
    client = await harness.connect(port)
    # Each body arrives in the same packet as the request answered without reading it.
    client.send(head(b"POST", b"/now1", b"Content-Length: 10") + b"GET /x1 HT"
                + head(b"POST", b"/echo", b"Content-Length: 4") + b"echo"
                + head(b"POST", b"/now2", b"Transfer-Encoding: chunked")
                + chunk(head(b"GET", b"/x2")) + LAST_CHUNK
                + head(b"GET", b"/now3"))
    bodies = [(await client.response()).body for _ in range(4)]
    assert bodies == [b"early:/now1", b"echo", b"early:/now2", b"early:/now3"]
    assert probe.paths == [b"/now1", b"/echo", b"/now2", b"/now3"]
    assert len(harness.channels) == 1 and not client.closed


@pytest_twisted.ensureDeferred
async def test_response_before_a_small_body_drains_it_and_keeps_the_connection(harness):
    probe = Probe(answer_now)
    port = harness.serve(probe)
    client = await harness.connect(port)
    smuggled = head(b"GET", b"/evil")
    client.send(head(b"POST", b"/first", b"Content-Length: %d" % len(smuggled)))
    response = await client.response()
    assert (response.code, response.body) == (200, b"early:/first")

    client.send(smuggled + head(b"GET", b"/second"))
    response = await client.response()
    assert response.body == b"early:/second"
    assert probe.paths == [b"/first", b"/second"]
    assert len(harness.channels) == 1 and not client.closed


@pytest_twisted.ensureDeferred
async def test_response_before_a_large_body_closes_the_connection_cleanly(harness):
    probe = Probe(answer_now)
    port = harness.serve(probe)
    client = await harness.connect(port)
    smuggled = head(b"GET", b"/evil") * 40000  # ~1.2 MB of would-be requests
    client.send(head(b"POST", b"/first", b"Content-Length: 10000000") + smuggled)
    response = await client.response()
    assert (response.code, response.body) == (200, b"early:/first")
    client.send(smuggled)
    await client.wait_closed()
    assert client.closed_cleanly(), client.reason
    assert client.buffer == b""
    assert probe.paths == [b"/first"]


@pytest_twisted.ensureDeferred
async def test_stop_producing_then_finishing_keeps_the_connection_usable(harness):
    def refuse(request):
        request.body.stopProducing()
        respond(request, 403, b"no")
        return server.NOT_DONE_YET

    probe = Probe(refuse)
    port = harness.serve(probe)
    client = await harness.connect(port)
    client.send(head(b"POST", b"/a", b"Content-Length: 100") + b"y" * 40)
    assert (await client.response()).code == 403
    client.send(b"y" * 60 + head(b"POST", b"/b", b"Content-Length: 0"))
    assert (await client.response()).code == 403
    assert probe.paths == [b"/a", b"/b"]
    assert not client.closed


# -- 8. requests without a body, read_all ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_without_body_and_read_all(harness):
    seen = {}

    def inspect_body(request):
        body = request.body
        seen["body"] = body
        started = body.startProducing(RecordingConsumer())
        seen["fired"] = started.called
        body.read_all(0).addCallback(lambda data: respond(request, 200, b"read:%r" % data))
        return server.NOT_DONE_YET

    port = harness.serve(Probe(inspect_body))
    client = await harness.connect(port)
    client.send(head(b"GET", b"/"))
    response = await client.response()
    assert response.body == b"read:b''"
    assert seen["body"] is EMPTY_BODY
    assert verifyObject(IBodyProducer, EMPTY_BODY)
    assert seen["body"].length == 0
    assert seen["fired"] is True

    client.send(head(b"POST", b"/", b"Content-Length: 0"))
    assert (await client.response()).body == b"read:b''"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest_twisted.ensureDeferred
async def test_read_all_enforces_max_bytes(harness, framing):
    results = []

    def limited(request):
        def ok(data):
            results.append(data)
            respond(request, 200, data)

        def too_large(failure):
            results.append(failure)
            respond(request, 413, b"too large")

        request.body.read_all(10).addCallbacks(ok, too_large)
        return server.NOT_DONE_YET

    port = harness.serve(Probe(limited))
    client = await harness.connect(port)
    if framing == "chunked":
        client.send(head(b"POST", b"/", b"Transfer-Encoding: chunked") + chunk(b"0123456789"))
        client.send(chunk(b"!") + LAST_CHUNK)
    else:
        client.send(head(b"POST", b"/", b"Content-Length: 11") + b"0123456789!")
    response = await client.response()
    assert response.code == 413
    assert results[0].check(BodyTooLarge)
    assert results[0].value.limit == 10

    # Exactly max_bytes is fine, and the connection survived.
    client.send(head(b"POST", b"/", b"Content-Length: 10") + b"0123456789")
    response = await client.response()
    assert (response.code, response.body) == (200, b"0123456789")


# -- 9. Expect: 100-continue -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_expect_100_continue(harness):
    probe = Probe(echo)
    port = harness.serve(probe, max_body_size=100)
    client = await harness.connect(port)

    client.send(head(b"POST", b"/e", b"Content-Length: 11", b"Expect: 100-continue"))
    interim = await client.response()
    assert interim.code == 100
    assert len(probe.requests) == 1
    client.send(b"hello there")
    response = await client.response()
    assert (response.code, response.body) == (200, b"hello there")

    # Over the limit: a 413 instead of the 100.
    client = await harness.connect(port)
    client.send(head(b"POST", b"/e", b"Content-Length: 101", b"Expect: 100-continue"))
    response = await client.response()
    assert response.code == 413
    await client.wait_closed()
    assert b"100 Continue" not in bytes(client.buffer)
    assert len(probe.requests) == 1


# -- 10. the Twisted internals hubtwist.proxy.early relies on -----------------------------------


def test_twisted_internals_present():
    import twisted

    where = (f"Twisted {twisted.__version__} changed twisted.web.http; "
             "hubtwist/proxy/early.py must be updated:")

    # Hooks StreamingChannel / StreamingRequest override must still be called by Twisted.
    for cls, names in [
        (http.HTTPChannel, ["allHeadersReceived", "allContentReceived", "requestDone",
                            "rawDataReceived", "loseConnection", "pauseProducing",
                            "resumeProducing", "connectionLost", "checkPersistence"]),
        (http.Request, ["gotLength", "handleContentChunk", "requestReceived", "connectionLost",
                        "finish"]),
    ]:
        for name in names:
            assert callable(getattr(cls, name, None)), f"{where} {cls.__name__}.{name} is gone"
    assert "parsePOSTFormSubmission" in inspect.signature(server.Site.__init__).parameters, (
        f"{where} Site no longer accepts parsePOSTFormSubmission")
    assert "length" in vars(http.HTTPChannel), f"{where} HTTPChannel.length is gone"
    assert callable(getattr(http.HTTPChannel, "headerReceived", None)), (
        f"{where} HTTPChannel.headerReceived is gone (one Host per request is checked there)")

    # The private request-line attributes, read in allHeadersReceived, and the order of
    # the hooks: gotLength from allHeadersReceived, body bytes to handleContentChunk,
    # then requestReceived from allContentReceived.
    seen = {}
    calls = []
    missing = object()

    class Request(StreamingRequest):
        def gotLength(self, length):
            calls.append(("gotLength", length))
            super().gotLength(length)

        def handleContentChunk(self, data):
            calls.append(("handleContentChunk", data))
            super().handleContentChunk(data)

        def requestReceived(self, command, path, version):
            calls.append(("requestReceived", command))
            super().requestReceived(command, path, version)

        def process(self):
            calls.append(("process",))

    class Channel(StreamingChannel):
        def allHeadersReceived(self):
            for name in ("_command", "_path", "_version"):
                seen[name] = getattr(self, name, missing)
            calls.append(("allHeadersReceived",))
            super().allHeadersReceived()

    site = StreamingSite(Resource(), requestFactory=Request, timeout=None)
    site.protocol = Channel
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    try:
        channel.dataReceived(b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nab")
        for name, value in [("_command", b"POST"), ("_path", b"/x?y=1"),
                            ("_version", b"HTTP/1.1")]:
            assert seen[name] is not missing, (
                f"{where} HTTPChannel.{name} is no longer set when allHeadersReceived is "
                "called; StreamingChannel.allHeadersReceived reads it to start the request "
                "early")
            assert seen[name] == value, f"{where} HTTPChannel.{name} now holds {seen[name]!r}"
        # StreamingRequest._dispatch_early calls http.Request.requestReceived (which
        # calls process) directly, hence no ("requestReceived", ...) entry yet.
        assert calls[:3] == [("allHeadersReceived",), ("gotLength", 3), ("process",)], (
            f"{where} the request hooks are called differently: {calls}")
        channel.dataReceived(b"c")
        assert calls[3:] == [("handleContentChunk", b"ab"), ("handleContentChunk", b"c"),
                             ("requestReceived", b"POST")], (
            f"{where} body bytes no longer reach Request.handleContentChunk, or the end of "
            f"the body no longer calls requestReceived: {calls}")
        assert channel.requests[0].body._state == "ended"
    finally:
        channel.connectionLost(Failure(Exception("test over")))
