"""
The auth gates in-process (hubtwist.app.serve) against real apps and a fake Hub API on
loopback: the OAuth login, tokens, scopes, caching, the Hub going down, XSRF, WebSocket
handshakes, logout, activity reports; and the standalone token gate.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Site

from hubtwist.app import serve
from hubtwist.config.loader import load_dict
from hubtwist.hub.settings import resolve_auth
from hubtwist.supervise import State
from tests.helpers import APPS, HTTPAPP, poll, reactor, sleep, within

APP = [*HTTPAPP, "--port", "{port}"]
WSAPP = [HTTPAPP[0], str(APPS / "wsapp.py"), "--port", "{port}"]
ALICE = {"kind": "user", "name": "alice", "admin": False, "groups": ["staff"],
         "scopes": ["access:servers!server=alice/", "read:users:name!user=alice"]}
BOB = {"kind": "user", "name": "bob", "admin": False, "groups": [],
       "scopes": ["access:servers!server=bob/"]}


class FakeHub(Resource):
    """Just enough of the Hub's REST API: version, /user, oauth2/token, activity."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.tokens = {"alice-token": ALICE, "bob-token": BOB}
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (access token, PKCE challenge)
        self.calls: list[str] = []
        self.activity: list[dict] = []
        self.failing = False

    def render(self, request):
        path = request.path.decode()
        self.calls.append(path)
        request.setHeader(b"content-type", b"application/json")
        if self.failing:
            request.setResponseCode(503)
            return b"{}"
        auth = (request.getHeader(b"authorization") or b"").decode()
        if path == "/hub/api/":
            request.setHeader(b"x-jupyterhub-version", b"6.1.1")
            return json.dumps({"version": "6.1.1"}).encode()
        if path == "/hub/api/user":
            model = self.tokens.get(auth.removeprefix("token "))
            if model is None:
                request.setResponseCode(403)
                return b'{"status": 403}'
            return json.dumps(model).encode()
        if path == "/hub/api/oauth2/token":
            form = {k.decode(): v[0].decode() for k, v in request.args.items()}
            token, challenge = self.codes.pop(form.get("code"), (None, None))
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
            if (token is None or digest.decode() != challenge or form["client_secret"] != "server-token"
                    or form["client_id"] != "jupyterhub-user-alice"
                    or form["redirect_uri"] != "/user/alice/oauth_callback"):
                request.setResponseCode(400)
                return b'{"error": "invalid_grant", "error_description": "bad code"}'
            return json.dumps({"access_token": token, "token_type": "Bearer"}).encode()
        if path == "/hub/api/users/alice/activity" and auth == "token server-token":
            self.activity.append(json.loads(request.content.read()))
            return b"{}"
        request.setResponseCode(404)
        return b"{}"


@pytest.fixture
def fake_hub():
    hub = FakeHub()
    port = pytest_twisted.blockon(ensureDeferred(_listen(Site(hub))))
    hub.port = port
    hub.url = f"http://127.0.0.1:{port.getHost().port}/hub/api"
    yield hub
    pytest_twisted.blockon(port.stopListening())


async def _listen(site):
    from twisted.internet.endpoints import serverFromString

    return await serverFromString(reactor(), "tcp:0:interface=127.0.0.1").listen(site)


def hub_env(hub: FakeHub, **extra) -> dict:
    return {
        "JUPYTERHUB_API_URL": hub.url, "JUPYTERHUB_API_TOKEN": "server-token",
        "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice", "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/alice/oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:servers!server=alice/", "access:servers!user=alice"]',
        "JUPYTERHUB_ACTIVITY_URL": f"{hub.url}/users/alice/activity", **extra,
    }


