"""
The real jupyterhub-idle-culler (PyPI) as a Hub-managed service, with the scopes its docs
name, against three users' hubtwist servers: erin's kept busy by HTTP requests, frank's only
by WebSocket messages (one connection, opened before the watch starts), gina's idle. The
Hub takes activity from hubtwist's reports alone (the proxy's route activity is pushed out
of the test's time, as in the other e2e tests). gina's server is culled; the busy ones
survive further rounds of the culler.
"""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
from datetime import datetime

import pytest
import requests
from websockets.sync.client import connect

from tests.e2e import conftest as e2e
from tests.e2e.browser import Browser
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 20  # the culler's --timeout: idle seconds before a server is culled
CULL_EVERY = 5  # its --cull-every
BUSY_EVERY = 3  # seconds between the busy users' requests / messages
ROUND = "GET /hub/api/users?state="  # one culler round, in the Hub's log


class CullerHub(e2e.Hub):
    """The e2e Hub with jupyterhub-idle-culler as a managed service."""

    def write_config(self):
        config = super().write_config()
        for user in ("erin", "frank", "gina"):
            (self.root / "home" / user).mkdir(parents=True, exist_ok=True)
        with config.open("a") as file:
            file.write(textwrap.dedent(f"""
                # -- jupyterhub-idle-culler, as its README sets it up -----------------------
                c.JupyterHub.services.append({{
                    "name": "idle-culler",
                    "command": {json.dumps([sys.executable, "-m", "jupyterhub_idle_culler",
                                            f"--timeout={TIMEOUT}",
                                            f"--cull-every={CULL_EVERY}"])},
                }})
                c.JupyterHub.load_roles.append({{
                    "name": "idle-culler",
                    "services": ["idle-culler"],
                    "scopes": ["list:users", "read:users:activity", "read:servers",
                               "delete:servers"],
                }})
                """))
        return config

    def culler_rounds(self) -> int:
        path = self.root / "hub.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return sum(1 for line in text.splitlines() if ROUND in line and "idle-culler@" in line)


@pytest.fixture(scope="module")
def culler_hub(tmp_path_factory):
    e2e._prerequisites()
    try:
        import jupyterhub_idle_culler  # noqa: F401
    except ImportError:
        pytest.fail("jupyterhub-idle-culler is not installed: run `bash tests/setup`",
                    pytrace=False)
    hub = CullerHub(tmp_path_factory.mktemp("culler-hub"))
    hub.start()
    yield hub
    hub.stop()


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_the_idle_server_is_culled_and_the_busy_ones_are_not(culler_hub):
    hub = culler_hub
    stop = threading.Event()
    problems: list[str] = []
    browsers = {}
    for user in ("erin", "frank", "gina"):
        browsers[user] = Browser(hub.public_url)
        page = browsers[user].login(user)
        assert page.status_code == 200, (page.text[:300], hub.log_tail())
    # frank's WebSocket app is started by one HTTP request now; then only messages.
    assert browsers["frank"].get("/user/frank/ws/").status_code == 200

    def http_busy() -> None:
        while not stop.wait(BUSY_EVERY):
            try:
                browsers["erin"].session.get(f"{hub.public_url}/user/erin/echo", timeout=10)
            except requests.RequestException as error:
                problems.append(f"erin: {error}")

    def websocket_busy() -> None:
        url = f"ws://127.0.0.1:{hub.public_port}/user/frank/ws/echo"
        cookie = browsers["frank"].cookie_header("/user/frank/ws/echo")
        try:
            with connect(url, additional_headers={"Cookie": cookie}, open_timeout=30,
                         close_timeout=5) as ws:
                while not stop.wait(BUSY_EVERY):
                    ws.send("still here")
                    assert ws.recv(timeout=10) == "still here"
        except Exception as error:  # noqa: BLE001 - reported by the test below
            problems.append(f"frank at {time.strftime('%H:%M:%S')}: {error!r}")

    threads = [threading.Thread(target=http_busy, daemon=True),
               threading.Thread(target=websocket_busy, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        gina_active = hub.server_model("gina")["last_activity"]
        wait_until(lambda: problems or hub.server_model("gina") is None,
                   TIMEOUT + 2 * CULL_EVERY + 30, "the culler to cull gina's idle server",
                   interval=0.5)
        assert not problems, problems
        culled_after = time.time() - _stamp(gina_active)
        # Two more full rounds of the culler; the busy servers outlive them.
        rounds = hub.culler_rounds()
        wait_until(lambda: problems or hub.culler_rounds() >= rounds + 2, 4 * CULL_EVERY,
                   "two more culler rounds", interval=0.5)
        assert not problems, problems
        for user in ("erin", "frank"):
            model = hub.server_model(user)
            assert model is not None, f"{user}'s busy server was culled:\n{hub.log_tail()}"
            age = time.time() - _stamp(model["started"])
            assert age > TIMEOUT + CULL_EVERY, (user, age)  # old enough to have been culled
            idle = time.time() - _stamp(model["last_activity"])
            assert idle < TIMEOUT, (user, idle)
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
    print(f"\ngina's idle server culled {culled_after:.1f} s after her last activity "
          f"(--timeout={TIMEOUT}, --cull-every={CULL_EVERY})")
