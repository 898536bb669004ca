"""
A real JupyterHub with `c.JupyterHub.internal_ssl = True` and `hubtwist chp` as its proxy
(JupyterHub's stock ConfigurableHTTPProxy class, only its `command` changed), hubtwist as
the users' servers: every internal hop is TLS with certificates the Hub makes (certipy).

The Hub starts the proxy with `--api-ssl-key/-cert/-ca --api-ssl-request-cert
--api-ssl-reject-unauthorized` (it talks to the REST API with a client certificate) and
`--client-ssl-key/-cert/-ca` (the proxy's identity toward its targets, which are all
https: the Hub itself, `--error-target`, and each user's server, serving TLS from
JUPYTERHUB_SSL_*). The public side stays plain HTTP, as in the Hub's default set-up.

For the source tree (`python -m hubtwist chp`) and the one-file binary (`dist/hubtwist chp`,
when it was built: `bash tests/setup`), as tests/e2e/test_chp_hub.py: one Hub per variant.
The binary's proxy loads its TLS modules (pyOpenSSL, service_identity for the targets'
127.0.0.1 certificates) from the bundle.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import sys
import textwrap

import pytest
import requests
from websockets.sync.client import connect

from tests.e2e.browser import Browser
from tests.e2e.conftest import HUBTWIST, SETUP_HINT, Hub, _clean_environment, wait_until
from tests.e2e.test_chp_hub import _commands as proxy_commands

pytestmark = pytest.mark.e2e


class InternalSslHub(Hub):
    """A Hub with internal_ssl, `hubtwist chp` as its proxy and no services (they would
    need the Hub's certificates too; test_chp_hub.py covers them)."""

    def __init__(self, root: pathlib.Path, proxy_command: list[str]) -> None:
        super().__init__(root)
        self.proxy_command = proxy_command
        self.proxy_token = secrets.token_hex(24)
        self.certs = root / "internal-ssl"
        self.api_url = f"https://127.0.0.1:{self.hub_port}/hub/api"
        self.proxy_api_url = f"https://127.0.0.1:{self.proxy_api_port}/api/routes"

    # The Hub's own certificate (signed by hub-ca): the Hub and the proxy's API, whose
    # trust bundles both include hub-ca, take it as a client certificate.
    def _tls(self) -> dict:
        return {"verify": str(self.certs / "hub-ca_trust.crt"),
                "cert": (str(self.certs / "hub-internal" / "hub-internal.crt"),
                         str(self.certs / "hub-internal" / "hub-internal.key"))}

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.control_token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.api_url + path, headers=headers, timeout=30,
                                **self._tls(), **kwargs)

    def routes(self, **tls) -> dict:
        response = requests.get(self.proxy_api_url, timeout=10, **(tls or self._tls()),
                                headers={"Authorization": f"token {self.proxy_token}"})
        assert response.status_code == 200, response.text
        return response.json()

    def write_config(self) -> pathlib.Path:
        apps = self.write_user_apps()
        env = _clean_environment()
        config = self.root / "jupyterhub_config.py"
        config.write_text(textwrap.dedent(f"""\
            c = get_config()  # noqa
            root = {str(self.root)!r}
            c.JupyterHub.internal_ssl = True
            c.JupyterHub.internal_certs_location = {str(self.certs)!r}
            c.JupyterHub.ip = "127.0.0.1"
            c.JupyterHub.port = {self.public_port}
            c.JupyterHub.hub_ip = "127.0.0.1"
            c.JupyterHub.hub_port = {self.hub_port}
            c.ConfigurableHTTPProxy.api_url = "https://127.0.0.1:{self.proxy_api_port}"
            c.ConfigurableHTTPProxy.command = {json.dumps(self.proxy_command)}
            c.ConfigurableHTTPProxy.auth_token = {self.proxy_token!r}
            c.ConfigurableHTTPProxy.pid_file = root + "/chp.pid"
            c.JupyterHub.pid_file = root + "/hub.pid"
            c.JupyterHub.db_url = "sqlite:///" + root + "/jupyterhub.sqlite"
            c.JupyterHub.cookie_secret_file = root + "/cookie_secret"
            c.JupyterHub.authenticator_class = "dummy"
            c.JupyterHub.spawner_class = "simple"
            c.SimpleLocalProcessSpawner.home_dir_template = root + "/home/{{username}}"
            c.Spawner.cmd = {json.dumps([*HUBTWIST, "--allow-root", "--config", str(apps)])}
            c.Spawner.environment = {{
                "JUPYTERHUB_ACTIVITY_INTERVAL": "0",
                "PYTHONPATH": {env["PYTHONPATH"]!r},
            }}
            c.Spawner.http_timeout = 30
            c.Spawner.start_timeout = 60
            c.JupyterHub.last_activity_interval = 2
            c.JupyterHub.services = [{{"name": "ctl", "api_token": {self.control_token!r}}}]
            c.JupyterHub.load_roles = [
                {{"name": "e2e-control", "services": ["ctl"], "scopes": [
                    "admin:users", "admin:servers", "list:users", "read:users",
                    "read:users:activity", "read:servers"]}},
            ]
            """))
        for user in ("alice", "bob"):
            (self.root / "home" / user).mkdir(parents=True, exist_ok=True)
        return config

    def start(self) -> None:
        import subprocess

        config = self.write_config()
        log = open(self.root / "hub.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.root,
            env=_clean_environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            wait_until(lambda: self.process.poll() is not None or self._hub_answers(), 90,
                       "JupyterHub to answer over internal TLS")
            assert self.process.poll() is None, f"JupyterHub exited:\n{self.log_tail()}"
            wait_until(lambda: self.process.poll() is not None or _public_answers(self), 60,
                       "the Hub's page through hubtwist chp")
            assert self.process.poll() is None, f"JupyterHub exited:\n{self.log_tail()}"
        except BaseException:
            self.stop()
            raise

    def _hub_answers(self) -> bool:
        if not (self.certs / "hub-internal" / "hub-internal.key").exists():
            return False
        try:
            return self.api("GET", "/").status_code == 200
        except requests.RequestException:
            return False

    def proxy_cmdline(self) -> list[str]:
        pid = int((self.root / "chp.pid").read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return stream.read().decode().split("\0")


def _public_answers(hub: InternalSslHub) -> bool:
    try:
        response = requests.get(hub.public_url + "/hub/login", timeout=5)
    except requests.RequestException:
        return False
    return response.status_code == 200


def _prerequisites() -> None:
    # No configurable-http-proxy needed here; certipy makes the Hub's certificates.
    try:
        import certipy  # noqa: F401
        import jupyterhub  # noqa: F401
    except ImportError as error:
        pytest.fail(f"{error.name} is not installed: {SETUP_HINT}", pytrace=False)


@pytest.fixture(scope="module", params=list(proxy_commands()))
def tls_hub(request, tmp_path_factory):
    _prerequisites()
    instance = InternalSslHub(tmp_path_factory.mktemp("chp-hub-tls"), request.param)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def alice(tls_hub):
    return tls_hub.log_in("alice")


def test_the_hub_drives_hubtwist_chp_over_internal_tls(tls_hub, alice):
    command = tls_hub.proxy_cmdline()
    assert command[:2] == tls_hub.proxy_command[:2] and "chp" in command  # this variant's
    for flag in ("--api-ssl-key", "--api-ssl-request-cert", "--api-ssl-reject-unauthorized",
                 "--client-ssl-key", "--client-ssl-ca"):
        assert flag in command
    routes = tls_hub.routes()
    assert routes["/"]["target"].startswith("https://")  # the Hub, over TLS
    assert routes["/user/alice"]["target"].startswith("https://")  # her server too
    # The API refuses a caller without a certificate from the CAs it trusts.
    with pytest.raises(requests.RequestException):
        tls_hub.routes(verify=str(tls_hub.certs / "hub-ca_trust.crt"))


def test_login_and_the_app_through_hubtwist_chp(tls_hub, alice):
    paths = [url.split(tls_hub.public_url, 1)[-1] for _, url in alice.history]
    assert any(p.startswith("/user/alice/oauth_callback?code=") for p in paths), paths
    response = alice.get("/user/alice/echo?x=1")
    assert response.status_code == 200, response.text[:300]
    echo = response.json()
    assert echo["path"] == "/echo?x=1"
    assert echo["headers"]["x-forwarded-user"] == "alice"


def test_alices_server_port_requires_a_client_certificate(tls_hub, alice):
    # As jupyter_server with JUPYTERHUB_SSL_CLIENT_CA: the Hub (its readiness probe and API
    # calls) and the proxy present certificates from the CAs in it; a process on the host
    # that reaches the port directly, without one, is refused and cannot skip the proxy.
    target = tls_hub.routes()["/user/alice"]["target"].rstrip("/")
    own_api = target + "/user/alice/_hubtwist/api"
    trust = tls_hub._tls()["verify"]  # the Hub checks the users' servers with it too
    with pytest.raises(requests.RequestException) as refused:
        requests.get(own_api, verify=trust, timeout=10)
    assert any(word in str(refused.value).lower()
               for word in ("certificate required", "handshake failure", "reset")), refused.value
    # The Hub's own certificate gets in, and so does alice through the proxy.
    response = requests.get(own_api, timeout=10, **tls_hub._tls())
    assert response.status_code == 200 and "version" in response.json()
    page = alice.get("/user/alice/echo?direct=no")
    assert page.status_code == 200 and page.json()["path"] == "/echo?direct=no"


def test_a_websocket_through_both(tls_hub, alice):
    url = f"ws://127.0.0.1:{tls_hub.public_port}/user/alice/ws/echo"
    with connect(url, additional_headers={"Cookie": alice.cookie_header("/user/alice/ws/echo")},
                 open_timeout=30, close_timeout=5) as ws:
        for index in range(3):
            ws.send(f"message {index}")
            assert ws.recv(timeout=10) == f"message {index}"


def test_activity_reaches_the_hub_through_the_routes(tls_hub, alice):
    before = tls_hub.server_model("alice")["last_activity"]
    assert alice.get("/user/alice/echo").status_code == 200
    advanced = wait_until(
        lambda: (tls_hub.server_model("alice")["last_activity"] or "") > (before or "")
        and tls_hub.server_model("alice")["last_activity"], 30,
        "alice's last_activity to advance through the proxy's routes", interval=0.5)
    assert advanced > (before or "")


def test_stopping_a_server_removes_its_route(tls_hub):
    bob = Browser(tls_hub.public_url)
    assert bob.login("bob").status_code == 200
    assert "/user/bob" in tls_hub.routes()
    response = tls_hub.api("DELETE", "/users/bob/server")
    assert response.status_code in (202, 204), response.text
    wait_until(lambda: tls_hub.server_model("bob") is None, 60, "the Hub to stop bob's server")
    wait_until(lambda: "/user/bob" not in tls_hub.routes(), 15, "bob's route to be removed")
    page = requests.get(tls_hub.public_url + "/user/bob/echo", timeout=10, allow_redirects=False)
    assert page.status_code == 302 and "/hub/" in page.headers["Location"]