@pytest.fixture
def hubtwist():
    running = []

    async def start(env=None, **raw):
        raw.setdefault("listen", ["tcp:0:interface=127.0.0.1"])
        config = load_dict(raw, "test")
        plan = resolve_auth(env or {}, config)
        if plan.hub is not None:
            config = load_dict({**raw, "base_url": plan.hub.service_prefix}, "test")
        instance = await serve(reactor(), config, auth=plan)
        if instance.protection.client is not None:
            instance.protection.client.backoff = 0.01  # keep retries quick in tests
        instance.url = f"http://127.0.0.1:{instance.ports[0].getHost().port}"
        running.append(instance)
        return instance

    yield start
    for instance in running:
        pytest_twisted.blockon(within(instance.stop(), 30))


def cookies_of(response) -> dict[str, str]:
    found = {}
    for header in response.headers.getRawHeaders("set-cookie", []):
        name, _, rest = header.partition("=")
        found[name] = rest.partition(";")[0]
    return found


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items() if v)


async def log_in(ht, hub: FakeHub, path="/user/alice/echo?x=1") -> dict[str, str]:
    """Do the browser's part of the OAuth login; returns the cookies hubtwist set."""
    first = await treq.get(ht.url + path, headers={"Accept": "text/html"}, allow_redirects=False)
    assert first.code == 302
    location = first.headers.getRawHeaders("location")[0]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert urlsplit(location).path == "/hub/api/oauth2/authorize"
    assert query["client_id"] == "jupyterhub-user-alice"
    assert query["redirect_uri"] == "/user/alice/oauth_callback"
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    state_cookies = cookies_of(first)
    assert list(state_cookies) == ["jupyterhub-user-alice-oauth-state"]
    hub.codes["CODE"] = ("alice-token", query["code_challenge"])
    callback = await treq.get(
        f"{ht.url}/user/alice/oauth_callback?" + urlencode({"code": "CODE", "state": query["state"]}),
        headers={"Cookie": cookie_header(state_cookies)}, allow_redirects=False)
    assert callback.code == 302, await callback.text()
    assert callback.headers.getRawHeaders("location") == [path]
    set_cookies = callback.headers.getRawHeaders("set-cookie")
    login = next(c for c in set_cookies if c.startswith("jupyterhub-user-alice="))
    assert "HttpOnly" in login and "Path=/user/alice/" in login and "SameSite=lax" in login
    assert any(c.startswith("jupyterhub-user-alice-oauth-state=;") for c in set_cookies)  # cleared
    return {k: v for k, v in cookies_of(callback).items() if v}


@pytest_twisted.ensureDeferred
async def test_browser_login_then_the_app_with_who_is_calling(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), forward_user_info=True, default_server="app",
                        servers={"app": {"command": APP}})
    cookies = await log_in(ht, fake_hub)
    assert set(cookies) == {"jupyterhub-user-alice", "_xsrf"}
    response = await treq.get(f"{ht.url}/user/alice/echo?x=1", headers={
        "Cookie": cookie_header(cookies) + "; other=1", "X-Forwarded-User": "mallory"})
    echo = json.loads(await response.text())
    assert response.code == 200 and echo["path"] == "/echo?x=1"
    assert response.headers.getRawHeaders("x-jupyterhub-version") == ["6.1.1"]
    assert echo["headers"]["x-forwarded-user"] == "alice"
    assert json.loads(echo["headers"]["x-hubtwist-user"])["groups"] == ["staff"]
    # The app gets its own cookies, not hubtwist's login cookie (alice's Hub token).
    assert "jupyterhub-user-alice" not in echo["headers"]["cookie"]
    assert "other=1" in echo["headers"]["cookie"]


@pytest_twisted.ensureDeferred
async def test_a_callback_with_a_foreign_state_is_refused(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), default_server="app", servers={"app": {"command": APP}})
    first = await treq.get(f"{ht.url}/user/alice/", headers={"Accept": "text/html"}, allow_redirects=False)
    state_cookies = cookies_of(first)
    forged = await treq.get(f"{ht.url}/user/alice/oauth_callback?code=X&state=attacker-state",
                            headers={"Cookie": cookie_header(state_cookies)})
    assert forged.code == 403 and "state does not match" in await forged.text()
    missing = await treq.get(f"{ht.url}/user/alice/oauth_callback?code=X")
    assert missing.code == 400
    denied = await treq.get(f"{ht.url}/user/alice/oauth_callback?error=access_denied")
    assert denied.code == 400 and "access_denied" in await denied.text()


