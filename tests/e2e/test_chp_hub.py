"""
A real JupyterHub whose proxy is `hubtwist chp` (JupyterHub's stock ConfigurableHTTPProxy
class, only its `command` changed) and whose users' servers are hubtwist: both hubtwist
roles at once, for the source tree (`python -m hubtwist chp`) and the one-file binary
(`dist/hubtwist chp`, when it was built: `bash tests/setup`).

The users' servers send no activity reports of their own here (JUPYTERHUB_ACTIVITY_INTERVAL
= 0) and the Hub polls the proxy's routes every 2 s, so a server's last_activity can only
advance through the `last_activity` that `hubtwist chp` keeps on its routes.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import sys

import pytest
import requests
from websockets.sync.client import connect

from tests.e2e.browser import Browser
from tests.e2e.conftest import ACTIVITY_INTERVAL, CHP, REPO, Hub, _prerequisites, wait_until

pytestmark = pytest.mark.e2e

BINARY = REPO / "dist" / "hubtwist"
ROUTES_POLL = 2  # seconds: the Hub's last_activity_interval, how often it reads the routes


class ChpHub(Hub):
    """The conftest's Hub with `hubtwist chp` as its proxy (the one line a Hub admin sets)."""

    def __init__(self, root: pathlib.Path, proxy_command: list[str]) -> None:
        super().__init__(root)
        self.proxy_command = proxy_command
        self.proxy_token = secrets.token_hex(24)

    def write_config(self) -> pathlib.Path:
        config = super().write_config()
        text = config.read_text()
        replacements = {
            f"c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]":
                f"c.ConfigurableHTTPProxy.command = {json.dumps(self.proxy_command)}\n"
                f"c.ConfigurableHTTPProxy.auth_token = {self.proxy_token!r}",
            "c.JupyterHub.last_activity_interval = 3600":
                f"c.JupyterHub.last_activity_interval = {ROUTES_POLL}",
            f'"JUPYTERHUB_ACTIVITY_INTERVAL": "{ACTIVITY_INTERVAL}"':
                '"JUPYTERHUB_ACTIVITY_INTERVAL": "0"',
        }
        for old, new in replacements.items():
            assert old in text, f"the conftest's Hub configuration changed: {old!r} is gone"
            text = text.replace(old, new)
        config.write_text(text)
        return config

    def routes(self) -> dict:
        response = requests.get(f"http://127.0.0.1:{self.proxy_api_port}/api/routes", timeout=10,
                                headers={"Authorization": f"token {self.proxy_token}"})
        assert response.status_code == 200, response.text
        return response.json()

    def proxy_cmdline(self) -> list[str]:
        pid = int((self.root / "chp.pid").read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return stream.read().decode().split("\0")


def _commands():
    yield pytest.param([sys.executable, "-m", "hubtwist", "chp"], id="source")
    yield pytest.param([str(BINARY), "chp"], id="binary", marks=pytest.mark.skipif(
        not BINARY.exists(), reason="dist/hubtwist is not built (bash tests/setup builds it)"))


@pytest.fixture(scope="module", params=list(_commands()))
def chp_hub(request, tmp_path_factory):
    _prerequisites()
    instance = ChpHub(tmp_path_factory.mktemp("chp-hub"), request.param)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def alice(chp_hub):
    return chp_hub.log_in("alice")


def test_the_hubs_proxy_is_hubtwist_chp(chp_hub, alice):
    command = chp_hub.proxy_cmdline()
    assert "chp" in command and not any("configurable-http-proxy" in part for part in command)
    routes = chp_hub.routes()
    # JupyterHub's routes, with the keys it posted (user, server_name) kept.
    assert routes["/"]["hub"] is True
    assert routes["/user/alice"]["user"] == "alice"
    assert routes["/user/alice"]["server_name"] == ""
    assert "last_activity" in routes["/user/alice"]


def test_login_and_the_app_through_hubtwist_chp(chp_hub, alice):
    paths = [url.split(chp_hub.public_url, 1)[-1] for _, url in alice.history]
    assert any(p.startswith("/user/alice/oauth_callback?code=") for p in paths), paths
    response = alice.get("/user/alice/echo?x=1")
    assert response.status_code == 200, response.text[:300]
    echo = response.json()
    assert echo["path"] == "/echo?x=1"
    assert echo["headers"]["x-forwarded-user"] == "alice"
    # CHP's hop, then hubtwist's: the public port is what both saw as the Host.
    assert echo["headers"]["x-forwarded-host"].startswith(f"127.0.0.1:{chp_hub.public_port}")
    assert response.headers["X-JupyterHub-Version"] == chp_hub.version


def test_a_websocket_through_both(chp_hub, alice):
    url = f"ws://127.0.0.1:{chp_hub.public_port}/user/alice/ws/echo"
    with connect(url, additional_headers={"Cookie": alice.cookie_header("/user/alice/ws/echo")},
                 open_timeout=30, close_timeout=5) as ws:
        for index in range(3):
            ws.send(f"message {index}")
            assert ws.recv(timeout=10) == f"message {index}"


def test_activity_reaches_the_hub_through_the_routes(chp_hub, alice):
    before = chp_hub.server_model("alice")["last_activity"]
    route_before = chp_hub.routes()["/user/alice"]["last_activity"]
    assert alice.get("/user/alice/echo").status_code == 200
    assert chp_hub.routes()["/user/alice"]["last_activity"] > route_before
    advanced = wait_until(
        lambda: (chp_hub.server_model("alice")["last_activity"] or "") > (before or "")
        and chp_hub.server_model("alice")["last_activity"], 5 * ROUTES_POLL + 10,
        "alice's last_activity to advance through the proxy's routes", interval=0.5)
    assert advanced > (before or "")


def test_stopping_a_server_removes_its_route(chp_hub):
    bob = Browser(chp_hub.public_url)
    assert bob.login("bob").status_code == 200
    assert "/user/bob" in chp_hub.routes()
    response = chp_hub.api("DELETE", "/users/bob/server")
    assert response.status_code in (202, 204), response.text
    wait_until(lambda: chp_hub.server_model("bob") is None, 60, "the Hub to stop bob's server")
    wait_until(lambda: "/user/bob" not in chp_hub.routes(), 15, "bob's route to be removed")
    # His URL now goes to the Hub (the / route), which offers to start the server again.
    page = requests.get(chp_hub.public_url + "/user/bob/echo", timeout=10, allow_redirects=False)
    assert page.status_code == 302 and "/hub/" in page.headers["Location"]
