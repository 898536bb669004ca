"""
The proxy against hostile or unlucky peers, in-process against real sockets on loopback:
requests that must not be sent twice, an app's malformed 101, a burst of requests waiting
for a cold app with a small listen backlog, clients that trickle their heads, send bare
LFs or stop reading mid-response.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import sys
import time

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource

from hubtwist.proxy.early import StreamingSite
from tests.helpers import in_thread, poll, reactor, within
from tests.integration.test_proxy import APP, hubtwist  # noqa: F401 (fixture)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def listen(factory) -> int:
    port = reactor().listenTCP(0, factory, interface="127.0.0.1")
    listen.ports.append(port)
    return port.getHost().port


listen.ports = []


@pytest.fixture(autouse=True)
def _close_listeners():
    yield
    for port in listen.ports:
        pytest_twisted.blockon(port.stopListening())
    listen.ports.clear()


def raw_exchange(port: int, data: bytes, timeout: float = 10, read_until=b"\r\n\r\n") -> bytes:
    """Send C{data}, read until C{read_until} or the connection ends (blocking)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(data)
        received = b""
        while read_until not in received:
            piece = client.recv(65536)
            if not piece:
                break
            received += piece
        return received


# -- requests that must not be replayed --------------------------------------------------


class DropsSecondRequest(Protocol):
    """An app that answers the first request on a connection and, after reading the
    second one, closes the connection without answering (as an app that restarts, or
    closes an idle keep-alive connection as it is picked, would)."""

    def connectionMade(self) -> None:
        self.buffer = b""
        self.answered = 0

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.factory.seen.append(head.split(b" ", 1)[0])
            if self.answered:
                self.transport.loseConnection()
                return
            self.answered += 1
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.mark.parametrize("method, sent, status", [
    ("DELETE", 1, 502), ("POST", 1, 502), ("PUT", 1, 502), ("PATCH", 1, 502),
    ("GET", 2, 200), ("OPTIONS", 2, 200),
])
@pytest_twisted.ensureDeferred
async def test_only_idempotent_requests_are_retried_on_a_dead_keep_alive_connection(
        hubtwist, method, sent, status):
    factory = Factory.forProtocol(DropsSecondRequest)
    factory.seen = []
    port = await listen(factory)
    ht = await hubtwist(servers={"app": {"port": port}})
    first = await within(treq.get(f"{ht.url}/app/warm"), 10)
    assert first.code == 200 and await first.content() == b"ok"
    factory.seen.clear()
    # The pooled connection is reused, dies before answering: never send a POST twice.
    response = await within(treq.request(method, f"{ht.url}/app/act"), 10)
    await response.content()
    assert factory.seen == [method.encode()] * sent
    assert response.code == status


# -- the app's 101 -------------------------------------------------------------------------


class DirtySwitchingApp(Protocol):
    """A WebSocket app whose 101 carries a lone LF, a lone CR, a NUL and an invalid name."""
    # (The lone LF is a line end: RFC 9112 2.2, hubtwist.proxy.http1.response_head_end.)

    def connectionMade(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        head = self.buffer.split(b"\r\n\r\n", 1)[0]
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n"
            b"X-Lf: a\nSet-Cookie: injected=1\r\n"
            b"X-Cr: b\rSet-Cookie: injected=2\r\n"
            b"X-Nul: c\x00d\r\n"
            b"Bad Name: e\r\n"
            b"X-Fine: f\r\n\r\n")