@pytest_twisted.ensureDeferred
async def test_tokens_scopes_and_the_identity_cache(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), default_server="app", servers={"app": {"command": APP}})
    for _ in range(3):
        # (new connections: a connection that went the ordinary path once stays there)
        ok = await treq.get(f"{ht.url}/user/alice/echo", headers={"Authorization": "token alice-token"},
                            persistent=False)
        assert ok.code == 200 and ok.headers.getRawHeaders("x-jupyterhub-version") == ["6.1.1"]
        assert "authorization" not in json.loads(await ok.content())["headers"]
    assert fake_hub.calls.count("/hub/api/user") == 1  # cached
    # The first one waited for the Hub on the ordinary path; the cached ones were lean.
    assert ht.lean.served == 2
    bob = await treq.get(f"{ht.url}/user/alice/echo", headers={"Authorization": "Bearer bob-token",
                                                               "Accept": "application/json"})
    message = json.loads(await bob.text())["message"]
    assert bob.code == 403 and "user bob" in message and "access:servers!server=alice/" in message
    for _ in range(2):
        bad = await treq.get(f"{ht.url}/user/alice/echo", headers={"Authorization": "token nope"})
        assert bad.code == 403
        await bad.content()
    assert fake_hub.calls.count("/hub/api/user") == 3  # the refusal is cached too
    url_token = await treq.get(f"{ht.url}/user/alice/echo?token=alice-token", allow_redirects=False)
    assert url_token.code == 302  # not allowed in URLs: a login redirect
    assert ht.keepers["app"].state is not State.FATAL


@pytest_twisted.ensureDeferred
async def test_unauthenticated_api_calls_get_403_and_the_readiness_path_200(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), default_server="app", servers={"app": {"command": APP}})
    api = await treq.get(f"{ht.url}/user/alice/_hubtwist/api", allow_redirects=False)
    assert api.code == 200 and api.headers.getRawHeaders("x-jupyterhub-version") == ["6.1.1"]
    for method, path, headers in [
        ("GET", "/user/alice/_hubtwist/api/servers", {}), ("POST", "/user/alice/echo", {}),
        ("GET", "/user/alice/echo", {"Accept": "application/json"}),
        ("GET", "/user/alice/echo", {"X-Requested-With": "XMLHttpRequest"}),
        ("GET", "/user/alice/echo", {"Sec-Fetch-Mode": "cors"}),
    ]:
        response = await treq.request(method, ht.url + path, headers=headers, allow_redirects=False)
        assert response.code == 403, (method, path, headers)
        await response.content()
    # The app's /api (the app owns the prefix), not hubtwist's version: behind the login.
    page = await treq.get(f"{ht.url}/user/alice/api", allow_redirects=False)
    assert page.code == 302 and page.headers.getRawHeaders("x-jupyterhub-version") == ["6.1.1"]
    assert ht.keepers["app"].state is State.STOPPED  # nothing reached the app, not even a start


@pytest_twisted.ensureDeferred
async def test_cookie_posts_need_the_xsrf_token(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), default_server="app", servers={"app": {"command": APP}})
    cookies = await log_in(ht, fake_hub)
    refused = await treq.post(f"{ht.url}/user/alice/echo", data=b"x",
                              headers={"Cookie": cookie_header(cookies)})
    assert refused.code == 403 and "XSRF" in await refused.text()
    for via in ({"X-XSRFToken": cookies["_xsrf"]}, {}):
        query = "" if via else "?_xsrf=" + cookies["_xsrf"]
        ok = await treq.post(f"{ht.url}/user/alice/echo{query}", data=b"x",
                             headers={"Cookie": cookie_header(cookies), **via})
        assert ok.code == 200, await ok.text()
        await ok.content()
    forged = await treq.post(f"{ht.url}/user/alice/echo", data=b"x",
                             headers={"Cookie": cookie_header(cookies), "X-XSRFToken": "forged"})
    assert forged.code == 403


