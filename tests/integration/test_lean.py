"""
The lean path (hubtwist.proxy.lean): requests it answers, requests it hands over to
twisted.web on the same connection, and the byte-level HTTP/1.1 it speaks. A real app and
raw client sockets on loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

import pytest
import pytest_twisted
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from hubtwist.app import serve
from hubtwist.config.loader import load_dict
from tests.helpers import HTTPAPP, byte_pattern, in_thread, poll, reactor, within

APP = [*HTTPAPP, "--port", "{port}"]


@pytest.fixture
def hubtwist():
    running = []

    async def start(**raw):
        raw.setdefault("listen", ["tcp:0:interface=127.0.0.1"])
        raw.setdefault("servers", {"app": {"command": APP, "autostart": True}})
        instance = await serve(reactor(), load_dict(raw, "test"))
        instance.port = instance.ports[0].getHost().port
        for keeper in instance.keepers.values():
            await within(keeper.ensure_running(), 30)
        running.append(instance)
        return instance

    yield start
    for instance in running:
        pytest_twisted.blockon(within(instance.stop(), 30))


class Client:
    """A blocking HTTP/1.1 client on one socket that reads responses exactly."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _take_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            assert self._fill(), f"connection closed; got {self.buffer!r}"
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            assert self._fill(), "connection closed mid-body"
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response(self, head_request: bool = False):
        """(status, {lower name: [values]}, body) of the next response."""
        status = int(self._take_line().split(b" ")[1])
        headers: dict[bytes, list[bytes]] = {}
        while line := self._take_line():
            name, _, value = line.partition(b":")
            headers.setdefault(name.lower(), []).append(value.strip())
        if head_request or status in (204, 304):
            return status, headers, b""
        if b"content-length" in headers:
            return status, headers, self._take(int(headers[b"content-length"][0]))
        if headers.get(b"transfer-encoding") == [b"chunked"]:
            body = b""
            while size := int(self._take_line(), 16):
                body += self._take(size)
                assert self._take(2) == b"\r\n"
            assert self._take_line() == b""
            return status, headers, body
        while self._fill():
            pass
        body, self.buffer = self.buffer, b""
        return status, headers, body

    def closed(self) -> bool:
        """Whether the server closed the connection (after what was read)."""
        return not self.buffer and not self._fill()

    def close(self) -> None:
        self.sock.close()