@pytest_twisted.ensureDeferred
async def test_the_apps_101_head_is_cleaned_like_every_response(hubtwist):
    port = await listen(Factory.forProtocol(DirtySwitchingApp))
    ht = await hubtwist(servers={"ws": {"port": port}})
    handshake = (b"GET /ws/socket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    answer = await in_thread(raw_exchange, ht.ports[0].getHost().port, handshake)
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 101 "), answer
    lines = head.split(b"\r\n")
    assert all(b"\n" not in line and b"\r" not in line and b"\x00" not in line for line in lines)
    # A lone LF ends a line (RFC 9112 2.2, as a browser reads the app directly); a lone CR
    # does not, and never starts a header.
    assert [line for line in lines if line.lower().startswith(b"set-cookie")] == [
        b"Set-Cookie: injected=1"], lines
    assert not [line for line in lines if line.startswith(b"Bad Name")], lines
    assert b"X-Fine: f" in lines and b"X-Lf: a" in lines
    assert b"X-Cr: b Set-Cookie: injected=2" in lines


class LfOnlyApp(Protocol):
    """An app that ends the lines of its heads with a bare LF: every line, or (C{/mixed})
    all but the status line, as busybox httpd answers for a CGI script. Answers each
    request with its method, path and body, a WebSocket handshake with a 101."""

    connections = 0

    def connectionMade(self) -> None:
        LfOnlyApp.connections += 1
        self.buffer = b""
        self.switched = False

    def dataReceived(self, data: bytes) -> None:
        if self.switched:
            self.transport.write(data)  # raw echo after the 101
            return
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            fields = {line.split(b":", 1)[0].lower(): line.split(b":", 1)[1].strip()
                      for line in lines[1:]}
            length = int(fields.get(b"content-length", b"0"))
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            path = lines[0].split(b" ")[1]
            if fields.get(b"upgrade", b"").lower() == b"websocket":
                accept = base64.b64encode(hashlib.sha1(fields[b"sec-websocket-key"] + WS_GUID).digest())
                self.transport.write(b"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n"
                                     b"Connection: Upgrade\nSec-WebSocket-Accept: " + accept +
                                     b"\n\n")
                self.switched = True
                return
            body = lines[0].split(b" ")[0] + b" " + path + b" " + rest[:length]
            status = b"HTTP/1.1 200 OK\r\n" if path.startswith(b"/mixed") else b"HTTP/1.1 200 OK\n"
            self.transport.write(status + b"Content-Type: text/plain\nX-App: lf\n"
                                 b"Content-Length: %d\n\n%s" % (len(body), body))


@pytest_twisted.ensureDeferred
async def test_an_app_whose_heads_end_lines_with_lf_is_served(hubtwist):
    port = await listen(Factory.forProtocol(LfOnlyApp))
    ht = await hubtwist(servers={"app": {"port": port}})
    before, LfOnlyApp.connections = ht.lean.served, 0
    for path in ("page?x=1", "mixed", "page"):
        response = await within(treq.get(f"{ht.url}/app/{path}"), 10)
        assert response.code == 200 and response.headers.getRawHeaders("x-app") == ["lf"]
        assert await response.content() == b"GET /" + path.encode() + b" "
    assert ht.lean.served == before + 3
    # A head with lone LFs never has a next response on its connection.
    assert LfOnlyApp.connections == 3
    response = await within(treq.post(f"{ht.url}/app/form", data=b"a=1"), 10)  # twisted.web
    assert response.code == 200 and await response.content() == b"POST /form a=1"
    handshake = (b"GET /app/socket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    answer = await in_thread(raw_exchange, ht.ports[0].getHost().port, handshake)
    assert answer.startswith(b"HTTP/1.1 101 ") and b"\r\nUpgrade: websocket\r\n" in answer, answer


# -- a burst waiting for a cold app --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_burst_waiting_for_a_cold_app_with_a_small_backlog_is_answered_at_once(hubtwist):
    # Python's http.server listens with a backlog of 5. Every request below waits for the
    # lazy start; when the app is ready, hubtwist must not open 200 connections in one tick.
    command = ["sh", "-c", f"sleep 1; exec {sys.executable} -m http.server --bind 127.0.0.1 {{port}}"]
    ht = await hubtwist(servers={"cold": {"command": command, "timeout": 30}})
    started = time.monotonic()

    async def one():
        response = await treq.get(f"{ht.url}/cold/", persistent=False)
        await response.content()
        return response.code

    results = await within(DeferredList([ensureDeferred(one()) for _ in range(200)],
                                        consumeErrors=True), 60)
    elapsed = time.monotonic() - started
    codes = [value for ok, value in results if ok]
    assert codes == [200] * 200, [value for ok, value in results if not ok or value != 200][:3]
    # Without the connection limit the answers came in SYN-retransmit waves (2, 3, 4, 6,
    # 9, 16, 29 s after the start); with it, right after the app is up (1 s of sleep + its
    # start-up; generous for a loaded machine).
    assert elapsed < 8, f"the burst took {elapsed:.1f} s"


@pytest_twisted.ensureDeferred
async def test_requests_beyond_max_connections_queue_and_time_out_with_503(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP, "autostart": True,
                                         "max_connections": 1, "queue_timeout": 1}})
    await poll(lambda: ht.keepers["app"].state.name == "RUNNING", 20)
    slow = treq.get(f"{ht.url}/app/slow?s=4", persistent=False)
    await poll(lambda: ht.forwarder.upstream.open_connections(ht.keepers["app"].address) == 1, 10)
    queued = await within(treq.get(f"{ht.url}/app/echo", persistent=False), 10)
    body = await queued.content()
    assert queued.code == 503 and b"busy" in body.lower()
    assert queued.headers.getRawHeaders("retry-after") == ["2"]
    done = await within(slow, 10)
    assert done.code == 200 and await done.content() == b"slow done"
    # The slow request's connection is free again: the next one takes it.
    after = await within(treq.get(f"{ht.url}/app/echo"), 10)
    assert after.code == 200