@pytest_twisted.ensureDeferred
async def test_the_hub_down_never_locks_out_a_known_user_and_never_crashes(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), default_server="app",
                        hub={"cache_max_age": 0.2}, servers={"app": {"command": APP}})
    headers = {"Authorization": "token alice-token"}
    assert (await treq.get(f"{ht.url}/user/alice/echo", headers=headers)).code == 200
    fake_hub.failing = True
    await sleep(0.3)  # the cached identity is now expired
    known = await within(treq.get(f"{ht.url}/user/alice/echo", headers=headers), 20)
    assert known.code == 200
    unknown = await within(treq.get(f"{ht.url}/user/alice/echo",
                                    headers={"Authorization": "token bob-token",
                                             "Accept": "application/json"}), 20)
    assert unknown.code == 503
    assert "cannot check who you are" in json.loads(await unknown.text())["message"]
    fake_hub.failing = False
    assert (await treq.get(f"{ht.url}/user/alice/echo", headers=headers)).code == 200


@pytest_twisted.ensureDeferred
async def test_websocket_handshakes_are_authenticated_like_http(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), servers={"ws": {"command": WSAPP}})
    port = ht.ports[0].getHost().port
    refused = await deferToThread(_handshake, port, "/user/alice/ws/echo", {})
    assert refused.startswith(b"HTTP/1.1 403"), refused
    assert ht.keepers["ws"].state is State.STOPPED  # never reached the app
    accepted = await deferToThread(_handshake, port, "/user/alice/ws/echo?token=alice-token", {})
    assert accepted.startswith(b"HTTP/1.1 101"), accepted
    by_header = await deferToThread(_handshake, port, "/user/alice/ws/echo",
                                    {"Authorization": "token alice-token"})
    assert by_header.startswith(b"HTTP/1.1 101"), by_header
    assert b"\r\nx-jupyterhub-version: 6.1.1\r\n" in by_header.lower()  # as on every answer
    wrong_user = await deferToThread(_handshake, port, "/user/alice/ws/echo?token=bob-token", {})
    assert wrong_user.startswith(b"HTTP/1.1 403"), wrong_user


