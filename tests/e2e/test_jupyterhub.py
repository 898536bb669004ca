"""
hubtwist behind a real JupyterHub and configurable-http-proxy: as each user's server
(Spawner.cmd), as a managed service and as an external service. See conftest.py for the
Hub's configuration (docs/jupyterhub.md shows the same).
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.browser import Browser
from tests.e2e.conftest import ACTIVITY_INTERVAL, wait_until
from tests.helpers import alive, descendants

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def alice(hub):
    """Alice, logged in; the Hub spawned her server and she followed the OAuth redirects."""
    return hub.log_in("alice")


def _echo(response: requests.Response) -> dict:
    assert response.status_code == 200, (response.status_code, response.text[:500])
    return response.json()


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_alice_logs_in_and_reaches_her_app(hub, alice):
    paths = [url.split(hub.public_url, 1)[-1] for _, url in alice.history]
    # The Hub's spawn, hubtwist's redirect to the Hub's authorize, the callback, her app.
    assert any(p.startswith("/hub/api/oauth2/authorize?") for p in paths), paths
    assert any(p.startswith("/user/alice/oauth_callback?code=") for p in paths), paths
    assert alice.cookie("jupyterhub-user-alice", "/user/alice/")
    assert alice.cookie("_xsrf", "/user/alice/")
    echo = _echo(alice.get("/user/alice/echo?x=1"))
    assert echo["path"] == "/echo?x=1"
    assert echo["headers"]["x-forwarded-user"] == "alice"
    assert json.loads(echo["headers"]["x-hubtwist-user"])["name"] == "alice"
    # hubtwist's login cookie (alice's Hub token) is not passed on to the app.
    assert "jupyterhub-user-alice" not in echo["headers"].get("cookie", "")
    response = alice.get("/user/alice/app/echo")
    assert response.headers["X-JupyterHub-Version"] == hub.version


def test_a_spoofed_user_header_never_reaches_the_app(alice):
    echo = _echo(alice.get("/user/alice/echo", headers={"X-Forwarded-User": "mallory",
                                                       "X-Hubtwist-User": '{"name":"mallory"}'}))
    assert echo["headers"]["x-forwarded-user"] == "alice"
    assert "mallory" not in echo["headers"]["x-hubtwist-user"]


def test_her_websocket_works_and_an_anonymous_one_is_refused(hub, alice):
    url = f"ws://127.0.0.1:{hub.public_port}/user/alice/ws/echo"
    with connect(url, additional_headers={"Cookie": alice.cookie_header("/user/alice/ws/echo")},
                 open_timeout=30, close_timeout=5) as ws:
        ws.send("hello through the Hub")
        assert ws.recv(timeout=10) == "hello through the Hub"
    with pytest.raises(InvalidStatus) as refused:
        with connect(url, open_timeout=30):
            pass
    assert refused.value.response.status_code == 403


def test_the_readiness_path_answers_without_login_and_carries_the_version(hub, alice):
    # alice's login spawned her server (run alone, this test needs it too). The app owns the base URL (default_server): the Hub's probe of /user/alice/api gets
    # the app's path, behind the login (any answer below 500 is "up" to the Hub); it is
    # never served to anyone without credentials. hubtwist's own version needs no login.
    response = requests.get(f"{hub.public_url}/user/alice/api", timeout=10, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["X-JupyterHub-Version"] == hub.version
    response = requests.get(f"{hub.public_url}/user/alice/_hubtwist/api", timeout=10,
                            allow_redirects=False)
    assert response.status_code == 200 and response.json()["name"] == "hubtwist"
    assert response.headers["X-JupyterHub-Version"] == hub.version


def test_an_unauthenticated_api_call_gets_403(hub, alice):
    for method, path in [("GET", "/user/alice/_hubtwist/api/servers"), ("POST", "/user/alice/echo"),
                         ("GET", "/user/alice/echo")]:
        response = requests.request(method, hub.public_url + path, timeout=10,
                                    allow_redirects=False, headers={"Accept": "application/json"})
        assert response.status_code == 403, (method, path, response.status_code)
        assert response.headers["X-JupyterHub-Version"] == hub.version
    # A browser is sent to log in instead.
    page = requests.get(hub.public_url + "/user/alice/echo", timeout=10, allow_redirects=False,
                        headers={"Accept": "text/html"})
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice&")
    assert "code_challenge_method=S256" in page.headers["Location"]


def test_a_token_call_works(hub, alice):
    token = hub.user_token("alice")
    headers = {"Authorization": f"token {token}", "Accept": "application/json"}
    servers = requests.get(f"{hub.public_url}/user/alice/_hubtwist/api/servers", headers=headers,
                           timeout=10)
    assert servers.status_code == 200
    assert {s["name"] for s in servers.json()["servers"]} == {"app", "ws"}
    echo = _echo(requests.post(f"{hub.public_url}/user/alice/echo", data=b"x" * 1000,
                               headers=headers, timeout=10))
    assert echo["method"] == "POST" and echo["body_length"] == 1000
    assert echo["headers"]["x-forwarded-user"] == "alice"


def test_a_cookie_post_needs_the_xsrf_token(hub, alice):
    refused = alice.session.post(f"{hub.public_url}/user/alice/echo", data=b"data", timeout=10,
                                 allow_redirects=False, headers={"Sec-Fetch-Mode": "cors"})
    assert refused.status_code == 403
    assert "XSRF" in refused.text
    accepted = alice.session.post(f"{hub.public_url}/user/alice/echo", data=b"data", timeout=10,
                                  allow_redirects=False,
                                  headers={"Sec-Fetch-Mode": "cors",
                                           "X-XSRFToken": alice.cookie("_xsrf", "/user/alice/")})
    assert _echo(accepted)["body_length"] == 4


def test_bob_gets_403_on_alices_server(hub, alice):
    bob = Browser(hub.public_url)
    assert bob.login("bob").status_code == 200
    # With his Hub login, the Hub's authorize step refuses him.
    assert bob.get("/user/alice/echo").status_code == 403
    # With his own token, hubtwist refuses him and says why.
    token = hub.user_token("bob")
    response = requests.get(f"{hub.public_url}/user/alice/echo", timeout=10,
                            headers={"Authorization": f"token {token}", "Accept": "application/json"})
    assert response.status_code == 403
    message = response.json()["message"]
    assert "user bob" in message and "access:servers!server=alice/" in message


def test_a_named_server_works(hub, alice):
    page = alice.get("/hub/spawn/alice/srv1")
    assert page.status_code == 200, (alice.history, page.text[:300])
    assert any("/user/alice/srv1/oauth_callback?" in url for _, url in alice.history)
    assert alice.cookie("jupyterhub-user-alice-srv1", "/user/alice/srv1/")
    echo = _echo(alice.get("/user/alice/srv1/echo"))
    assert echo["headers"]["x-forwarded-user"] == "alice"
    # Its own client id and scope: a token of bob's is refused here too.
    token = hub.user_token("bob")
    response = requests.get(f"{hub.public_url}/user/alice/srv1/echo", timeout=10,
                            headers={"Authorization": f"token {token}"})
    assert response.status_code == 403
    assert "access:servers!server=alice/srv1" in response.text


def test_activity_reaches_the_hub_and_not_while_idle(hub, alice):
    before = hub.server_model("alice")["last_activity"]
    alice.get("/user/alice/echo")
    advanced = wait_until(
        lambda: (hub.server_model("alice")["last_activity"] or "") > (before or "") and
        hub.server_model("alice")["last_activity"], 6 * ACTIVITY_INTERVAL + 10,
        "alice's server's last_activity to advance", interval=0.5)
    assert _stamp(advanced) > _stamp(before)
    # Idle: several intervals pass and nothing is reported.
    time.sleep(1.5 * ACTIVITY_INTERVAL)
    settled = hub.server_model("alice")["last_activity"]
    time.sleep(3 * ACTIVITY_INTERVAL)
    assert hub.server_model("alice")["last_activity"] == settled


def test_managed_service_with_hub_login(hub, alice):
    echo = _echo(alice.get("/services/mgd/echo?q=1"))
    assert echo["path"] == "/echo?q=1"
    assert any("/services/mgd/oauth_callback?" in url for _, url in alice.history)
    assert alice.cookie("service-mgd", "/services/mgd/")
    anonymous = requests.get(f"{hub.public_url}/services/mgd/echo", timeout=10,
                             headers={"Accept": "application/json"})
    assert anonymous.status_code == 403
    assert anonymous.headers["X-JupyterHub-Version"] == hub.version


def test_external_service_with_a_configured_token(hub, alice):
    echo = _echo(alice.get("/services/ext/echo"))
    assert echo["path"] == "/echo"
    assert any("/services/ext/oauth_callback?" in url for _, url in alice.history)
    token = hub.user_token("alice")
    response = requests.get(f"{hub.public_url}/services/ext/echo", timeout=10,
                            headers={"Authorization": f"token {token}"})
    assert response.status_code == 200
    wait_until(lambda: requests.get(f"{hub.public_url}/services/ext/_hubtwist/api", timeout=10)
               .headers.get("X-JupyterHub-Version") == hub.version, 20,
               "the external service to learn the Hub's version")


def test_the_hub_stopping_a_server_leaves_no_process_behind(hub):
    carol = Browser(hub.public_url)
    assert carol.login("carol").status_code == 200
    token = hub.user_token("carol")
    headers = {"Authorization": f"token {token}", "Accept": "application/json"}
    for name in ("app", "ws"):  # start both apps
        requests.get(f"{hub.public_url}/user/carol/{name}/", headers=headers, timeout=30)
    servers = requests.get(f"{hub.public_url}/user/carol/_hubtwist/api/servers", headers=headers,
                           timeout=10).json()["servers"]
    app_pids = [s["pid"] for s in servers if s["pid"]]
    assert len(app_pids) == 2, servers
    hubtwist_pid = int(open(f"/proc/{app_pids[0]}/stat").read().rsplit(")", 1)[1].split()[1])
    tree = {hubtwist_pid, *descendants(hubtwist_pid)}
    assert set(app_pids) <= tree and len(tree) >= 4, tree  # hubtwist, 2 apps, the guardian
    response = hub.api("DELETE", "/users/carol/server")
    assert response.status_code in (202, 204), response.text
    wait_until(lambda: hub.server_model("carol") is None, 60, "the Hub to stop carol's server")
    wait_until(lambda: not any(alive(pid) for pid in tree), 15,
               f"carol's processes to be gone: {[p for p in tree if alive(p)]}")
