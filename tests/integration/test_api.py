"""
hubtwist's JSON API (hubtwist.web.api) in-process, with real apps behind it
(tests/apps/httpapp.py): discovery, status, transitions seen through the API, the logs
(JSON and live server-sent events), the controls and their protection (token, Hub login
cookie + XSRF), the probes, CORS, JSON errors; at the base URL and under /_hubtwist/.
"""

from __future__ import annotations

import json
import socket

import pytest_twisted
import treq

from hubtwist.supervise import State
from hubtwist.supervise.logring import LogLine
from hubtwist.web.api import FOLLOW_BACKLOG
from tests.helpers import HTTPAPP, in_thread, poll, reactor, sleep, within
from tests.integration.test_hub_gate import (  # noqa: F401 (fixtures)
    cookie_header, cookies_of, fake_hub, hub_env, hubtwist, log_in,
)

APP = [*HTTPAPP, "--port", "{port}"]
AUTH = {"Authorization": "token s3cret"}


async def call(method: str, url: str, headers=None, **kwargs):
    """(status, headers, parsed JSON or text) of one request, bounded."""
    response = await within(treq.request(method, url, headers=headers or {},
                                         allow_redirects=False, **kwargs), 60)
    body = await within(response.content(), 60)
    kind = (response.headers.getRawHeaders("content-type") or [""])[0]
    return response.code, response.headers, json.loads(body) if "json" in kind and body else body


async def get(url: str, headers=None):
    return await call("GET", url, headers)


async def post(url: str, headers=None):
    return await call("POST", url, headers)


@pytest_twisted.ensureDeferred
async def test_discovery_and_status_of_every_kind_of_server(hubtwist, tmp_path):
    external = socket.socket()
    external.bind(("127.0.0.1", 0))
    external.listen(1)
    try:
        ht = await hubtwist(servers={
            "app": {"command": APP, "launcher_entry": {"title": "The App"}},
            "sock": {"command": [*HTTPAPP, "--unix-socket", "{unix_socket}"], "unix_socket": True},
            "ext": {"port": external.getsockname()[1]},
        })
        code, headers, info = await get(f"{ht.url}/api/")
        assert code == 200 and headers.getRawHeaders("cache-control") == ["no-store"]
        assert info["status"] == "running" and info["name"] == "hubtwist" and info["version"]
        assert info["mode"] == "standalone" and info["user"] is None
        assert info["service_prefix"] == "/" and info["started"].endswith("Z")
        assert info["endpoints"]["servers"] == "/api/servers"
        assert info["endpoints"]["health"] == "/api/health" and info["endpoints"]["service"] == "/"
        assert (await get(f"{ht.url}/api"))[2] == info

        code, _, services = await get(f"{ht.url}/api/services")
        assert code == 200 and services == {"services": {
            "app": {"port": None, "status": "stopped", "description": "The App", "url": "/app/"},
            "sock": {"port": None, "status": "stopped", "description": "sock", "url": "/sock/"},
            "ext": {"port": external.getsockname()[1], "status": "running",
                    "description": "ext", "url": "/ext/"},
        }}

        for name in ("app", "sock"):
            code, _, _ = await post(f"{ht.url}/api/servers/{name}/start")
            assert code == 200
        code, _, listing = await get(f"{ht.url}/api/servers")
        servers = {server["name"]: server for server in listing["servers"]}
        app, sock, ext = servers["app"], servers["sock"], servers["ext"]
        assert app["state"] == "running" and app["pid"] == ht.keepers["app"].pid
        assert app["endpoint"]["kind"] == "tcp" and app["endpoint"]["port"] > 0
        assert app["uptime"] >= 0 and app["restarts"] == 0 and app["last_exit"] is None
        assert app["launcher_entry"]["title"] == "The App" and app["url"] == "/app/"
        assert app["launcher_entry"]["path_info"] == "app/" and app["autostart"] is False
        assert sock["endpoint"] == {"kind": "unix", "path": ht.keepers["sock"].address.path}
        assert ext["external"] is True and ext["pid"] is None and ext["state"] == "running"
        code, _, services = await get(f"{ht.url}/api/services")
        assert services["services"]["app"]["port"] == app["endpoint"]["port"]
        assert services["services"]["app"]["status"] == "running"

        assert app["last_activity"] is None
        await (await treq.get(f"{ht.url}/app/echo")).content()
        code, _, detail = await get(f"{ht.url}/api/servers/app")
        assert detail["last_activity"].endswith("Z") and detail["uptime"] >= app["uptime"]
        assert any(line["text"].startswith("started pid") for line in detail["logs"])
        # An external server is not hubtwist's to start or stop.
        code, _, refused = await post(f"{ht.url}/api/servers/ext/stop")
        assert code == 409 and refused["error"] == "Not supervised"
    finally:
        external.close()