def _handshake(port: int, target: str, headers: dict) -> bytes:
    """Send a WebSocket handshake with a blocking socket (in a thread); return the answer head."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = client.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer


@pytest_twisted.ensureDeferred
async def test_logout_clears_the_cookie_and_goes_to_the_hub(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), default_server="app", servers={"app": {"command": APP}})
    cookies = await log_in(ht, fake_hub)
    out = await treq.get(f"{ht.url}/user/alice/logout", headers={"Cookie": cookie_header(cookies)},
                         allow_redirects=False)
    assert out.code == 302 and out.headers.getRawHeaders("location") == ["/hub/logout"]
    assert cookies_of(out)["jupyterhub-user-alice"] == ""


@pytest_twisted.ensureDeferred
async def test_real_activity_is_reported_to_the_hub(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub, JUPYTERHUB_ACTIVITY_INTERVAL="0.2"), default_server="app",
                        proxy_ports=True, servers={"app": {"command": APP}})
    headers = {"Authorization": "token alice-token"}
    assert (await treq.get(f"{ht.url}/user/alice/_hubtwist/api/servers", headers=headers)).code == 200
    await sleep(0.6)
    assert fake_hub.activity == []  # hubtwist's own pages are not app activity
    await (await treq.get(f"{ht.url}/user/alice/echo", headers=headers)).content()
    await poll(lambda: fake_hub.activity, 5, message="an activity report")
    report = fake_hub.activity[0]
    assert set(report) == {"servers", "last_activity"} and set(report["servers"]) == {""}
    await sleep(0.8)
    assert len(fake_hub.activity) == 1  # idle: no more reports
    app_port = ht.keepers["app"].address.port
    await (await treq.get(f"{ht.url}/user/alice/proxy/{app_port}/echo", headers=headers)).content()
    await poll(lambda: len(fake_hub.activity) == 2, 5, message="a report for /proxy/PORT/")


@pytest_twisted.ensureDeferred
async def test_standalone_token_gate(hubtwist):
    ht = await hubtwist(token="s3cret", default_server="app", servers={"app": {"command": APP}})
    page = await treq.get(f"{ht.url}/echo", headers={"Accept": "text/html"})
    assert page.code == 401 and "Token required" in await page.text()
    api = await treq.get(f"{ht.url}/echo", headers={"Accept": "application/json"})
    assert api.code == 401 and api.headers.getRawHeaders("www-authenticate")
    assert (await treq.get(f"{ht.url}/_hubtwist/api")).code == 200
    header = await treq.get(f"{ht.url}/echo", headers={"Authorization": "token s3cret"})
    assert header.code == 200
    wrong = await treq.get(f"{ht.url}/echo?token=guess", headers={"Accept": "text/html"})
    assert wrong.code == 401 and "not this hubtwist" in await wrong.text()
    link = await treq.get(f"{ht.url}/echo?token=s3cret&x=1", allow_redirects=False)
    assert link.code == 302 and link.headers.getRawHeaders("location") == ["/echo?x=1"]
    cookie = cookie_header(cookies_of(link))
    echo = json.loads(await (await treq.get(f"{ht.url}/echo?x=1", headers={"Cookie": cookie})).text())
    assert echo["path"] == "/echo?x=1" and "hubtwist-" not in echo["headers"].get("cookie", "")
    same_origin = await treq.post(f"{ht.url}/echo", data=b"x", headers={
        "Cookie": cookie, "Origin": ht.url, "Sec-Fetch-Site": "same-origin"})
    assert same_origin.code == 200
    other_port = await treq.post(f"{ht.url}/echo", data=b"x", headers={
        "Cookie": cookie, "Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"})
    assert other_port.code == 403
    spoof = json.loads(await (await treq.get(f"{ht.url}/echo", headers={
        "Authorization": "token s3cret", "X-Forwarded-User": "root"})).text())
    assert "x-forwarded-user" not in spoof["headers"]


@pytest_twisted.ensureDeferred
async def test_a_token_in_the_url_starts_a_cookie_session_when_allowed(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub, JUPYTERHUB_ALLOW_TOKEN_IN_URL="1"), default_server="app",
                        servers={"app": {"command": APP}})
    link = await treq.get(f"{ht.url}/user/alice/echo?token=alice-token&x=1", allow_redirects=False)
    assert link.code == 302 and link.headers.getRawHeaders("location") == ["/user/alice/echo?x=1"]
    cookies = cookies_of(link)
    assert cookies["jupyterhub-user-alice"] and cookies["_xsrf"]
    page = await treq.get(f"{ht.url}/user/alice/echo?x=1", headers={"Cookie": cookie_header(cookies)})
    assert page.code == 200


# -- cross-site WebSocket hijacking, hubtwist's credentials kept from the apps, odd input -------

OTHER_PORT = "http://127.0.0.1:1"  # a page of another local app: same site, another origin


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def _ws_info(port: int, target: str, headers: dict | None = None) -> dict:
    """Open a WebSocket to wsapp's /info with the websockets client (in a thread); its report."""
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}{target}", additional_headers=headers or {},
                 open_timeout=20, close_timeout=5) as ws:
        return json.loads(ws.recv(timeout=20))