def get(path: str, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def one_connection(port: int, *requests: bytes) -> list:
    """Each request sent after the answer to the previous one, on one connection: the
    answers (status, headers, body)."""
    c = Client(port)
    try:
        answers = []
        for request in requests:
            c.send(request)
            answers.append(c.response())
        return answers
    finally:
        c.close()


@pytest_twisted.ensureDeferred
async def test_gets_take_the_lean_path_with_the_same_answers(hubtwist):
    ht = await hubtwist()

    before = ht.lean.served
    big, echo, redirect, chunked = await in_thread(
        one_connection, ht.port, get("/app/bytes/100000"),
        get("/app/echo?x=1", "X-Custom: kept\r\nConnection: keep-alive, X-Hop\r\n"
                             "X-Hop: dropped\r\n"),
        get("/app/redirect?to=/app/elsewhere"), get("/app/chunked?n=3"))
    assert ht.lean.served - before == 4
    assert big[0] == 200 and len(big[2]) == 100000
    seen = json.loads(echo[2])
    assert seen["path"] == "/echo?x=1" and seen["method"] == "GET"
    headers = {name.lower(): value for name, value in seen["headers"].items()}
    assert headers["x-custom"] == "kept" and "x-hop" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-prefix"] == "/app"
    assert redirect[0] == 302
    assert redirect[1][b"location"][0].endswith(b"/app/elsewhere")
    assert chunked[0] == 200 and chunked[1][b"transfer-encoding"] == [b"chunked"]
    assert chunked[2]


@pytest_twisted.ensureDeferred
async def test_a_request_it_does_not_take_hands_the_connection_over(hubtwist):
    ht = await hubtwist()
    payload = b"z" * 70000

    before = ht.lean.served
    first, posted, own, last = await in_thread(
        one_connection, ht.port, get("/app/echo"),
        get("/app/echo", f"Content-Length: {len(payload)}\r\n", "POST") + payload,
        get("/api/servers"),  # hubtwist's own page
        get("/app/echo"))  # back on the lean path once twisted.web is done
    assert ht.lean.served - before == 2
    assert first[0] == posted[0] == own[0] == last[0] == 200
    assert json.loads(posted[2])["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert b"app" in own[2]
    assert json.loads(last[2])["method"] == "GET"


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_are_answered_in_order(hubtwist):
    ht = await hubtwist()

    def client():
        c = Client(ht.port)
        try:
            c.send(get("/app/echo?n=1") + get("/app/bytes/10", method="HEAD")
                   + get("/app/echo?n=3") + get("/app/echo?n=4", "Connection: close\r\n"))
            answers = [c.response(), c.response(head_request=True), c.response(),
                       c.response()]
            return answers, c.closed()
        finally:
            c.close()

    answers, closed = await in_thread(client)
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert json.loads(answers[0][2])["path"] == "/echo?n=1"
    assert answers[1][2] == b""
    assert json.loads(answers[2][2])["path"] == "/echo?n=3"
    assert json.loads(answers[3][2])["path"] == "/echo?n=4"
    assert answers[3][1][b"connection"] == [b"close"]
    assert closed


HEADS_LEFT_TO_TWISTED_WEB = {
    # (head, its answer; None: closed without one)
    "space-in-name": (b"GET /app/echo HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400),
    "bare-lf": (b"GET /app/echo HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n", 400),
    "nul": (b"GET /app/echo HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    "600-headers": (b"GET /app/echo HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 600 + b"\r\n",
                    400),
    "40k-line": (b"GET /app/echo HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 40000 + b"\r\n\r\n",
                 None),
    # RFC 9112 3.2: the app and hubtwist must not disagree about the host
    "two-hosts": (b"GET /app/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "two-hosts-apart": (b"GET /app/echo HTTP/1.1\r\nHost: a\r\nX: 1\r\nhost: b\r\n\r\n", 400),
    # unusual but accepted by twisted.web
    "no-host": (b"GET /app/echo HTTP/1.1\r\n\r\n", 200),
    "http-1.0": (b"GET /app/echo HTTP/1.0\r\n\r\n", 200),
}


@pytest.mark.parametrize("case", sorted(HEADS_LEFT_TO_TWISTED_WEB))
@pytest_twisted.ensureDeferred
async def test_heads_it_does_not_take_are_answered_by_twisted_web(hubtwist, case):
    head, status = HEADS_LEFT_TO_TWISTED_WEB[case]
    ht = await hubtwist()

    def client():
        c = Client(ht.port)
        try:
            c.send(head)
            return None if c.closed() else c.response()[0]
        except ConnectionError:
            return None
        finally:
            c.close()

    before = ht.lean.served
    assert await in_thread(client) == status
    assert ht.lean.served == before


@pytest_twisted.ensureDeferred
async def test_an_unreachable_app_is_502_and_the_connection_stays_usable(hubtwist):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))  # bound, never listening: refused
        ht = await hubtwist(servers={"app": {"command": APP, "autostart": True},
                                     "gone": {"port": probe.getsockname()[1]}})

        failed, after = await in_thread(
            one_connection, ht.port, get("/gone/x", "Accept: application/json\r\n"),
            get("/app/echo"))
    assert failed[0] == 502 and json.loads(failed[2])["error"] == "App not reachable"
    assert after[0] == 200


OWN_COOKIE = "hubtwist-" + hashlib.sha256(b"secret-token").hexdigest()[:12]  # the token gate's


@pytest_twisted.ensureDeferred
async def test_behind_the_token_gate_only_requests_with_the_token_header_are_lean(hubtwist):
    ht = await hubtwist(token="secret-token")

    before = ht.lean.served
    admitted, refused = await in_thread(
        one_connection, ht.port,
        get("/app/echo", "Authorization: token secret-token\r\nX-Forwarded-User: mallory\r\n"
                         f"Cookie: {OWN_COOKIE}=x; app=1\r\n"),
        get("/app/echo", "Accept: application/json\r\n"))
    assert admitted[0] == 200 and refused[0] == 401
    headers = json.loads(admitted[2])["headers"]
    # hubtwist's credentials are its own: neither the token nor its cookie reach the app.
    assert "authorization" not in headers and headers["cookie"] == "app=1"
    assert "x-forwarded-user" not in headers  # only hubtwist sets who is calling
    [(wrong, _, _)] = await in_thread(
        one_connection, ht.port,
        get("/app/echo", "Authorization: bearer not-it\r\nAccept: application/json\r\n"))
    assert wrong == 401
    assert ht.lean.served - before == 1


# -- what an app sends that must not reach the client as is (both paths) -----------------------

CANNED = {
    b"/inject": (b"HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: injected=1\r\nBad Name: x\r\n"
                 b"Connection: X-Private\r\nX-Private: secret\r\nContent-Length: 2\r\n\r\nok"),
    b"/bad-location": (b"HTTP/1.1 302 Found\r\nLocation: http://[oops/\r\n"
                       b"Content-Length: 0\r\n\r\n"),
    b"/head": b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
}


class _CannedApp(Protocol):
    """Answers each request with CANNED[path], byte for byte (an app we do not trust)."""

    def __init__(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            request_line = head.split(b"\r\n")[0].split(b" ")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            self.buffer = self.buffer[length[0]:] if length else self.buffer
            self.transport.write(CANNED[request_line[1].partition(b"?")[0]])


@pytest.fixture
def canned_app():
    factory = Factory.forProtocol(_CannedApp)
    port = pytest_twisted.blockon(
        TCP4ServerEndpoint(reactor(), 0, interface="127.0.0.1").listen(factory))
    yield port.getHost().port
    pytest_twisted.blockon(port.stopListening())


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "ordinary"])
@pytest_twisted.ensureDeferred
async def test_an_app_s_header_tricks_do_not_reach_the_client(hubtwist, canned_app, lean):
    ht = await hubtwist(servers={"canned": {"port": canned_app}})
    # a GET takes the lean path; with a body the same request takes twisted.web's
    method, extra, payload = ("GET", "", "") if lean else ("POST", "Content-Length: 1\r\n", "x")

    def request(path: str) -> bytes:
        return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n{payload}".encode()

    before = ht.lean.served
    injected, located = await in_thread(
        one_connection, ht.port, request("/canned/inject"), request("/canned/bad-location"))
    assert injected[0] == 200 and injected[2] == b"ok"
    # The lone LF ends a line (RFC 9112 2.2: as a browser would read the app directly),
    # the same on both paths; the rest is cleaned.
    assert injected[1][b"set-cookie"] == [b"injected=1"] and injected[1][b"x-a"] == [b"a"]
    assert b"bad name" not in injected[1] and b"x-private" not in injected[1]
    assert located[0] == 302 and located[1][b"location"] == [b"http://[oops/"]
    assert (ht.lean.served - before == 2) is lean


@pytest_twisted.ensureDeferred
async def test_head_keeps_the_app_s_content_length(hubtwist, canned_app):
    ht = await hubtwist(servers={"canned": {"port": canned_app}})

    def client():
        c = Client(ht.port)
        try:
            c.send(get("/canned/head", method="HEAD"))
            return c.response(head_request=True)
        finally:
            c.close()

    status, headers, body = await in_thread(client)
    assert status == 200 and headers[b"content-length"] == [b"1234"] and body == b""


# -- large downloads: splice(2) ----------------------------------------------------------------

MIB = 1 << 20


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest_twisted.ensureDeferred
async def test_large_downloads_move_in_the_kernel_byte_for_byte(hubtwist):
    ht = await hubtwist()
    size = 8 * MIB + 12345
    before = ht.lean.spliced
    first, second, small = await in_thread(
        one_connection, ht.port, get(f"/app/bytes/{size}"), get(f"/app/bytes/{size}"),
        get("/app/echo"))
    expected = hashlib.sha256(byte_pattern(size)).hexdigest()
    assert first[0] == second[0] == small[0] == 200
    assert hashlib.sha256(first[2]).hexdigest() == expected
    assert hashlib.sha256(second[2]).hexdigest() == expected  # keep-alive after a splice
    assert json.loads(small[2])["method"] == "GET"
    assert ht.lean.spliced - before == 2


@pytest_twisted.ensureDeferred
async def test_a_client_leaving_mid_splice_leaves_nothing_open(hubtwist):
    ht = await hubtwist()

    def leave_early():
        c = Client(ht.port)
        try:
            c.send(get(f"/app/bytes/{64 * MIB}"))
            while len(c.buffer) < 2 * MIB:
                assert c._fill()
        finally:
            c.close()

    [(status, _, _)] = await in_thread(one_connection, ht.port, get("/app/echo"))
    assert status == 200  # the app's keep-alive connection is now in the pool
    baseline = _open_fds()
    before = ht.lean.spliced
    await in_thread(leave_early)
    assert ht.lean.spliced - before == 1
    # the pipe and the app's connection (mid-body: not reusable) are closed
    await poll(lambda: _open_fds() <= baseline, 10, message="the splice's fds to be closed")
    [(status, _, body)] = await in_thread(one_connection, ht.port, get("/app/bytes/100"))
    assert status == 200 and body == byte_pattern(100)


@pytest_twisted.ensureDeferred
async def test_an_app_dying_mid_splice_ends_the_client_connection(hubtwist):
    ht = await hubtwist()

    def client():
        c = Client(ht.port)
        try:
            c.send(get(f"/app/die?size={16 * MIB}"))
            with pytest.raises(AssertionError, match="closed mid-body"):
                c.response()
        finally:
            c.close()

    before = ht.lean.spliced
    await in_thread(client)
    assert ht.lean.spliced - before == 1


@pytest_twisted.ensureDeferred
async def test_an_empty_host_is_replaced_not_doubled(hubtwist):
    ht = await hubtwist()
    [(status, _, body)] = await in_thread(
        one_connection, ht.port, b"GET /app/echo HTTP/1.1\r\nHost:\r\n\r\n")
    hosts = [value for name, value in json.loads(body)["header_list"] if name == "host"]
    assert status == 200 and len(hosts) == 1 and hosts[0]


@pytest_twisted.ensureDeferred
async def test_a_failing_mappath_is_a_500_and_the_connection_stays_usable(hubtwist):
    ht = await hubtwist(servers={
        "app": {"command": APP, "autostart": True},
        "bad": {"command": APP, "autostart": True,
                "mappath": "tests.apps.rewriters:broken_mappath"}})
    failed, after = await in_thread(
        one_connection, ht.port, get("/bad/x", "Accept: application/json\r\n"),
        get("/app/echo"))
    assert failed[0] == 500 and json.loads(failed[2])["error"] == "Internal error"
    assert after[0] == 200


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "ordinary"])
@pytest_twisted.ensureDeferred
async def test_an_error_while_relaying_is_a_502_not_a_hang(hubtwist, canned_app, lean,
                                                           monkeypatch):
    from hubtwist.proxy import forward

    def broken(*_args):
        raise RuntimeError("a bug in header rewriting")

    # stands in for any bug between the app's head and the client's (both paths map the
    # app's headers through forward.mapped_headers)
    monkeypatch.setattr(forward, "rewrite_response_header", broken)
    ht = await hubtwist(servers={"canned": {"port": canned_app}})
    method, extra, payload = ("GET", "", "") if lean else ("POST", "Content-Length: 1\r\n", "x")
    request = (f"{method} /canned/bad-location HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Accept: application/json\r\n{extra}\r\n{payload}").encode()
    failed, again = await in_thread(one_connection, ht.port, request, request)
    assert failed[0] == again[0] == 502
    assert json.loads(failed[2])["error"] == "Bad gateway"