@pytest_twisted.ensureDeferred
async def test_start_stop_restart_answer_the_new_state(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    code, _, started = await post(f"{ht.url}/api/servers/app/start")
    assert code == 200 and started["state"] == "running" and started["pid"]
    first_pid = started["pid"]
    code, _, again = await post(f"{ht.url}/api/servers/app/start")
    assert code == 200 and again["pid"] == first_pid  # already running: nothing changes
    code, _, restarted = await post(f"{ht.url}/api/servers/app/restart")
    assert code == 200 and restarted["state"] == "running" and restarted["pid"] != first_pid
    assert restarted["last_exit"]["stopped"] is True
    assert restarted["last_exit"]["signal"] in (None, "SIGTERM")
    code, _, stopped = await post(f"{ht.url}/api/servers/app/stop")
    assert code == 200 and stopped["state"] == "stopped" and stopped["pid"] is None
    assert stopped["uptime"] is None and stopped["endpoint"] is None
    # ?wait=false answers at once (202) with the state it is in.
    code, _, starting = await post(f"{ht.url}/api/servers/app/start?wait=false")
    assert code == 202 and starting["state"] == "starting"
    await poll(lambda: ht.keepers["app"].state is State.RUNNING, 30, message="running")


@pytest_twisted.ensureDeferred
async def test_crash_backoff_running_then_fatal_and_a_start_tries_again_at_once(hubtwist):
    # Each run exits with status 1 after 0.8 s: BACKOFF, a new run, ... FATAL after 3.
    ht = await hubtwist(servers={"app": {
        "command": [*APP, "--exit-after", "0.8"], "backoff_initial": 0.3, "start_retries": 3,
        "backoff_max": 60}})
    seen = []

    async def states():
        _, _, status = await get(f"{ht.url}/api/servers/app")
        if not seen or seen[-1] != status["state"]:
            seen.append(status["state"])
        return status

    code, _, status = await post(f"{ht.url}/api/servers/app/start")
    assert code == 200 and status["state"] == "running"
    final = None
    deadline = reactor().seconds() + 30
    while reactor().seconds() < deadline:
        final = await states()
        if final["state"] == "fatal":
            break
        await sleep(0.005)  # a sample every few ms: no state is missed (each lasts >= 0.3 s)
    assert seen[:3] == ["running", "backoff", "running"] or \
        seen[:4] == ["running", "backoff", "starting", "running"], seen
    assert seen[-1] == "fatal" and final["restarts"] == 2
    assert final["last_exit"]["code"] == 1 and final["last_exit"]["stopped"] is False
    assert final["last_exit"]["description"] == "exited with status 1"
    # FATAL waits backoff_max (60 s) for a request, but an operator's start is at once.
    code, _, status = await post(f"{ht.url}/api/servers/app/start")
    assert code == 200 and status["state"] == "running"


@pytest_twisted.ensureDeferred
async def test_a_start_that_fails_is_503_with_the_fatal_state(hubtwist):
    ht = await hubtwist(servers={"app": {"command": [*APP, "--exit-code", "3"],
                                         "start_retries": 1}})
    code, _, failed = await post(f"{ht.url}/api/servers/app/start")
    assert code == 503 and failed["error"] == "Start failed"
    assert failed["server"]["state"] == "fatal" and failed["server"]["last_exit"]["code"] == 3
    code, _, ready = await get(f"{ht.url}/api/ready")
    assert code == 200 and ready == {"ready": True, "servers": {}}  # not an autostart server


@pytest_twisted.ensureDeferred
async def test_logs_as_json_with_tail(hubtwist):
    ht = await hubtwist(servers={"app": {"command": [*APP, "--print", "marker-1234"]}})
    await post(f"{ht.url}/api/servers/app/start")
    await poll(lambda: sum(line.text == "marker-1234" for line in ht.keepers["app"].logs) == 2,
               10, message="both printed lines")
    code, _, logs = await get(f"{ht.url}/api/servers/app/logs")
    assert code == 200 and logs["name"] == "app"
    printed = [(line["stream"], line["text"]) for line in logs["lines"]
               if line["text"] == "marker-1234"]
    assert sorted(printed) == [("stderr", "marker-1234"), ("stdout", "marker-1234")]
    assert logs["lines"][0]["text"].startswith("started pid") and logs["lines"][0]["time"]
    code, _, tail = await get(f"{ht.url}/api/servers/app/logs?tail=1")
    code, _, after = await get(f"{ht.url}/api/servers/app/logs")
    # (the app may write more meanwhile: a traceback for the readiness probe's connection)
    assert len(tail["lines"]) == 1 and tail["lines"][0] in after["lines"][len(logs["lines"]) - 1:]
    assert (await get(f"{ht.url}/api/servers/app/logs?tail=0"))[2]["lines"] == []
    code, _, bad = await get(f"{ht.url}/api/servers/app/logs?tail=many")
    assert code == 400 and "tail" in bad["message"]


def _sse_events(raw: bytes) -> list[dict]:
    events = []
    for block in raw.split(b"\n\n"):
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n")
                      if b": " in line and not line.startswith(b":"))
        if b"data" in fields:
            events.append({"id": fields.get(b"id"), "event": fields.get(b"event", b"message"),
                           "data": json.loads(fields[b"data"])})
    return events