@pytest_twisted.ensureDeferred
async def test_the_token_gate_refuses_cookie_websockets_from_other_origins(hubtwist):
    ht = await hubtwist(token="s3cret", servers={"ws": {"command": WSAPP}})
    port = ht.ports[0].getHost().port
    link = await treq.get(f"{ht.url}/ws/?token=s3cret", allow_redirects=False)
    assert link.code == 302
    cookie = {"Cookie": cookie_header(cookies_of(link))}
    same = f"http://127.0.0.1:{port}"
    for headers, expected in [
        ({**cookie, "Origin": OTHER_PORT}, 403),  # the hijack: another local page
        ({**cookie, "Origin": same, "Sec-Fetch-Site": "same-site"}, 403),
        ({**cookie, "Origin": "null"}, 403),
        ({**cookie, "Origin": same, "Sec-Fetch-Site": "same-origin"}, 101),
        (cookie, 101),  # no Origin: not a browser (browsers always send it), as jupyter_server
        ({"Origin": OTHER_PORT, "Authorization": "token s3cret"}, 101),  # a token, not a cookie
    ]:
        head = await deferToThread(_handshake, port, "/ws/echo", headers)
        assert _status(head) == expected, (headers, head)
    refused = await deferToThread(_refused_handshake, port, "/ws/echo",
                                  {**cookie, "Origin": OTHER_PORT})
    assert _status(refused) == 403 and b"another site or port" in refused


@pytest_twisted.ensureDeferred
async def test_websocket_handshakes_with_a_url_token_are_never_redirected(hubtwist, fake_hub):
    # A script's handshake with ?token= and no Sec-Fetch-Mode is no page view: it cannot
    # follow a redirect, so it is upgraded at once (in the Hub gate also when tokens in URLs
    # are allowed, which makes page views with ?token= redirect).
    standalone = await hubtwist(token="s3cret", servers={"ws": {"command": WSAPP}})
    hub = await hubtwist(hub_env(fake_hub, JUPYTERHUB_ALLOW_TOKEN_IN_URL="1"),
                         servers={"ws": {"command": WSAPP}})
    for ht, target in [(standalone, "/ws/echo?token=s3cret"),
                       (hub, "/user/alice/ws/echo?token=alice-token")]:
        head = await deferToThread(_handshake, ht.ports[0].getHost().port, target, {})
        assert _status(head) == 101, head


@pytest_twisted.ensureDeferred
async def test_the_hub_gate_refuses_cookie_websockets_from_other_origins(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), servers={"ws": {"command": WSAPP}})
    port = ht.ports[0].getHost().port
    cookie = {"Cookie": cookie_header(await log_in(ht, fake_hub))}
    same = f"http://127.0.0.1:{port}"
    for headers, expected in [
        ({**cookie, "Origin": OTHER_PORT}, 403),
        ({**cookie, "Origin": same, "Sec-Fetch-Site": "cross-site"}, 403),
        ({**cookie, "Origin": same, "Sec-Fetch-Mode": "websocket"}, 101),
        (cookie, 101),
        ({"Origin": OTHER_PORT, "Authorization": "token alice-token"}, 101),
        ({"Origin": OTHER_PORT}, 403),  # no credentials at all
    ]:
        head = await deferToThread(_handshake, port, "/user/alice/ws/echo", headers)
        assert _status(head) == expected, (headers, head)
    refused = await deferToThread(_refused_handshake, port, "/user/alice/ws/echo",
                                  {**cookie, "Origin": OTHER_PORT})
    assert _status(refused) == 403 and b"another site or port" in refused


