"""The lean upstream HTTP/1.1 client, driven byte by byte without a reactor."""

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from hubtwist.proxy.upstream import UpstreamError, UpstreamPool, _Connection
from hubtwist.supervise import BackendAddress

ADDRESS = BackendAddress.tcp(9000)


class Exchange:
    def __init__(self, method=b"GET", body=None, headers=((b"Host", b"app"),)):
        self.pool = UpstreamPool(MemoryReactorClock())
        self.connection = _Connection(self.pool, ADDRESS)
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)
        self.responses = []
        self.errors = []
        self.connection.send(method, b"/x?y", list(headers), body).addCallbacks(
            self.responses.append, self.errors.append)
        self.chunks = []
        self.ended = []

    def feed(self, *pieces: bytes):
        for piece in pieces:
            self.connection.dataReceived(piece)

    def deliver(self):
        self.responses[0].deliver(self.chunks.append, self.ended.append)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def pooled(self) -> bool:
        backend = self.pool._backends.get(ADDRESS)
        return backend is not None and self.connection in backend.idle


def test_request_head_is_written_in_one_piece():
    exchange = Exchange(headers=[(b"Host", b"app"), (b"X-A", b"1"), (b"X-A", b"2")])
    assert exchange.transport.value() == b"GET /x?y HTTP/1.1\r\nHost: app\r\nX-A: 1\r\nX-A: 2\r\n\r\n"


def test_empty_post_gets_a_zero_length():
    exchange = Exchange(method=b"POST")
    assert b"Content-Length: 0\r\n\r\n" in exchange.transport.value()


def test_fixed_length_body_split_anywhere_and_connection_reused():
    exchange = Exchange()
    exchange.feed(b"HTTP/1.1 201 Created\r\nContent-Le", b"ngth: 10\r\nX-App: yes\r\n\r\nhello")
    response = exchange.responses[0]
    assert (response.code, response.phrase, response.length) == (201, b"Created", 10)
    assert response.headers == [(b"X-App", b"yes")]
    exchange.deliver()
    exchange.feed(b"wor", b"ld")
    assert exchange.body == b"helloworld" and exchange.ended == [None]
    assert exchange.pooled


def test_chunked_body_is_decoded_across_arbitrary_splits():
    exchange = Exchange()
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    exchange.feed(raw[:50])
    exchange.deliver()
    for index in range(50, len(raw)):
        exchange.feed(raw[index:index + 1])
    assert exchange.responses[0].length is None
    assert exchange.body == b"hello world" and exchange.ended == [None]
    assert exchange.pooled


def test_interim_100_continue_is_skipped():
    exchange = Exchange()
    exchange.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    exchange.deliver()
    assert exchange.responses[0].code == 200 and exchange.body == b"ok"


@pytest.mark.parametrize("method, status", [(b"HEAD", b"200 OK"), (b"GET", b"204 No Content"),
                                            (b"GET", b"304 Not Modified")])
def test_responses_without_a_body(method, status):
    exchange = Exchange(method=method)
    exchange.feed(b"HTTP/1.1 " + status + b"\r\nContent-Length: 99\r\n\r\n")
    exchange.deliver()
    assert exchange.body == b"" and exchange.ended == [None] and exchange.pooled


def test_body_until_close_is_not_reused():
    exchange = Exchange()
    exchange.feed(b"HTTP/1.0 200 OK\r\n\r\nabc")
    exchange.deliver()
    from twisted.internet.error import ConnectionDone

    exchange.connection.connectionLost(Failure(ConnectionDone()))
    assert exchange.body == b"abc" and exchange.ended == [None] and not exchange.pooled


def test_connection_close_header_prevents_reuse():
    exchange = Exchange()
    exchange.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx")
    exchange.deliver()
    assert exchange.ended == [None] and not exchange.pooled
    assert exchange.transport.disconnecting


def test_garbage_instead_of_http_fails_the_request():
    exchange = Exchange()
    exchange.feed(b"SSH-2.0-OpenSSH\r\n\r\n")
    assert exchange.errors and exchange.errors[0].check(UpstreamError)


def test_truncated_body_is_reported():
    exchange = Exchange()
    exchange.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    exchange.deliver()
    from twisted.internet.error import ConnectionLost

    exchange.connection.connectionLost(Failure(ConnectionLost()))
    assert exchange.ended[0].check(UpstreamError)


