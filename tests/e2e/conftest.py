"""
A real JupyterHub (PyPI) with configurable-http-proxy (npm), started once for the e2e tests,
on loopback ports chosen at run time. DummyAuthenticator (any password) and
SimpleLocalProcessSpawner; each user's server is hubtwist (`Spawner.cmd`) in front of the
test apps; the Hub also runs hubtwist as the managed service `mgd`, and the tests run it as
the external service `ext`. Every wait is bounded; every process is stopped at the end.

Missing JupyterHub or configurable-http-proxy fails the tests (never skips them): run
`bash tests/setup`.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from tests.helpers import APPS, HTTPAPP, alive, descendants
from tests.helpers import free_port, wait_until  # noqa: F401 (used here and by importers)

REPO = pathlib.Path(__file__).resolve().parents[2]
CHP = REPO / "tests" / ".node" / "node_modules" / ".bin" / "configurable-http-proxy"
HUBTWIST = [sys.executable, "-m", "hubtwist"]
WSAPP = [sys.executable, str(APPS / "wsapp.py")]
ACTIVITY_INTERVAL = 2  # seconds; JUPYTERHUB_ACTIVITY_INTERVAL of the users' servers
SETUP_HINT = "run `bash tests/setup` (it installs jupyterhub from PyPI and configurable-http-proxy from npm)"




def _answers(url: str, status: int | None = None) -> bool:
    """Any answer below 500 (as the Hub's readiness check), or exactly C{status}."""
    try:
        code = requests.get(url, timeout=2, allow_redirects=False).status_code
    except requests.RequestException:
        return False
    return code == status if status is not None else code < 500


def _clean_environment() -> dict:
    """This process's environment without JUPYTERHUB_* (the tests may run inside a Hub)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTERHUB_", "JPY_", "HUBTWIST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Hub:
    """The running Hub: its URLs, tokens, files and helpers for the tests."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.public_port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.mgd_port = free_port()
        self.ext_port = free_port()
        self.public_url = f"http://127.0.0.1:{self.public_port}"
        self.api_url = f"http://127.0.0.1:{self.hub_port}/hub/api"
        self.control_token = secrets.token_hex(24)
        self.ext_token = secrets.token_hex(24)
        self.process: subprocess.Popen | None = None
        self.ext_process: subprocess.Popen | None = None
        self.version = ""

    # -- the Hub's REST API as the `ctl` service (an admin-like role) -----------------------

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.control_token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.api_url + path, headers=headers, timeout=30, **kwargs)

    def server_model(self, user: str, server: str = "") -> dict | None:
        model = self.api("GET", f"/users/{user}").json()
        return model.get("servers", {}).get(server)

    def user_token(self, user: str) -> str:
        response = self.api("POST", f"/users/{user}/tokens", json={"note": "e2e"})
        assert response.status_code in (200, 201), response.text
        return response.json()["token"]

    def log_tail(self, lines: int = 60) -> str:
        path = self.root / "hub.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # -- start and stop --------------------------------------------------------------------

    def write_user_apps(self) -> pathlib.Path:
        """The users' hubtwist config: the HTTP test app at their server's root (it echoes
        what it saw), the WebSocket echo app under ws/."""
        apps = self.root / "user-apps.toml"
        apps.write_text(textwrap.dedent(f"""\
            default_server = "app"
            forward_user_info = true
            [servers.app]
            command = {json.dumps([*HTTPAPP, "--port", "{port}"])}
            [servers.ws]
            command = {json.dumps([*WSAPP, "--port", "{port}"])}
            """))
        return apps

    def log_in(self, user: str = "alice"):
        """A browser logged in as C{user}: the Hub spawned the server, the OAuth redirects
        were followed."""
        from tests.e2e.browser import Browser

        browser = Browser(self.public_url)
        page = browser.login(user)
        assert page.status_code == 200, (browser.history, page.text[:300], self.log_tail())
        return browser

    def write_config(self) -> pathlib.Path:
        apps = self.write_user_apps()
        env = _clean_environment()
        config = self.root / "jupyterhub_config.py"
        config.write_text(textwrap.dedent(f"""\
            c = get_config()  # noqa
            root = {str(self.root)!r}
            c.JupyterHub.ip = "127.0.0.1"
            c.JupyterHub.port = {self.public_port}
            c.JupyterHub.hub_ip = "127.0.0.1"
            c.JupyterHub.hub_port = {self.hub_port}
            c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
            c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]
            c.ConfigurableHTTPProxy.pid_file = root + "/chp.pid"
            c.JupyterHub.pid_file = root + "/hub.pid"
            c.JupyterHub.db_url = "sqlite:///" + root + "/jupyterhub.sqlite"
            c.JupyterHub.cookie_secret_file = root + "/cookie_secret"
            c.JupyterHub.authenticator_class = "dummy"
            c.JupyterHub.spawner_class = "simple"
            c.SimpleLocalProcessSpawner.home_dir_template = root + "/home/{{username}}"
            # Each user's server: hubtwist in front of the test apps, as a Spawner runs it.
            c.Spawner.cmd = {json.dumps([*HUBTWIST, "--allow-root", "--config", str(apps)])}
            c.Spawner.environment = {{
                "JUPYTERHUB_ACTIVITY_INTERVAL": "{ACTIVITY_INTERVAL}",
                "PYTHONPATH": {env["PYTHONPATH"]!r},
            }}
            c.Spawner.http_timeout = 30
            c.Spawner.start_timeout = 60
            c.JupyterHub.allow_named_servers = True
            # The Hub also takes activity from the proxy's routes every last_activity_interval;
            # pushed out of the test's time so that only hubtwist's reports count.
            c.JupyterHub.last_activity_interval = 3600
            c.JupyterHub.services = [
                {{  # managed: the Hub runs hubtwist, at /services/mgd/
                    "name": "mgd",
                    "url": "http://127.0.0.1:{self.mgd_port}",
                    "command": {json.dumps([*HUBTWIST, "--allow-root", "--", *HTTPAPP, "--port",
                                           "{port}"])},
                    "environment": {{"PYTHONPATH": {env["PYTHONPATH"]!r}}},
                    "oauth_no_confirm": True,
                }},
                {{  # external: the tests run hubtwist with this token, at /services/ext/
                    "name": "ext",
                    "url": "http://127.0.0.1:{self.ext_port}",
                    "api_token": {self.ext_token!r},
                    "oauth_no_confirm": True,
                }},
                {{"name": "ctl", "api_token": {self.control_token!r}}},
            ]
            c.JupyterHub.load_roles = [
                # The default `user` role lacks access:services: without it, 403 at authorize.
                {{"name": "user", "scopes": ["self", "access:services"]}},
                {{"name": "e2e-control", "services": ["ctl"], "scopes": [
                    "admin:users", "admin:servers", "tokens", "list:users", "read:users",
                    "read:users:activity", "read:servers", "access:servers"]}},
            ]
            """))
        for user in ("alice", "bob", "carol"):
            (self.root / "home" / user).mkdir(parents=True, exist_ok=True)
        return config

    def start(self) -> None:
        config = self.write_config()
        log = open(self.root / "hub.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.root,
            env=_clean_environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            # At the same time as the Hub, as an admin's systemd would: the Hub waits for
            # external services at start-up, and hubtwist waits for nothing.
            self.start_external_service()
            wait_until(lambda: self.process.poll() is not None or _answers(self.api_url + "/"),
                       90, "JupyterHub to answer")
            assert self.process.poll() is None, f"JupyterHub exited:\n{self.log_tail()}"
            wait_until(lambda: self.process.poll() is not None
                       or _answers(self.public_url + "/services/ext/_hubtwist/api", 200), 90,
                       "the Hub's start-up (services, proxy routes)")
            assert self.process.poll() is None, f"JupyterHub exited:\n{self.log_tail()}"
            self.version = requests.get(self.api_url + "/", timeout=5).json()["version"]
        except BaseException:
            self.stop()
            raise

    def start_external_service(self) -> None:
        token_file = self.root / "ext-token"
        token_file.write_text(self.ext_token + "\n")
        token_file.chmod(0o600)
        config = self.root / "ext.toml"
        config.write_text(textwrap.dedent(f"""\
            listen = "tcp:{self.ext_port}:interface=127.0.0.1"
            default_server = "app"
            [hub]
            api_url = "{self.api_url}"
            api_token_file = "{token_file}"
            service_name = "ext"
            [servers.app]
            command = {json.dumps([*HTTPAPP, "--port", "{port}"])}
            """))
        log = open(self.root / "ext.log", "w")
        self.ext_process = subprocess.Popen([*HUBTWIST, "--allow-root", "--config", str(config)],
                                            cwd=self.root,
                                            env=_clean_environment(), stdout=log,
                                            stderr=subprocess.STDOUT)
        log.close()
        wait_until(lambda: self.ext_process.poll() is not None
                   or _answers(f"http://127.0.0.1:{self.ext_port}/services/ext/_hubtwist/api"), 30,
                   "the external service")
        assert self.ext_process.poll() is None, (self.root / "ext.log").read_text()

    def _ours(self) -> list[int]:
        """Live processes started for this Hub: their command line or environment names its
        directory or its API port (configurable-http-proxy, services, users' servers)."""
        markers = (str(self.root).encode(), f"127.0.0.1:{self.hub_port}/".encode())
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline, \
                        open(f"/proc/{entry}/environ", "rb") as environ:
                    text = cmdline.read() + environ.read()
            except OSError:
                continue
            if any(marker in text for marker in markers) and alive(int(entry)):
                found.append(int(entry))
        return found

    def stop(self) -> None:
        """SIGTERM the external service and the Hub (which stops servers, services, CHP),
        then SIGKILL whatever of their process trees is left — found by ancestry, and by
        this Hub's markers, for processes orphaned when the Hub exited on its own."""
        tree = set(self._ours())
        for process in (self.ext_process, self.process):
            if process is not None and process.poll() is None:
                tree |= descendants(process.pid)
                process.send_signal(signal.SIGTERM)
        for process in (self.ext_process, self.process):
            if process is not None:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(pid) for pid in tree):
            time.sleep(0.2)
        tree |= set(self._ours())
        for pid in set(tree):
            tree |= descendants(pid)
        for pid in tree:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def _prerequisites() -> None:
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        pytest.fail(f"JupyterHub is not installed: {SETUP_HINT}", pytrace=False)
    if not CHP.exists():
        pytest.fail(f"configurable-http-proxy is not installed at {CHP}: {SETUP_HINT}",
                    pytrace=False)
    if shutil.which("node") is None:
        pytest.fail(f"node is not on PATH (configurable-http-proxy needs it): {SETUP_HINT}",
                    pytrace=False)


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """One JupyterHub for all e2e tests (starting one takes seconds; tests use distinct users)."""
    _prerequisites()
    instance = Hub(tmp_path_factory.mktemp("hub"))
    instance.start()
    yield instance
    instance.stop()