@pytest_twisted.ensureDeferred
async def test_a_connection_comes_back_to_the_lean_path_after_an_ordinary_request(hubtwist):
    ht = await hubtwist()

    def client():
        c = Client(ht.port)
        try:
            answers = []
            for request in (b"GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n",
                            b"POST /app/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
                            b"GET /app/echo?after-post HTTP/1.1\r\nHost: a\r\n\r\n",
                            b"OPTIONS /app/echo HTTP/1.1\r\nHost: a\r\n\r\n",
                            b"GET /app/echo?after-options HTTP/1.1\r\nHost: a\r\n\r\n"):
                c.send(request)
                status, _, body = c.response()
                answers.append((status, json.loads(body)["method"]))
            return answers
        finally:
            c.close()

    before = ht.lean.served
    answers = await in_thread(client)
    assert answers == [(200, "GET"), (200, "POST"), (200, "GET"), (200, "OPTIONS"), (200, "GET")]
    assert ht.lean.served - before == 3  # every GET, on the one connection
    assert ht.lean.returned == 2


@pytest_twisted.ensureDeferred
async def test_the_client_idle_timeout_counts_from_each_response_s_end(hubtwist):
    """A response slower than the client idle timeout is not cut (the app has the next
    move); the connection then stays open for the idle timeout from the response's end,
    and is closed once the client stays idle longer."""
    ht = await hubtwist()
    ht.site.timeOut = 1.0  # the client idle timeout of connections accepted from now on

    def slow_then_quick_then_idle():
        client = Client(ht.port)
        try:
            client.send(get("/app/slow?s=2.5"))  # 2.5 idle timeouts long
            slow = client.response()
            # idle for 0.7 of the timeout after the slow response: still open (a clock
            # counting from anything before the response's end would have closed it)
            time.sleep(0.7)
            client.send(get("/app/echo"))
            quick = client.response()
            started = time.monotonic()
            closed = client.closed()  # blocks until the server closes it
            return slow, quick, closed, time.monotonic() - started
        finally:
            client.close()

    before = ht.lean.served
    slow, quick, closed, idle = await in_thread(slow_then_quick_then_idle)
    assert ht.lean.served - before == 2
    assert slow[0] == 200 and slow[2] == b"slow done"
    assert quick[0] == 200
    assert closed and 0.8 < idle < 6, idle
