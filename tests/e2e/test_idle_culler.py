"""
The real jupyterhub-idle-culler (PyPI) as a Hub-managed service, with the scopes its docs
name, against three users' hubtwist servers: erin's kept busy by HTTP requests, frank's only
by WebSocket messages (one connection, opened before the watch starts), gina's idle. The
Hub takes activity from hubtwist's reports alone (the proxy's route activity is pushed out
of the test's time, as in the other e2e tests). gina's server is culled; the busy ones
survive further rounds of the culler.

The same scenario runs against the peers when CULLER_PEERS_BIN (a PATH-like list of
directories) finds jupyter-server-proxy's `jupyter-standaloneproxy` and `jhsingle-native-proxy`:
two virtualenvs' bin, as their simpervisor pins conflict (`pip install
'jupyter-server-proxy[standalone]'` in one, `jhsingle-native-proxy` in the other). What
each does is asserted as measured and recorded in docs/deploy.md. Without them those cases
are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
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


PEERS_BIN = os.environ.get("CULLER_PEERS_BIN", "")
APP = [*e2e.HTTPAPP, "--port", "{port}"]
WSAPP = [*e2e.WSAPP, "--port", "{port}"]


def _peer(name: str) -> str:
    found = shutil.which(name, path=PEERS_BIN)
    if found is None:
        pytest.fail(f"CULLER_PEERS_BIN has no {name}", pytrace=False)
    return found


def peer_commands(server: str) -> dict[str, list[str]] | None:
    """Each user's Spawner.cmd for a peer (C{None}: hubtwist, the Hub's own config), with
    activity reports every e2e.ACTIVITY_INTERVAL seconds as hubtwist's."""
    if server == "hubtwist":
        return None
    interval = str(e2e.ACTIVITY_INTERVAL)
    if server == "jupyter-server-proxy":
        wrap = [_peer("jupyter-standaloneproxy"), f"--activity-interval={interval}", "--"]
    else:  # jhsingle-native-proxy, with its defaults otherwise (--force-alive among them)
        wrap = [_peer("jhsingle-native-proxy"), "--destport", "0",
                "--last-activity-interval", interval, "--"]
    return {"erin": [*wrap, *APP], "frank": [*wrap, *WSAPP], "gina": [*wrap, *APP]}


class CullerHub(e2e.Hub):
    """The e2e Hub with jupyterhub-idle-culler as a managed service; users' servers are
    hubtwist, or a peer (L{peer_commands})."""

    def __init__(self, root, server: str = "hubtwist") -> None:
        super().__init__(root)
        self.server = server
        commands = peer_commands(server)
        self.commands = commands
        # where the busy users' requests and messages go
        self.http_path = "/user/erin/echo"
        self.ws_path = "/user/frank/ws/echo" if commands is None else "/user/frank/echo"

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
            if self.commands is not None:
                file.write(textwrap.dedent(f"""
                    COMMANDS = {json.dumps(self.commands)}

                    def peer_command(spawner):
                        spawner.cmd = COMMANDS[spawner.user.name]

                    c.Spawner.pre_spawn_hook = peer_command
                    """))
        return config

    def culler_rounds(self) -> int:
        path = self.root / "hub.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return sum(1 for line in text.splitlines() if ROUND in line and "idle-culler@" in line)


@pytest.fixture(scope="module", params=["hubtwist", "jupyter-server-proxy",
                                        "jhsingle-native-proxy"])
def culler_hub(request, tmp_path_factory):
    if request.param != "hubtwist" and not PEERS_BIN:
        pytest.skip("the peers' culling runs only with CULLER_PEERS_BIN (see the docstring)")
    e2e._prerequisites()
    try:
        import jupyterhub_idle_culler  # noqa: F401
    except ImportError:
        pytest.fail("jupyterhub-idle-culler is not installed: run `bash tests/setup`",
                    pytrace=False)
    hub = CullerHub(tmp_path_factory.mktemp("culler-hub"), request.param)
    hub.start()
    yield hub
    hub.stop()


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# What each server's users end up as after the scenario: culled or kept. hubtwist's is the
# point of the test; the peers' are as measured (docs/deploy.md, "The idle culler").
EXPECTED = {
    "hubtwist": {"erin": "kept", "frank": "kept", "gina": "culled"},
    # 4.6.0 reports activity only when JUPYTERHUB_SERVER_NAME is set: a default server
    # (name "") reports nothing, so the busy servers are culled too.
    "jupyter-server-proxy": {"erin": "culled", "frank": "culled", "gina": "culled"},
    # 0.8.3 likewise needs JUPYTERHUB_SERVER_NAME to report (so --force-alive, its default,
    # does nothing on a default server), and its Hub login does not work under JupyterHub
    # 6.1 (a request without its cookie ends in a TypeError in oauth_proxy, a 500; erin's,
    # after the login, get 302s): her requests never reach her app.
    "jhsingle-native-proxy": {"erin": "culled", "frank": "culled", "gina": "culled"},
}


