"""The reverse proxy in-process (hubtwist.app.serve) against real apps on loopback."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import pytest_twisted
import treq
from treq.client import HTTPClient
from twisted.internet.defer import gatherResults
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from hubtwist.app import serve
from hubtwist.config.loader import load_dict
from hubtwist.supervise import State
from tests.helpers import HTTPAPP, poll, reactor, within

APP = [*HTTPAPP, "--port", "{port}"]


@pytest.fixture
def hubtwist():
    """Start hubtwist in this process with the given config; yields the running instance."""
    running = []
    pools = []

    async def start(**raw):
        raw.setdefault("listen", ["tcp:0:interface=127.0.0.1"])
        instance = await serve(reactor(), load_dict(raw, "test"))
        instance.url = f"http://127.0.0.1:{instance.ports[0].getHost().port}"
        running.append(instance)
        return instance

    def client():
        pool = HTTPConnectionPool(reactor(), persistent=True)
        pools.append(pool)
        return HTTPClient(Agent(reactor(), pool=pool))

    start.client = client
    yield start
    for pool in pools:
        pytest_twisted.blockon(pool.closeCachedConnections())
    for instance in running:
        pytest_twisted.blockon(within(instance.stop(), 30))


async def text_of(response) -> str:
    return (await response.content()).decode()


@pytest_twisted.ensureDeferred
async def test_every_method_reaches_the_app_with_its_body(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    body = os.urandom(100_000)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = await within(treq.request(method, f"{ht.url}/app/echo", data=body if method != "GET" else None), 30)
        echo = json.loads(await text_of(response))
        assert response.code == 200 and echo["method"] == method and echo["path"] == "/echo"
        if method != "GET":
            assert echo["body_length"] == len(body)
            assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    head = await treq.head(f"{ht.url}/app/anything")
    assert head.code == 200 and await head.content() == b""


@pytest_twisted.ensureDeferred
async def test_prefix_is_stripped_unless_absolute_url(hubtwist):
    ht = await hubtwist(base_url="/user/alice/",
                        servers={"strip": {"command": APP}, "keep": {"command": APP, "absolute_url": True}})
    strip = json.loads(await text_of(await treq.get(f"{ht.url}/user/alice/strip/echo?x=1")))
    keep = json.loads(await text_of(await treq.get(f"{ht.url}/user/alice/keep/echo?x=1")))
    assert strip["path"] == "/echo?x=1"
    assert keep["path"] == "/user/alice/keep/echo?x=1"


@pytest_twisted.ensureDeferred
async def test_name_without_slash_redirects(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    response = await treq.get(f"{ht.url}/app?q=1", allow_redirects=False)
    assert response.code == 301
    assert response.headers.getRawHeaders("location") == ["/app/?q=1"]


@pytest_twisted.ensureDeferred
async def test_default_server_is_served_at_the_base_url(hubtwist):
    ht = await hubtwist(default_server="app", servers={"app": {"command": APP}})
    echo = json.loads(await text_of(await treq.get(f"{ht.url}/echo")))
    assert echo["path"] == "/echo"
    echo = json.loads(await text_of(await treq.get(f"{ht.url}/app/echo")))
    assert echo["path"] == "/echo"


@pytest_twisted.ensureDeferred
async def test_mappath_and_header_overrides(hubtwist):
    ht = await hubtwist(servers={"app": {
        "command": APP, "mappath": {"/": "/echo"},
        "request_headers_override": {"X-App-Port": "{port}", "X-Base": "{base_url}"}}})
    echo = json.loads(await text_of(await treq.get(f"{ht.url}/app/")))
    assert echo["path"] == "/echo"
    assert echo["headers"]["x-app-port"] == str(ht.keepers["app"].address.port)
    assert echo["headers"]["x-base"] == "/"


@pytest_twisted.ensureDeferred
async def test_forwarded_headers_host_and_hop_by_hop(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    response = await treq.get(f"{ht.url}/app/echo", headers={
        "Host": "public.example:8443", "X-Forwarded-For": "10.1.2.3", "Connection": "X-Drop-Me",
        "X-Drop-Me": "secret", "Keep-Alive": "timeout=5", "Cookie": "a=1"})
    headers = json.loads(await text_of(response))["headers"]
    assert headers["host"] == "public.example:8443"
    assert headers["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert headers["x-forwarded-host"] == "public.example:8443"
    assert headers["x-forwarded-port"] == "8443"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-prefix"] == "/app"
    assert headers["cookie"] == "a=1"
    assert "x-drop-me" not in headers and "keep-alive" not in headers


@pytest_twisted.ensureDeferred
async def test_redirects_and_cookies_are_mapped_under_the_prefix(hubtwist):
    ht = await hubtwist(base_url="/user/a/", servers={"app": {"command": APP}})
    await within(ht.keepers["app"].ensure_running(), 30)
    port = ht.keepers["app"].address.port
    cases = {
        "/login": "/user/a/app/login",
        f"http://127.0.0.1:{port}/x?y=1": "http://localhost:9/user/a/app/x?y=1",
        "https://elsewhere.example/": "https://elsewhere.example/",
    }
    for target, expected in cases.items():
        response = await treq.get(f"{ht.url}/user/a/app/redirect", params={"to": target},
                                  headers={"Host": "localhost:9"}, allow_redirects=False)
        assert response.code == 302
        assert response.headers.getRawHeaders("location") == [expected]
    cookies = (await treq.get(f"{ht.url}/user/a/app/set-cookie")).headers.getRawHeaders("set-cookie")
    assert cookies == ["a=1; Path=/user/a/app/", "b=2; Path=/user/a/app/sub; HttpOnly"]


@pytest_twisted.ensureDeferred
async def test_server_sent_events_are_not_buffered(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    await within(ht.keepers["app"].ensure_running(), 30)
    arrivals = []
    done = within(_stream(f"{ht.url}/app/sse?n=3&interval=0.7", arrivals), 30)
    started = reactor().seconds()
    await poll(lambda: arrivals, 5, message="the first event")
    first = arrivals[0][0] - started
    assert b"data: event 0" in arrivals[0][1]
    await done
    assert first < 0.5, f"the first event took {first:.2f} s: the response is buffered"
    assert arrivals[-1][0] - started > 1.2


async def _stream(url, arrivals):
    response = await treq.get(url, unbuffered=True)
    await treq.collect(response, lambda data: arrivals.append((reactor().seconds(), data)))


@pytest_twisted.ensureDeferred
async def test_unix_socket_backend(hubtwist):
    ht = await hubtwist(servers={"sock": {"command": [*HTTPAPP, "--unix-socket", "{unix_socket}"],
                                          "unix_socket": True}})
    response = await treq.get(f"{ht.url}/sock/bytes/3000000")
    assert response.code == 200 and len(await response.content()) == 3_000_000
    assert ht.keepers["sock"].address.kind == "unix"


@pytest_twisted.ensureDeferred
async def test_concurrent_first_requests_share_one_spawn(hubtwist):
    ht = await hubtwist(servers={"app": {"command": [*APP, "--startup-delay", "0.5"]}})
    client = hubtwist.client()
    responses = await within(gatherResults([client.get(f"{ht.url}/app/pid") for _ in range(200)]), 60)
    bodies = await gatherResults([r.text() for r in responses])
    assert [r.code for r in responses] == [200] * 200
    assert len(set(bodies)) == 1
    assert len([l for l in ht.keepers["app"].logs if l.text.startswith("started pid")]) == 1


@pytest_twisted.ensureDeferred
async def test_refused_backend_is_502(hubtwist):
    import socket

    with socket.socket() as probe:
        # bound, never listening: connections are refused, and no other test can take it
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
        ht = await hubtwist(servers={"gone": {"port": closed_port}})
        response = await treq.get(f"{ht.url}/gone/", headers={"Accept": "text/html"})
        page = await text_of(response)
    assert response.code == 502, page
    assert "App not reachable" in page


@pytest_twisted.ensureDeferred
async def test_fatal_app_is_503_with_retry_after_and_its_log(hubtwist):
    ht = await hubtwist(servers={"bad": {
        "command": [*HTTPAPP, "--print", "config file missing!", "--exit-code", "3"],
        "start_retries": 2, "backoff_initial": 0.05, "backoff_max": 60}})
    response = await treq.get(f"{ht.url}/bad/", headers={"Accept": "text/html"})
    page = await text_of(response)
    assert response.code == 503
    assert response.headers.getRawHeaders("retry-after") == ["60"]
    assert "config file missing!" in page and "exited with status 3" in page
    api = await treq.get(f"{ht.url}/bad/", headers={"Accept": "application/json"})
    body = json.loads(await text_of(api))
    assert api.code == 503 and body["status"] == 503
    assert "[stdout] config file missing!" in "\n".join(f"[stdout] {l}" for l in body["logs"])
    assert ht.keepers["bad"].state is State.FATAL


@pytest_twisted.ensureDeferred
async def test_slow_app_is_504_after_request_timeout(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP, "request_timeout": 0.5}})
    await within(ht.keepers["app"].ensure_running(), 30)
    started = reactor().seconds()
    response = await within(treq.get(f"{ht.url}/app/slow?s=5"), 10)
    assert response.code == 504
    assert reactor().seconds() - started < 3


@pytest_twisted.ensureDeferred
async def test_app_killed_mid_response_ends_the_client_connection_then_restarts(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP, "backoff_initial": 0.05}})
    first_pid = await text_of(await treq.get(f"{ht.url}/app/pid"))
    response = await treq.get(f"{ht.url}/app/die", unbuffered=True)
    assert response.code == 200
    with pytest.raises(Exception) as caught:
        await within(readBody(response), 10)
    assert "ResponseFailed" in type(caught.value).__name__ or "PartialDownload" in type(caught.value).__name__
    second_pid = await text_of(await within(treq.get(f"{ht.url}/app/pid"), 30))
    assert second_pid != first_pid


@pytest_twisted.ensureDeferred
async def test_proxy_port_routes_and_their_allowlist(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    await within(ht.keepers["app"].ensure_running(), 30)
    port = ht.keepers["app"].address.port
    echo = json.loads(await text_of(await treq.get(f"{ht.url}/proxy/{port}/echo")))
    assert echo["path"] == "/echo"
    echo = json.loads(await text_of(await treq.get(f"{ht.url}/proxy/absolute/{port}/echo")))
    assert echo["path"] == f"/proxy/absolute/{port}/echo"
    echo = json.loads(await text_of(await treq.get(f"{ht.url}/proxy/localhost:{port}/echo")))
    assert echo["path"] == "/echo"
    response = await treq.get(f"{ht.url}/proxy/{port}", allow_redirects=False)
    assert response.code == 301
    for path, reason in [
        ("/proxy/169.254.169.254:80/latest", "not allowed"),
        ("/proxy/example.com:80/", "not allowed"),
        (f"/proxy/{ht.ports[0].getHost().port}/", "would loop"),
        ("/proxy/notaport/", "is not PORT or HOST:PORT"),
        ("/proxy/99999/", "is not a TCP port"),
    ]:
        response = await treq.get(ht.url + path, headers={"Accept": "application/json"})
        assert response.code == 403, path
        assert reason in json.loads(await text_of(response))["message"]


@pytest_twisted.ensureDeferred
async def test_proxy_ports_can_be_turned_off(hubtwist):
    ht = await hubtwist(proxy_ports=False, servers={"app": {"command": APP}})
    response = await treq.get(f"{ht.url}/proxy/22/")
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_activity_is_stamped_except_for_excluded_paths(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP,
                                         "exclude_last_activity_patterns": ["^/api/events"]}})
    keeper = ht.keepers["app"]
    await within(keeper.ensure_running(), 30)
    assert keeper.last_activity is None
    await (await treq.get(f"{ht.url}/app/api/events/poll")).content()
    assert keeper.last_activity is None
    await (await treq.get(f"{ht.url}/app/page")).content()
    assert keeper.last_activity is not None


@pytest_twisted.ensureDeferred
async def test_own_api_lists_servers(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    assert json.loads(await text_of(await treq.get(f"{ht.url}/api")))["name"] == "hubtwist"
    servers = json.loads(await text_of(await treq.get(f"{ht.url}/api/servers")))["servers"]
    assert servers[0]["name"] == "app" and servers[0]["state"] == "stopped"
    await (await treq.get(f"{ht.url}/app/")).content()
    detail = json.loads(await text_of(await treq.get(f"{ht.url}/api/servers/app")))
    assert detail["state"] == "running" and detail["pid"]
    assert any(line["text"].startswith("started pid") for line in detail["logs"])
    launcher = await text_of(await treq.get(f"{ht.url}/"))
    assert 'href="/app/"' in launcher


@pytest_twisted.ensureDeferred
async def test_body_over_max_body_size_is_413(hubtwist):
    ht = await hubtwist(max_body_size=1000, servers={"app": {"command": APP}})
    response = await treq.post(f"{ht.url}/app/echo", data=b"x" * 5000)
    assert response.code == 413
    ok = await treq.post(f"{ht.url}/app/echo", data=b"x" * 999)
    assert ok.code == 200


@pytest_twisted.ensureDeferred
async def test_rewrite_response_functions_change_status_headers_and_body(hubtwist):
    ht = await hubtwist(servers={
        "app": {"command": APP, "rewrite_response": ["tests.apps.rewriters:teapot_for_404",
                                                     "tests.apps.rewriters:shout"]},
        "broken": {"command": APP, "rewrite_response": "tests.apps.rewriters:broken"}})
    response = await treq.get(f"{ht.url}/app/hello")
    assert response.code == 200 and await response.content() == b"HELLO FROM HTTPAPP"
    assert response.headers.getRawHeaders("x-rewritten") == ["yes"]
    assert response.length == 18
    teapot = await treq.get(f"{ht.url}/app/status/404")
    assert teapot.code == 418 and await teapot.content() == b"WAS 404"
    broken = await treq.get(f"{ht.url}/broken/", headers={"Accept": "application/json"})
    assert broken.code == 502
    assert "this rewriter is broken" in json.loads(await text_of(broken))["message"]


def _established_to(port: int) -> int:
    """Established TCP connections from this host to 127.0.0.1:port (/proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[3] == "01":
                count += 1
    return count


@pytest_twisted.ensureDeferred
async def test_client_disconnect_cancels_the_backend_request_and_nothing_leaks(hubtwist):
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    ht = await hubtwist(servers={"app": {"command": APP}})
    keeper = ht.keepers["app"]
    await within(keeper.ensure_running(), 30)
    port = keeper.address.port
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor(), "127.0.0.1", ht.ports[0].getHost().port), Protocol())
        client.transport.write(b"GET /app/slow?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        await poll(lambda: _established_to(port) >= 1, 10, message="the backend request")
        client.transport.abortConnection()
        await poll(lambda: _established_to(port) == 0, 10,
                   message="hubtwist to close its connection to the app")
    await poll(lambda: len(os.listdir("/proc/self/fd")) <= fds_before + 2, 10,
               message="file descriptors to return to where they were")
    response = await treq.get(f"{ht.url}/app/pid")
    assert response.code == 200


class _SlowReader(Protocol):
    """Sends one request, stops reading for a while (so hubtwist must pause the app), then
    reads everything."""

    def __init__(self, request: bytes, done) -> None:
        self._request = request
        self._done = done
        self.received = 0

    def connectionMade(self) -> None:
        self.transport.write(self._request)
        self.transport.pauseProducing()
        reactor().callLater(0.5, self.transport.resumeProducing)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason) -> None:
        self._done.callback(self.received)