# -- heads ---------------------------------------------------------------------------------


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"


async def serving(hubtwist, path: str, head_timeout: float) -> int:
    """The port of a server whose connections start on C{path}: hubtwist's lean path, or
    the ordinary twisted.web path (a StreamingSite, as in Hub mode)."""
    if path == "lean":
        ht = await hubtwist(head_timeout=head_timeout, servers={"app": {"command": APP}})
        return ht.ports[0].getHost().port
    return await listen(StreamingSite(Hello(), head_timeout=head_timeout))


def trickle(port: int, head: bytes, interval: float, limit: float) -> tuple[bytes, float]:
    """Send C{head} one byte per C{interval} s until the server answers or closes (or
    C{limit} s pass); returns what it answered and when."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as client:
        client.setblocking(False)
        answer = b""
        for byte in head:
            if time.monotonic() - started > limit:
                break
            try:
                client.send(bytes([byte]))
            except OSError:
                break
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline:
                try:
                    piece = client.recv(4096)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                except OSError:
                    piece = b""
                if not piece:
                    return answer, time.monotonic() - started
                answer += piece
        return answer, time.monotonic() - started


SLOW_HEAD = b"GET /app/echo HTTP/1.1\r\nHost: a\r\nX-Padding: " + b"x" * 400 + b"\r\n\r\n"


@pytest.mark.parametrize("path", ["lean", "twisted.web"])
@pytest_twisted.ensureDeferred
async def test_a_head_trickled_byte_by_byte_gets_408_at_the_deadline(hubtwist, path):
    port = await serving(hubtwist, path, head_timeout=1)
    answer, elapsed = await in_thread(trickle, port, SLOW_HEAD, 0.05, 15)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.9 < elapsed < 5


@pytest.mark.parametrize("path", ["lean", "twisted.web"])
@pytest_twisted.ensureDeferred
async def test_a_head_that_stops_midway_gets_408_at_the_deadline(hubtwist, path):
    port = await serving(hubtwist, path, head_timeout=1)
    started = time.monotonic()
    answer = await in_thread(raw_exchange, port, b"GET /app/echo HTTP/1.1\r\nHost: a\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 5, answer


@pytest.mark.parametrize("path", ["lean", "twisted.web"])
@pytest_twisted.ensureDeferred
async def test_a_head_with_bare_lfs_gets_400_at_once(hubtwist, path):
    port = await serving(hubtwist, path, head_timeout=60)
    started = time.monotonic()
    answer = await in_thread(raw_exchange, port, b"GET /app/echo HTTP/1.1\nHost: a\n\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert time.monotonic() - started < 5


@pytest_twisted.ensureDeferred
async def test_a_fast_keep_alive_client_is_not_cut_by_the_head_deadline(hubtwist):
    ht = await hubtwist(head_timeout=0.5, servers={"app": {"command": APP}})

    def client():
        with socket.create_connection(("127.0.0.1", ht.ports[0].getHost().port), timeout=10) as c:
            codes = []
            for _ in range(3):
                c.sendall(b"GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n")
                answer = b""
                while b"}" not in answer:
                    answer += c.recv(65536)
                codes.append(answer[9:12])
                time.sleep(0.7)  # idle between requests is not a slow head
            return codes

    assert await in_thread(client) == [b"200"] * 3


# -- a client that stops reading -----------------------------------------------------------


def stop_reading_after_the_head(port: int, request: bytes, wait: float) -> tuple[int, bool]:
    """Send C{request}, read the head and a little, stop reading for C{wait} s, then read
    what is left; returns the body bytes received and whether the connection ended early."""
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.connect(("127.0.0.1", port))
        client.settimeout(10)
        client.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            received += client.recv(65536)
        head, body = received.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        time.sleep(wait)
        total = len(body)
        try:
            while total < length:
                piece = client.recv(1 << 20)
                if not piece:
                    break
                total += len(piece)
        except OSError:
            pass  # reset: the connection was dropped
        return total, total < length


SIZE = 200_000_000


@pytest.mark.parametrize("request_head", [
    # the lean path, the body moved by splice(2)
    b"GET /app/bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % SIZE,
    # the twisted.web path (a POST is not lean), the body relayed by the protocol
    b"POST /app/bytes/%d HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n" % SIZE,
], ids=["lean-splice", "twisted.web"])
@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_is_dropped_and_so_is_the_apps_connection(
        hubtwist, request_head):
    ht = await hubtwist(stall_timeout=1, servers={"app": {"command": APP, "autostart": True}})
    await poll(lambda: ht.keepers["app"].state.name == "RUNNING", 20)
    received, cut = await in_thread(stop_reading_after_the_head, ht.ports[0].getHost().port,
                                    request_head, 4)
    assert cut and received < SIZE
    address = ht.keepers["app"].address
    await poll(lambda: ht.forwarder.upstream.open_connections(address) == 0, 10,
               message="the app's connection dropped")


@pytest_twisted.ensureDeferred
async def test_a_slow_client_that_keeps_reading_is_not_cut(hubtwist):
    ht = await hubtwist(stall_timeout=0.5, servers={"app": {"command": APP}})

    def slow_reader():
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            client.connect(("127.0.0.1", ht.ports[0].getHost().port))
            client.settimeout(10)
            client.sendall(b"POST /app/bytes/3000000 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
            total = 0
            deadline = time.monotonic() + 20
            while total < 3_000_000 and time.monotonic() < deadline:
                piece = client.recv(65536)
                if not piece:
                    break
                total += len(piece)
                time.sleep(0.01)  # about 6 MB/s at most: slow, but always reading
            return total  # the head's bytes count too: a whole body is more than 3 MB

    assert await in_thread(slow_reader) >= 3_000_000


# -- small ones ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connection_cannot_name_host_away_on_the_lean_path(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    response = await within(treq.get(f"{ht.url}/app/echo", headers={
        "Connection": "host, x-forwarded-host", "Host": "front.example"}), 20)
    echo = json.loads(await response.content())
    assert echo["headers"]["host"] == "front.example"
    assert echo["headers"]["x-forwarded-host"] == "front.example"