@pytest_twisted.ensureDeferred
async def test_the_token_gate_keeps_its_credentials_from_the_apps(hubtwist):
    ht = await hubtwist(token="s3cret", default_server="app", proxy_ports=True,
                        servers={"app": {"command": APP}, "ws": {"command": WSAPP}})
    port = ht.ports[0].getHost().port
    link = await treq.get(f"{ht.url}/echo?token=s3cret", allow_redirects=False)
    own = cookie_header(cookies_of(link))

    async def echo(path, headers):
        response = await treq.get(ht.url + path, headers=headers)
        assert response.code == 200, path
        return json.loads(await response.text())

    seen = await echo("/echo", {"Authorization": "token s3cret", "Cookie": own + "; app=1"})
    assert "authorization" not in seen["headers"] and seen["headers"]["cookie"] == "app=1"
    # The app's own Bearer token on a cookie-authenticated request is the app's: it stays.
    seen = await echo("/echo", {"Authorization": "Bearer app-token", "Cookie": own})
    assert seen["headers"]["authorization"] == "Bearer app-token" and "cookie" not in seen["headers"]
    # ?token= on a request that is not a page view (no redirect) is removed, the rest kept.
    seen = await echo("/echo?a=%2F+b&token=s3cret&x", {"Sec-Fetch-Mode": "cors"})
    assert seen["path"] == "/echo?a=%2F+b&x"
    app_port = ht.keepers["app"].address.port
    seen = await echo(f"/proxy/{app_port}/echo?token=s3cret&x=1", {"Sec-Fetch-Mode": "cors"})
    assert seen["path"] == "/echo?x=1"
    # An app's own token= argument on a cookie-authenticated request stays.
    seen = await echo("/echo?token=the-apps", {"Cookie": own})
    assert seen["path"] == "/echo?token=the-apps"
    info = await deferToThread(_ws_info, port, "/ws/info?token=s3cret&x=1",
                               {"Cookie": own + "; app=1"})
    assert info["path"] == "/info?x=1" and info["headers"]["cookie"] == ["app=1"]
    info = await deferToThread(_ws_info, port, "/ws/info", {"Authorization": "token s3cret"})
    assert "authorization" not in info["headers"]


@pytest_twisted.ensureDeferred
async def test_the_hub_gate_keeps_its_credentials_from_the_apps(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub, JUPYTERHUB_ALLOW_TOKEN_IN_URL="1"), default_server="app",
                        servers={"app": {"command": APP}, "ws": {"command": WSAPP}})
    port = ht.ports[0].getHost().port
    cookies = await log_in(ht, fake_hub)

    async def echo(path, headers):
        response = await treq.get(ht.url + path, headers=headers)
        assert response.code == 200, path
        return json.loads(await response.text())

    seen = await echo("/user/alice/echo", {"Authorization": "token alice-token"})
    assert "authorization" not in seen["headers"]
    seen = await echo("/user/alice/echo?token=alice-token&x=1", {"Sec-Fetch-Mode": "cors"})
    assert seen["path"] == "/echo?x=1"
    # hubtwist's _xsrf and state cookies are its own; an app's _xsrf (same name) is the app's.
    sent = (cookie_header(cookies) + "; _xsrf=the-apps-xsrf; jupyterhub-user-alice-oauth-state=x"
            "; jupyterhub-session-id=s1")
    seen = await echo("/user/alice/echo", {"Cookie": sent})
    assert seen["headers"]["cookie"] == "_xsrf=the-apps-xsrf; jupyterhub-session-id=s1"
    info = await deferToThread(_ws_info, port, "/user/alice/ws/info?x=1&token=alice-token", {})
    assert info["path"] == "/info?x=1"


def _raw_request(port: int, head: bytes) -> bytes:
    """Send C{head} (a request head, any bytes) with a blocking socket; the answer's head and
    its body (as long as C{Content-Length} says; a 101 has none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        client.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = client.recv(4096)
            if not chunk:
                return answer
            answer += chunk
        answer_head, _, body = answer.partition(b"\r\n\r\n")
        length = 0
        for line in answer_head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = client.recv(4096)
            if not chunk:
                break
            body += chunk
    return answer_head + b"\r\n\r\n" + body


def _refused_handshake(port: int, target: str, headers: dict) -> bytes:
    """A WebSocket handshake expected to be refused: the whole answer, body included."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             *(f"{k}: {v}" for k, v in headers.items())]
    return _raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())


MALFORMED_COOKIES = [b"a.b.\xe9", b"\xff\xfe.\x80.\x81", "x.1.\u00e9".encode(), b"a.b.c" * 2000,
                     b"%%%.%%.==", b"...", b"YQ.99999999999999999999999999999999999999.00"]