@pytest_twisted.ensureDeferred
async def test_a_connection_paused_by_a_slow_client_is_reusable_afterwards(hubtwist):
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    ht = await hubtwist(servers={"app": {"command": APP}})
    await within(ht.keepers["app"].ensure_running(), 30)
    done = Deferred()
    size = 20_000_000
    await connectProtocol(
        TCP4ClientEndpoint(reactor(), "127.0.0.1", ht.ports[0].getHost().port),
        _SlowReader(b"GET /app/bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % size, done))
    received = await within(done, 30)
    assert received > size
    # The app's connection went back to the pool; it must answer the next request at once.
    for _ in range(3):
        response = await within(treq.get(f"{ht.url}/app/pid"), 5)
        assert response.code == 200
    # Fast downloads one after another: the last piece of a body often arrives just as the
    # client's buffer pauses the app's connection, which then goes back to the pool.
    for _ in range(8):
        response = await within(treq.get(f"{ht.url}/app/bytes/8000000"), 10)
        assert len(await within(response.content(), 10)) == 8_000_000


@pytest_twisted.ensureDeferred
async def test_chunked_responses_pass_and_the_connection_is_reused(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    client = hubtwist.client()
    for _ in range(3):
        response = await within(client.get(f"{ht.url}/app/chunked?n=50"), 10)
        assert await response.text() == "".join(f"piece {i};" for i in range(50))


@pytest_twisted.ensureDeferred
async def test_app_that_does_not_become_ready_in_time_is_503_still_starting(hubtwist):
    ht = await hubtwist(servers={"app": {"command": [*APP, "--startup-delay", "30"], "timeout": 0.5,
                                         "backoff_initial": 0.1, "stop_timeout": 1}})
    started = reactor().seconds()
    response = await within(treq.get(f"{ht.url}/app/", headers={"Accept": "application/json"}), 20)
    assert response.code == 503
    assert response.headers.getRawHeaders("retry-after") == ["2"]
    body = json.loads(await text_of(response))
    assert body["error"] == "App still starting"
    assert reactor().seconds() - started < 5


@pytest_twisted.ensureDeferred
async def test_app_answering_before_reading_the_upload(hubtwist):
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    ht = await hubtwist(servers={"app": {"command": APP}})
    await within(ht.keepers["app"].ensure_running(), 30)
    answered = Deferred()

    class Uploader(Protocol):
        received = b""

        def connectionMade(self):
            # /status/N answers without reading the body.
            self.transport.write(b"POST /app/status/403 HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 4000000\r\n\r\n" + b"x" * 4_000_000)

        def dataReceived(self, data):
            self.received += data
            if b"\r\n\r\nstatus" in self.received and not answered.called:
                answered.callback(self.received)

    client = await connectProtocol(
        TCP4ClientEndpoint(reactor(), "127.0.0.1", ht.ports[0].getHost().port), Uploader())
    response = await within(answered, 20)
    assert response.startswith(b"HTTP/1.1 403 ")
    client.transport.abortConnection()
    response = await within(treq.get(f"{ht.url}/app/pid"), 10)
    assert response.code == 200