@pytest_twisted.ensureDeferred
async def test_logs_follow_live_as_server_sent_events_until_the_client_goes(hubtwist):
    ht = await hubtwist(servers={"app": {"command": [*APP, "--print", "live-marker"]}})
    keeper = ht.keepers["app"]
    await post(f"{ht.url}/api/servers/app/start")
    response = await within(treq.get(f"{ht.url}/api/servers/app/logs", unbuffered=True,
                                     headers={"Accept": "text/event-stream"}), 30)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/event-stream")
    received = bytearray()
    collecting = treq.collect(response, received.extend)
    # The backlog first, then what the app prints after a restart, as it happens.
    await poll(lambda: received.count(b'"text": "live-marker"') == 2, 10, message="the backlog")
    assert keeper.logs.followers == 1 and len(ht.router.api.streams) == 1
    code, _, _ = await post(f"{ht.url}/api/servers/app/restart")
    assert code == 200
    printed = b'"text": "live-marker"'
    await poll(lambda: received.count(printed) >= 4, 10, message="the lines after restart")
    events = _sse_events(bytes(received))
    texts = [event["data"]["text"] for event in events]
    assert texts.count("live-marker") == 4 and any("(stopped)" in text for text in texts)
    ids = [int(event["id"]) for event in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # numbered in order, none lost
    # Resuming after an id (an EventSource reconnecting) sends only what came later.
    resumed = await within(treq.get(f"{ht.url}/api/servers/app/logs", unbuffered=True, headers={
        "Accept": "text/event-stream", "Last-Event-ID": str(ids[-2])}), 30)
    again = bytearray()
    resumed_collect = treq.collect(resumed, again.extend)
    await poll(lambda: _sse_events(bytes(again)), 10, message="the resumed stream")
    resumed_ids = [int(e["id"]) for e in _sse_events(bytes(again))]
    assert resumed_ids == list(range(ids[-1], ids[-1] + len(resumed_ids)))  # none before
    # The clients go: the streams end and nothing follows the log any more.
    for stream in (response, resumed):
        stream.original._transport.stopProducing()  # closes the client's connection
    for collected in (collecting, resumed_collect):
        collected.addErrback(lambda _: None)
    await poll(lambda: keeper.logs.followers == 0 and not ht.router.api.streams, 10,
               message="the streams to end")


def _read_stream(port: int, path: str, pause_after_headers) -> bytes:
    """A client that reads the SSE response head, stops reading until told, then reads
    until the stream's last chunk (hubtwist ends it) or 20 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(1)
        pause_after_headers()
        data = bytearray()
        while not data.endswith(b"\r\n0\r\n\r\n"):
            chunk = client.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        return head + bytes(data)


@pytest_twisted.ensureDeferred
async def test_a_follower_that_stops_reading_holds_bounded_memory(hubtwist):
    import threading

    ht = await hubtwist(servers={"app": {"command": APP}})
    keeper = ht.keepers["app"]
    go = threading.Event()
    port = ht.ports[0].getHost().port
    reading = in_thread(_read_stream, port, "/api/servers/app/logs?tail=0",
                        lambda: go.wait(30), timeout=60)
    await poll(lambda: ht.router.api.streams, 10, message="the stream")
    stream = next(iter(ht.router.api.streams))
    # 20 000 lines of 8 KiB (160 MB) while the client reads nothing.
    text = "x" * 8192
    for index in range(20_000):
        keeper.logs.append(LogLine(float(index), "stdout", text))
    transport = stream._request.channel.transport
    buffered = len(transport.dataBuffer) + sum(map(len, transport._tempDataBuffer))
    assert len(stream._buffer) == FOLLOW_BACKLOG and stream._buffer.dropped > 0
    assert buffered < 1_000_000, buffered  # the transport's buffer stays small too
    go.set()
    await poll(lambda: not len(stream._buffer), 30, message="the client to read again")
    ht.router.api.close()  # hubtwist stopping ends the stream
    received = await reading
    assert b"event: dropped" in received
    assert not ht.router.api.streams and keeper.logs.followers == 0


@pytest_twisted.ensureDeferred
async def test_health_is_open_ready_is_not_and_is_503_while_an_autostart_server_is_down(hubtwist):
    ht = await hubtwist(token="s3cret", servers={
        "slow": {"command": [*APP, "--startup-delay", "1.5"], "autostart": True},
        "lazy": {"command": APP}})
    code, headers, health = await get(f"{ht.url}/api/health")
    assert code == 200 and health == {"status": "ok"}  # no token, no detail
    assert headers.getRawHeaders("cache-control") == ["no-store"]
    assert (await call("HEAD", f"{ht.url}/api/health"))[0] == 200
    code, _, _ = await get(f"{ht.url}/api/ready")
    assert code == 401  # which apps are down is not for anyone
    code, _, ready = await get(f"{ht.url}/api/ready", AUTH)
    assert code == 503 and ready == {"ready": False, "servers": {"slow": "starting"}}
    await poll(lambda: ht.keepers["slow"].state is State.RUNNING, 30, message="slow running")
    code, _, ready = await get(f"{ht.url}/api/ready", AUTH)
    assert code == 200 and ready == {"ready": True, "servers": {"slow": "running"}}
    code, _, _ = await post(f"{ht.url}/api/servers/slow/stop", AUTH)
    assert code == 200
    code, _, ready = await get(f"{ht.url}/api/ready", AUTH)
    assert code == 503 and ready["servers"] == {"slow": "stopped"}
    # The rest of the API needs the token like the apps do.
    for path in ("api/servers", "api/services", "api/servers/slow/logs"):
        assert (await get(f"{ht.url}/{path}"))[0] == 401, path


@pytest_twisted.ensureDeferred
async def test_controls_need_the_token_and_a_same_origin_cookie(hubtwist):
    ht = await hubtwist(token="s3cret", servers={"app": {"command": APP}})
    code, _, _ = await post(f"{ht.url}/api/servers/app/start")
    assert code == 401 and ht.keepers["app"].state is State.STOPPED
    # A browser session: ?token= once, then the cookie.
    link = await treq.get(f"{ht.url}/?token=s3cret", allow_redirects=False,
                          headers={"Accept": "text/html"})
    assert link.code == 302
    cookie = {"Cookie": cookie_header(cookies_of(link))}
    host = ht.url.removeprefix("http://")
    for cross in ({"Origin": "http://127.0.0.1:1"}, {"Sec-Fetch-Site": "same-site"}):
        code, _, refused = await post(f"{ht.url}/api/servers/app/start", {**cookie, **cross})
        assert code == 403 and "another site or port" in refused["message"]
    assert ht.keepers["app"].state is State.STOPPED
    code, _, status = await post(f"{ht.url}/api/servers/app/start",
                                 {**cookie, "Origin": f"http://{host}",
                                  "Sec-Fetch-Site": "same-origin"})
    assert code == 200 and status["state"] == "running"
    code, _, status = await post(f"{ht.url}/api/servers/app/stop", AUTH)
    assert code == 200 and status["state"] == "stopped"


@pytest_twisted.ensureDeferred
async def test_hub_mode_controls_need_xsrf_with_the_login_cookie(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub, JUPYTERHUB_SERVER_NAME="lab"),
                        servers={"app": {"command": APP}, "other": {"command": APP}})
    base = f"{ht.url}/user/alice"
    code, _, info = await get(f"{base}/api/", {"Authorization": "token alice-token"})
    assert code == 200 and info["mode"] == "hub" and info["user"] == "alice"
    assert info["server_name"] == "lab" and info["service_prefix"] == "/user/alice/"
    assert info["endpoints"]["api"] == "/user/alice/api/"
    assert (await get(f"{base}/api/health"))[0] == 200  # no login for the liveness probe
    assert (await get(f"{base}/api/servers", {"Accept": "application/json"}))[0] == 403
    cookies = await log_in(ht, fake_hub, path="/user/alice/")
    jar = {"Cookie": cookie_header(cookies)}
    code, _, listing = await get(f"{base}/api/servers", jar)  # a page view: no XSRF needed
    assert code == 200 and len(listing["servers"]) == 2
    code, _, refused = await post(f"{base}/api/servers/app/start", jar)
    assert code == 403 and "XSRF" in refused["message"]
    assert ht.keepers["app"].state is State.STOPPED
    code, _, status = await post(f"{base}/api/servers/app/start",
                                 {**jar, "X-XSRFToken": cookies["_xsrf"]})
    assert code == 200 and status["state"] == "running"
    code, _, status = await post(f"{base}/api/servers/app/stop",
                                 {"Authorization": "token alice-token"})
    assert code == 200 and status["state"] == "stopped"


@pytest_twisted.ensureDeferred
async def test_cors_preflight_and_credentials_never_with_a_star(hubtwist):
    ht = await hubtwist(token="s3cret", cors_allow_origins=["https://ok.example"],
                        servers={"app": {"command": APP}})
    preflight = {"Origin": "https://ok.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    # A preflight carries no credentials: answered before the gate.
    code, headers, _ = await call("OPTIONS", f"{ht.url}/api/servers/app/start", preflight)
    assert code == 204
    assert headers.getRawHeaders("access-control-allow-origin") == ["https://ok.example"]
    assert headers.getRawHeaders("access-control-allow-credentials") == ["true"]
    assert "POST" in headers.getRawHeaders("access-control-allow-methods")[0]
    assert "Authorization" in headers.getRawHeaders("access-control-allow-headers")[0]
    assert headers.getRawHeaders("vary") == ["Origin"]
    code, headers, _ = await call("OPTIONS", f"{ht.url}/api/servers",
                                  {**preflight, "Origin": "https://evil.example"})
    assert code == 403 and not headers.hasHeader("access-control-allow-origin")
    # The real request: headers on the answer, refusals included.
    code, headers, _ = await get(f"{ht.url}/api/servers", {"Origin": "https://ok.example", **AUTH})
    assert code == 200 and headers.getRawHeaders("access-control-allow-origin") == ["https://ok.example"]
    code, headers, _ = await get(f"{ht.url}/api/servers", {"Origin": "https://ok.example"})
    assert code == 401 and headers.getRawHeaders("access-control-allow-origin") == ["https://ok.example"]
    code, headers, _ = await get(f"{ht.url}/api/servers", {"Origin": "https://evil.example", **AUTH})
    assert code == 200 and not headers.hasHeader("access-control-allow-origin")
    # An app's paths are the app's: no preflight answered for them by hubtwist.
    code, headers, _ = await call("OPTIONS", f"{ht.url}/app/echo", preflight)
    assert code == 401 and not headers.hasHeader("access-control-allow-origin")

    star = await hubtwist(token="s3cret", cors_allow_origins=["*"],
                          servers={"app": {"command": APP}})
    code, headers, _ = await call("OPTIONS", f"{star.url}/api/servers", preflight)
    assert code == 204 and headers.getRawHeaders("access-control-allow-origin") == ["*"]
    assert not headers.hasHeader("access-control-allow-credentials")
    code, headers, _ = await get(f"{star.url}/api/servers", {"Origin": "https://any.example", **AUTH})
    assert headers.getRawHeaders("access-control-allow-origin") == ["*"]
    assert not headers.hasHeader("access-control-allow-credentials")

    plain = await hubtwist(token="s3cret", servers={"app": {"command": APP}})  # the default: none
    code, headers, _ = await call("OPTIONS", f"{plain.url}/api/servers", preflight)
    assert code == 401 and not headers.hasHeader("access-control-allow-origin")
    code, headers, _ = await get(f"{plain.url}/api/servers", {"Origin": "https://ok.example", **AUTH})
    assert code == 200 and not headers.hasHeader("access-control-allow-origin")


@pytest_twisted.ensureDeferred
async def test_json_errors_for_unknown_routes_servers_and_wrong_methods(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    for path in ("api/nothing", "api/servers/app/explode", "api/servers/app/logs/x"):
        code, _, body = await get(f"{ht.url}/{path}")
        assert code == 404 and body["error"] == "Not found" and body["status"] == 404, path
    code, _, body = await get(f"{ht.url}/api/servers/nope")
    assert code == 404 and "'nope'" in body["message"] and "app" in body["message"]
    assert (await post(f"{ht.url}/api/servers/nope/start"))[0] == 404
    code, headers, body = await post(f"{ht.url}/api/servers")
    assert code == 405 and headers.getRawHeaders("allow") == ["GET, HEAD, OPTIONS"]
    assert body["error"] == "Method not allowed"
    code, headers, body = await get(f"{ht.url}/api/servers/app/start")
    assert code == 405 and headers.getRawHeaders("allow") == ["POST, OPTIONS"]
    assert ht.keepers["app"].state is State.STOPPED
    code, headers, _ = await call("OPTIONS", f"{ht.url}/api/servers/app/restart")
    assert code == 204 and headers.getRawHeaders("allow") == ["POST, OPTIONS"]
    code, _, _ = await call("DELETE", f"{ht.url}/api/")
    assert code == 405


@pytest_twisted.ensureDeferred
async def test_single_app_mode_serves_the_api_under_the_reserved_segment(hubtwist):
    ht = await hubtwist(token="s3cret", default_server="app",
                        servers={"app": {"command": APP, "autostart": True}})
    root = f"{ht.url}/_hubtwist/api"
    code, _, health = await get(f"{root}/health")
    assert code == 200 and health == {"status": "ok"}
    # /api/health is the app's path: behind the token, answered by the app.
    assert (await get(f"{ht.url}/api/health", {"Accept": "application/json"}))[0] == 401
    code, _, body = await get(f"{ht.url}/api/health", AUTH)
    assert code == 200 and body == b"hello from httpapp"
    code, _, info = await get(f"{root}/", AUTH)
    assert info["endpoints"]["ready"] == "/_hubtwist/api/ready"
    assert info["endpoints"]["launcher"] == "/_hubtwist/" and info["endpoints"]["service"] == "/"
    await poll(lambda: ht.keepers["app"].state is State.RUNNING, 30, message="autostart")
    code, _, ready = await get(f"{root}/ready", AUTH)
    assert code == 200 and ready["servers"] == {"app": "running"}
    code, _, status = await post(f"{root}/servers/app/restart", AUTH)
    assert code == 200 and status["state"] == "running" and status["url"] == "/app/"
    code, _, logs = await get(f"{root}/servers/app/logs?tail=2", AUTH)
    assert code == 200 and len(logs["lines"]) == 2
    code, _, services = await get(f"{root}/services", AUTH)
    assert services["services"]["app"]["status"] == "running"