@pytest_twisted.ensureDeferred
async def test_malformed_cookies_count_as_no_cookie(hubtwist, fake_hub):
    hub = await hubtwist(hub_env(fake_hub), default_server="app", servers={"app": {"command": APP}})
    standalone = await hubtwist(token="s3cret", default_server="app", servers={"app": {"command": APP}})
    own = "hubtwist-" + hashlib.sha256(b"s3cret").hexdigest()[:12]
    for ht, prefix, names in [
        (hub, b"/user/alice/", [b"jupyterhub-user-alice", b"_xsrf", b"jupyterhub-session-id"]),
        (standalone, b"/", [own.encode()]),
    ]:
        port = ht.ports[0].getHost().port
        for name in names:
            for value in MALFORMED_COOKIES:
                for accept in (b"text/html", b"application/json"):
                    head = (b"GET " + prefix + b"echo HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: " + accept
                            + b"\r\nCookie: " + name + b"=" + value + b"\r\nConnection: close\r\n\r\n")
                    answer = await deferToThread(_raw_request, port, head)
                    # A login redirect, a 403 (Hub) or a 401 (token gate): never a 500.
                    assert _status(answer) in (302, 401, 403), (name, value, answer[:200])
    # The same in a login's state cookie, and in the XSRF header of a logged-in POST.
    port = hub.ports[0].getHost().port
    login = cookie_header(await log_in(hub, fake_hub)).encode()
    for value in MALFORMED_COOKIES:
        callback = (b"GET /user/alice/oauth_callback?code=c&state=s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Cookie: jupyterhub-user-alice-oauth-state=" + value
                    + b"\r\nConnection: close\r\n\r\n")
        assert _status(await deferToThread(_raw_request, port, callback)) == 403, value
        post = (b"POST /user/alice/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + login
                + b"\r\nX-XSRFToken: " + value + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        assert _status(await deferToThread(_raw_request, port, post)) == 403, value


ENV_DUMP = ("import json, os, sys\n"
            "with open(sys.argv[1], 'w') as out:\n"
            "    json.dump(dict(os.environ), out)\n"
            "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n")


def _env_app(path) -> dict:
    """An app that writes its environment to C{path} as JSON, then serves as httpapp."""
    return {"command": [HTTPAPP[0], "-c", ENV_DUMP, str(path), HTTPAPP[1], "--port", "{port}"],
            "autostart": True}


async def _env_of(path) -> dict:
    await poll(lambda: path.exists() and path.stat().st_size > 0, 30, message=f"{path.name}")
    await sleep(0.05)  # json.dump may still be writing
    return json.loads(path.read_text())


@pytest_twisted.ensureDeferred
async def test_apps_do_not_inherit_hubtwists_tokens(hubtwist, fake_hub, tmp_path, monkeypatch):
    # hubtwist's own environment, as a Spawner or the user set it.
    monkeypatch.setenv("HUBTWIST_TOKEN", "standalone-secret")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
    monkeypatch.setenv("JPY_API_TOKEN", "server-token")
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    await hubtwist(token="standalone-secret", servers={"app": _env_app(tmp_path / "standalone")})
    env = await _env_of(tmp_path / "standalone")
    assert not {"HUBTWIST_TOKEN", "JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"} & set(env)
    assert env["JUPYTERHUB_USER"] == "alice"  # the rest of the environment is passed on
    await hubtwist(hub_env(fake_hub), servers={
        "plain": _env_app(tmp_path / "plain"),
        "hubapi": {**_env_app(tmp_path / "hubapi"), "pass_hub_token": True},
        "chosen": {**_env_app(tmp_path / "chosen"), "environment": {"HUBTWIST_TOKEN": "mine"}},
    })
    plain = await _env_of(tmp_path / "plain")
    assert not {"HUBTWIST_TOKEN", "JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"} & set(plain)
    hubapi = await _env_of(tmp_path / "hubapi")
    assert hubapi["JUPYTERHUB_API_TOKEN"] == hubapi["JPY_API_TOKEN"] == "server-token"
    assert "HUBTWIST_TOKEN" not in hubapi
    assert (await _env_of(tmp_path / "chosen"))["HUBTWIST_TOKEN"] == "mine"  # set explicitly