def test_the_idle_server_is_culled_and_the_busy_ones_are_not(culler_hub):
    hub = culler_hub
    stop = threading.Event()
    problems: dict[str, str] = {}  # user: the first failure of her busy loop
    browsers = {}
    for user in ("erin", "frank", "gina"):
        browsers[user] = Browser(hub.public_url)
        page = browsers[user].login(user)
        assert page.status_code == 200, (page.text[:300], hub.log_tail())
    if hub.commands is None:
        # frank's WebSocket app is started by one HTTP request now; then only messages.
        assert browsers["frank"].get("/user/frank/ws/").status_code == 200

    def http_busy() -> None:
        while not stop.wait(BUSY_EVERY):
            try:
                response = browsers["erin"].session.get(hub.public_url + hub.http_path,
                                                        timeout=10, allow_redirects=False)
            except requests.RequestException as error:
                problems.setdefault("erin", repr(error))
                return
            if response.status_code != 200:
                problems.setdefault("erin", f"status {response.status_code}")
                return

    def websocket_busy() -> None:
        url = f"ws://127.0.0.1:{hub.public_port}{hub.ws_path}"
        cookie = browsers["frank"].cookie_header(hub.ws_path)
        try:
            with connect(url, additional_headers={"Cookie": cookie}, open_timeout=30,
                         close_timeout=5) as ws:
                while not stop.wait(BUSY_EVERY):
                    ws.send("still here")
                    assert ws.recv(timeout=10) == "still here"
        except Exception as error:  # noqa: BLE001 - reported by the test below
            if not stop.is_set():
                problems.setdefault("frank", f"at {time.strftime('%H:%M:%S')}: {error!r}")

    threads = [threading.Thread(target=http_busy, daemon=True),
               threading.Thread(target=websocket_busy, daemon=True)]
    for thread in threads:
        thread.start()
    culled_after = None
    try:
        gina_active = hub.server_model("gina")["last_activity"]
        # Culled by timeout + one round + one activity report at the latest, with margin;
        # a server that keeps reporting activity is never culled: then the bound passes.
        bound = TIMEOUT + 2 * CULL_EVERY + 2 * e2e.ACTIVITY_INTERVAL + 10
        started = time.monotonic()
        while time.monotonic() - started < bound:
            if hub.server_model("gina") is None:
                culled_after = time.time() - _stamp(gina_active)
                break
            time.sleep(0.5)
        # Two more full rounds of the culler; the busy servers outlive them.
        rounds = hub.culler_rounds()
        wait_until(lambda: hub.culler_rounds() >= rounds + 2, 4 * CULL_EVERY,
                   "two more culler rounds", interval=0.5)
        outcome = {user: "kept" if hub.server_model(user) else "culled"
                   for user in ("erin", "frank", "gina")}
        for user in ("erin", "frank"):
            model = hub.server_model(user)
            if model is not None:
                age = time.time() - _stamp(model["started"])
                assert age > TIMEOUT + CULL_EVERY, (user, age)  # old enough to be culled
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
    print(f"\n{hub.server}: {outcome}; {problems}; gina culled "
          + (f"{culled_after:.1f} s after her last activity" if culled_after else "never")
          + f" (--timeout={TIMEOUT}, --cull-every={CULL_EVERY})")
    # A busy loop may only fail because its server was culled under it.
    assert all(outcome[user] == "culled" for user in problems), (problems, outcome)
    assert outcome == EXPECTED[hub.server], (outcome, problems, hub.log_tail())