def test_sweep_closes_connections_idle_too_long():
    exchange = Exchange()
    exchange.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    exchange.deliver()
    assert exchange.pooled
    clock = exchange.pool._reactor
    clock.advance(3)
    assert not exchange.transport.disconnecting
    clock.advance(2.5)
    assert exchange.transport.disconnecting and not exchange.pooled


# -- the pool's limits and queue (connects driven by hand) -------------------------------


class Pool:
    """An UpstreamPool whose connects the test completes or fails by hand."""

    def __init__(self, **limits):
        from twisted.internet.defer import Deferred

        from hubtwist.proxy.upstream import BackendLimits

        self.clock = MemoryReactorClock()
        self.pool = UpstreamPool(self.clock)
        self.limits = BackendLimits(**limits)
        self.connects = []  # Deferreds of connects in progress, oldest first
        self.pool._connect = lambda address: self.connects.append(Deferred()) or self.connects[-1]

    def request(self, method=b"GET"):
        results = []
        self.pool.request(ADDRESS, method, b"/", [(b"Host", b"a")], None, self.limits).addBoth(
            results.append)
        return results

    def complete(self, index=0):
        connection = _Connection(self.pool, ADDRESS)
        connection.makeConnection(StringTransport())
        self.connects.pop(index).callback(connection)
        return connection

    @property
    def backend(self):
        return self.pool._backends[ADDRESS]


def answer(connection, body=b"ok"):
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_a_burst_opens_at_most_max_connecting_unanswered_connections():
    pool = Pool(max_connecting=2)
    waiting = [pool.request() for _ in range(5)]
    assert len(pool.connects) == 2  # not five in one tick
    first = pool.complete()
    assert first.transport.value().startswith(b"GET / HTTP/1.1")
    assert len(pool.connects) == 1  # connected but unanswered: still counts
    answer(first)
    assert waiting[0][0].code == 200
    # Its first answer proves the connection: another may open.
    assert len(pool.connects) == 2


def test_a_freed_connection_goes_to_the_first_waiting_request():
    pool = Pool(max_connections=1)
    first, second, third = pool.request(), pool.request(), pool.request()
    connection = pool.complete()
    assert not pool.connects  # max_connections: no second connection
    answer(connection)
    first[0].deliver(lambda data: None, lambda failure: None)
    # Released: the second request takes it, in arrival order, before the third.
    assert connection.transport.value().count(b"GET / ") == 2
    assert not second and not third
    answer(connection)
    assert second[0].code == 200 and not third


def test_a_request_that_waits_longer_than_queue_timeout_fails_with_backend_busy():
    from hubtwist.proxy.upstream import BackendBusy

    pool = Pool(max_connections=1, queue_timeout=2)
    pool.request()
    pool.complete()  # busy with the first request, never answered
    late = pool.request()
    pool.clock.advance(2.1)
    assert late[0].check(BackendBusy) and late[0].value.queued == 1
    assert not pool.backend.waiting


def test_a_cancelled_waiting_request_leaves_the_queue():
    pool = Pool(max_connections=1)
    pool.request()
    pool.complete()
    waiting = pool.pool.request(ADDRESS, b"GET", b"/", [], None, pool.limits)
    waiting.addErrback(lambda failure: None)
    waiting.cancel()
    assert not pool.backend.waiting and not pool.clock.getDelayedCalls()[1:]


def test_refused_connects_fail_one_request_each_and_strand_none():
    from twisted.internet.error import ConnectionRefusedError

    pool = Pool(max_connecting=2)
    waiting = [pool.request() for _ in range(4)]
    while pool.connects:
        pool.connects.pop(0).errback(ConnectionRefusedError())
    assert all(result and result[0].check(ConnectionRefusedError) for result in waiting)
    assert (pool.backend.open, pool.backend.unproven, pool.backend.connecting) == (0, 0, 0)


def test_a_lost_connection_frees_its_place():
    from twisted.internet.error import ConnectionLost

    pool = Pool(max_connections=1)
    first = pool.request()
    second = pool.request()
    connection = pool.complete()
    connection.connectionLost(Failure(ConnectionLost()))
    assert first[0].check(UpstreamError)
    assert len(pool.connects) == 1 and not second  # a new connection for the next one
    answer(pool.complete())
    assert second[0].code == 200
