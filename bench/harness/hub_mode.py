"""
C{bench/run hub}: hubtwist as a JupyterHub single-user server, with a real JupyterHub
issuing the cookies, next to the same build standalone, jupyter-server-proxy inside a real
C{jupyterhub-singleuser}, and the whole front chain through the Hub's
configurable-http-proxy (CHP).

The Hub (from C{.scratch/hub-venv}, DummyAuthenticator, SimpleLocalProcessSpawner, loopback
only, its files in C{.scratch/hub-run/}) spawns alice's servers: her default server is
hubtwist in front of the backends (external servers, no command), her named server C{jsp} is
C{jupyterhub-singleuser} with jupyter-server-proxy. alice logs in once through the Hub's
form; after each spawn the harness follows the real OAuth redirects to the server and gives
the cookies it set to wrk (or the WebSocket client) as a C{Cookie} header. Every row's
response is checked (status, size, SHA-256) with that header, and checked to be refused
without it, before it is loaded.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import os
import secrets
import shutil
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness import install
from harness.common import LOOPBACK, SCRATCH, TargetFailed, child_env, free_port, log, mib
from harness.http_mode import FILES, WWW, get, make_files
from harness.peers import (START_TIMEOUT, Peer, Running, command_output, hubtwist_command,
                           hubtwist_repo, hubtwist_version, nginx_version, start_hubtwist,
                           start_nginx_static)
from harness.procs import CpuTime, Proc, process_tree
from harness.report import ratio
from harness.runner import CPU_SETTINGS, Column, Mode, Row, rss_settings
from harness.ws_mode import WS_DIR, _node_env, run_client
from harness.wrk import WrkResult, run_wrk

RUN_DIR = SCRATCH / "hub-run"
USER = "alice"
JSP_SERVER = "jsp"  # alice's named server running jupyterhub-singleuser + jsp
DIRECT_ROUTE = "/bench-direct"  # CHP route straight to the nginx backend
WS_ROUTE = "/bench-ws"  # CHP route straight to the WebSocket echo backend
SPAWN_TIMEOUT = 90.0  # seconds for a server to be ready, or to be gone after a stop
HUB_TIMEOUT = 90.0  # seconds for the Hub (and its CHP) to answer
BROWSER_HEADERS = {  # what a browser sends on a page view (the Hub's XSRF id hashes the UA)
    "User-Agent": "hubtwist-bench/1.0",
    "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate",
}


@dataclass
class HubLoad:
    """Seconds and connections of the 1 KB HTTP runs and the WebSocket runs."""

    duration: float = 10.0  # 1 KB requests, and 64 B WebSocket ping-pong
    bulk_duration: float = 10.0  # 1 MiB WebSocket ping-pong
    warmup: float = 2.0
    threads: int = 2
    connections: int = 32
    ws_connections: int = 16
    bulk_connections: int = 4
    size: int = 64
    bulk_size: int = 1 << 20
    windows: int = 5  # per row of a pair measured together (HubMode.load_pair)

    @classmethod
    def quick(cls) -> "HubLoad":
        return cls(duration=4.0, bulk_duration=4.0, warmup=1.0, windows=2)


# --- pure helpers ------------------------------------------------------------------------------

def cookie_header(jar: http.cookiejar.CookieJar, url: str) -> str:
    """The C{Cookie} header a browser with C{jar} sends to C{url} (paths and all)."""
    request = urllib.request.Request(url)
    jar.add_cookie_header(request)
    return request.get_header("Cookie") or ""


def cookie_headers(jar: http.cookiejar.CookieJar, url: str) -> dict[str, str]:
    """
    The headers of a request alice's browser makes to C{url}: its C{Cookie} header and its
    User-Agent (JupyterHub's XSRF identity, and hubtwist's, hash it, so a request without it
    is a different client whose C{_xsrf} cookie is not valid); none without cookies.
    """
    header = cookie_header(jar, url)
    return {"Cookie": header, "User-Agent": BROWSER_HEADERS["User-Agent"]} if header else {}


def bytes_per_response_problem(result: WrkResult, expected: int) -> str:
    """
    wrk counts 3xx as successes and cannot check bodies under load; but it counts the bytes it
    read. C{expected} is the size of the verified response (headers + body): when responses
    were on average more than 3% smaller, some were not the file (a login redirect, an error
    page), and the row must not be read as a success. Empty when the bytes add up.
    """
    if not result.requests:
        return ""
    average = result.bytes / result.requests
    if average < 0.97 * expected:
        return (f"responses averaged {average:.0f} bytes against {expected} for the checked "
                "one: some were not the file")
    return ""


def response_size(status: int, reason: str, headers: list[tuple[str, str]], body: int) -> int:
    """Bytes of an HTTP/1.1 response on the wire, from its parsed parts."""
    head = len(f"HTTP/1.1 {status} {reason}\r\n") + 2
    return head + sum(len(name) + len(value) + 4 for name, value in headers) + body


# --- the Hub -----------------------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are followed one by one by L{Browser} (cookies are taken from each hop)."""

    def redirect_request(self, *_args, **_kwargs):
        return None


class Browser:
    """alice's browser: a cookie jar, page-view headers, redirects followed by hand."""

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar),
            _NoRedirect())

    def _open(self, url: str, data: bytes | None = None) -> tuple[int, str, bytes]:
        request = urllib.request.Request(url, data=data, headers=BROWSER_HEADERS)
        try:
            with self._opener.open(request, timeout=30) as response:
                return response.status, "", response.read()
        except urllib.error.HTTPError as response:  # 3xx (not followed), 4xx, 5xx
            return response.code, response.headers.get("Location", ""), response.read()
        except OSError as error:
            raise TargetFailed(f"GET {url}: {error}") from None

    def get(self, path: str, data: dict | None = None, hops: int = 20) -> tuple[int, str]:
        """GET (or POST C{data} to) C{path}, following redirects; the final status and URL."""
        url = urllib.parse.urljoin(self.public_url, path)
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        for _ in range(hops):
            status, location, _content = self._open(url, body)
            if status not in (301, 302, 303, 307, 308):
                return status, url
            url, body = urllib.parse.urljoin(url, location), None
        raise TargetFailed(f"more than {hops} redirects from {path}")

    def login(self, user: str) -> None:
        """The Hub's login form (any password), landing on /hub/home: nothing spawned."""
        status, _url = self.get("/hub/login")
        xsrf = next((c.value for c in self.jar if c.name == "_xsrf"), None)
        if status != 200 or not xsrf:
            raise TargetFailed(f"the Hub's login page answered {status} (no _xsrf cookie)")
        status, url = self.get("/hub/login?next=%2Fhub%2Fhome",
                               {"username": user, "password": "bench", "_xsrf": xsrf})
        if status != 200 or not url.endswith("/hub/home"):
            raise TargetFailed(f"logging {user} in to the Hub ended with {status} at {url}")


class Hub:
    """A JupyterHub with its CHP on loopback ports, alice's servers, and her browser."""

    def __init__(self, backend_port: int, echo_port: int) -> None:
        self.backend_port, self.echo_port = backend_port, echo_port
        self.public_port, self.hub_port = free_port(), free_port()
        self.proxy_api_port = free_port()
        self.api_url = f"http://{LOOPBACK}:{self.hub_port}/hub/api"
        self.token = secrets.token_hex(24)  # the `bench` service: admin of users and servers
        self.proxy_token = secrets.token_hex(24)  # CONFIGPROXY_AUTH_TOKEN
        self.browser = Browser(f"http://{LOOPBACK}:{self.public_port}")
        self.proc: Proc | None = None
        self.version = ""
        self.browser_headers: dict[str, str] = {}  # see _browser_headers

    # -- REST APIs --

    def _call(self, url: str, method: str, token: str, body: dict | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"token {token}", "Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            raise TargetFailed(f"{method} {url}: {error.code} "
                               f"{error.read()[:200].decode(errors='replace')}") from None
        except OSError as error:
            raise TargetFailed(f"{method} {url}: {error}") from None
        return json.loads(text) if text.strip() else None

    def api(self, method: str, path: str, body: dict | None = None) -> object:
        """The Hub's REST API as the C{bench} service."""
        return self._call(self.api_url + path, method, self.token, body)

    def proxy_api(self, method: str, path: str, body: dict | None = None) -> object:
        """CHP's REST API, with the token the Hub gave it."""
        return self._call(f"http://{LOOPBACK}:{self.proxy_api_port}/api{path}", method,
                          self.proxy_token, body)

    # -- start and stop --

    def write_config(self) -> Path:
        bin_dir = install.ensure_hub()
        chp = install.ensure_chp()
        hubtwist_argv, hubtwist_env = hubtwist_command()
        apps = RUN_DIR / "alice-hubtwist.toml"
        apps.write_text(f"""\
# Generated by bench/harness/hub_mode.py: alice's hubtwist, in front of the running backends.
default_server = "nginx"  # /user/alice/1k.bin -> the backend's /1k.bin

[servers.nginx]
port = {self.backend_port}

[servers.echo]  # /user/alice/echo/ -> the WebSocket echo backend
port = {self.echo_port}
""")
        run = str(RUN_DIR)
        config = RUN_DIR / "jupyterhub_config.py"
        config.write_text(f"""\
# Generated by bench/harness/hub_mode.py for `bench/run hub`; rewritten on every run.
c = get_config()  # noqa
run = {run!r}
c.JupyterHub.ip = "{LOOPBACK}"
c.JupyterHub.port = {self.public_port}
c.JupyterHub.hub_ip = "{LOOPBACK}"
c.JupyterHub.hub_port = {self.hub_port}
c.ConfigurableHTTPProxy.api_url = "http://{LOOPBACK}:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{str(chp)!r}]
c.ConfigurableHTTPProxy.auth_token = {self.proxy_token!r}
c.ConfigurableHTTPProxy.pid_file = run + "/chp.pid"
c.JupyterHub.pid_file = run + "/hub.pid"
c.JupyterHub.db_url = "sqlite:///" + run + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = run + "/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = run + "/home/{{username}}"
c.JupyterHub.allow_named_servers = True
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 60
# The Hub's route check (which also polls CHP for activity) stays out of the measurements.
c.JupyterHub.last_activity_interval = 3600
c.JupyterHub.services = [{{"name": "bench", "api_token": {self.token!r}}}]
c.JupyterHub.load_roles = [{{"name": "bench", "services": ["bench"], "scopes": [
    "admin:users", "admin:servers", "admin:server_state", "list:users", "read:users",
    "read:servers"]}}]

HUBTWIST = {json.dumps([*hubtwist_argv, "--allow-root", "--config", str(apps)])}
HUBTWIST_ENV = {json.dumps(hubtwist_env)}
HUBTWIST_CWD = {str(hubtwist_repo())!r}
# jupyter_server refuses to run as root without --allow-root (the bench runs as root).
SINGLEUSER = {json.dumps([str(bin_dir / "jupyterhub-singleuser"), "--allow-root"])}


def pre_spawn_hook(spawner):
    # alice's default server is hubtwist; her named server "{JSP_SERVER}" is jupyter-server-proxy
    # in jupyterhub-singleuser, the way Hub users run it today.
    if spawner.name == "{JSP_SERVER}":
        spawner.cmd = SINGLEUSER
    else:
        spawner.cmd = HUBTWIST
        spawner.environment = {{**spawner.environment, **HUBTWIST_ENV}}
        spawner.cwd = HUBTWIST_CWD


c.Spawner.pre_spawn_hook = pre_spawn_hook
""")
        (RUN_DIR / "home" / USER).mkdir(parents=True, exist_ok=True)
        return config

    def start(self) -> None:
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        RUN_DIR.mkdir(parents=True)
        config = self.write_config()
        env = {key: value for key, value in child_env().items()
               if not key.startswith(("JUPYTERHUB_", "JPY_", "HUBTWIST_"))}
        self.proc = HubProc(self, [str(install.HUB_VENV / "bin" / "jupyterhub"), "-f",
                                   str(config)], env=env, cwd=RUN_DIR)
        deadline = time.monotonic() + HUB_TIMEOUT
        while True:
            if self.proc.popen.poll() is not None:
                raise TargetFailed(f"JupyterHub exited with status {self.proc.popen.returncode}:"
                                   f" {self.proc.tail()}")
            try:
                self.version = self.api("GET", "/")["version"]
                break
            except TargetFailed:
                if time.monotonic() > deadline:
                    raise TargetFailed(f"JupyterHub did not answer within {HUB_TIMEOUT:g}s: "
                                       f"{self.proc.tail()}") from None
                time.sleep(0.3)
        self.proc.wait_for_port(self.public_port, HUB_TIMEOUT)
        # CHP keeps the path: the backend serves DIRECT_ROUTE as its root (a symlink in WWW).
        self.proxy_api("POST", "/routes" + DIRECT_ROUTE,
                       {"target": f"http://{LOOPBACK}:{self.backend_port}"})
        self.proxy_api("POST", "/routes" + WS_ROUTE,
                       {"target": f"http://{LOOPBACK}:{self.echo_port}"})
        self.browser.login(USER)
        self.browser_headers = self._browser_headers()
        log(f"JupyterHub {self.version} up: public (CHP) port {self.public_port}, "
            f"{USER} logged in")

    def _browser_headers(self) -> dict[str, str]:
        """
        What alice's browser sends to her default server once logged in to it (its Cookie
        header and User-Agent), for the rows that have no login of their own (the backend
        direct, hubtwist --no-auth, CHP straight to a backend): every row then parses and
        forwards a request of the same size. Her default server is spawned and logged in
        to for this, then stopped (its row spawns it again).
        """
        server = self.spawn("", "/1k.bin")
        try:
            return cookie_headers(self.browser.jar, f"{self.browser.public_url}{server.prefix}/x")
        finally:
            server.stop()

    def chp_pid(self) -> int:
        """The Hub's CHP (a node process), from the pid file the Hub writes."""
        try:
            return int((RUN_DIR / "chp.pid").read_text())
        except (OSError, ValueError) as error:
            raise TargetFailed(f"no pid of the Hub's configurable-http-proxy ({error})") from None

    def markers(self) -> tuple[bytes, ...]:
        """Strings in the command line or environment of every process this Hub started."""
        return (str(RUN_DIR).encode(), f"{LOOPBACK}:{self.hub_port}/hub/api".encode(),
                self.proxy_token.encode())

    # -- alice's servers --

    def spawn(self, server: str, page: str) -> "HubServer":
        """Start alice's C{server} ("" = default) through the Hub's API, wait until it is
        ready, log in to it by getting C{page} (a path under the server's prefix that needs
        a login) through the OAuth redirects, and find its port and process."""
        suffix = f"/servers/{server}" if server else "/server"
        self.api("POST", f"/users/{USER}{suffix}")
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while True:
            model = self.api("GET", f"/users/{USER}")["servers"].get(server) or {}
            if model.get("ready"):
                break
            if not model or model.get("stopped") or time.monotonic() > deadline:
                raise TargetFailed(f"{USER}'s server {server or '(default)'} did not start: "
                                   f"{self.proc.tail() if self.proc else ''}")
            time.sleep(0.2)
        pid = (model.get("state") or {}).get("pid")
        prefix = f"/user/{USER}/" + (f"{server}/" if server else "")
        route = self.proxy_api("GET", "/routes").get(prefix.rstrip("/"), {})
        port = urllib.parse.urlsplit(route.get("target", "")).port
        if not pid or not port:
            raise TargetFailed(f"no pid ({pid}) or CHP route ({route}) for {prefix}")
        # The OAuth dance sets the server's own cookie (named after its OAuth client).
        status, url = self.browser.get(prefix + page.lstrip("/"))
        cookie = f"jupyterhub-user-{USER}" + (f"-{server}" if server else "")
        has_cookie = any(jar_cookie.name == cookie for jar_cookie in self.browser.jar)
        if status != 200 or not has_cookie:
            raise TargetFailed(f"the OAuth login to {prefix} ended with {status} at {url}"
                               + ("" if has_cookie else f", without a {cookie} cookie"))
        return HubServer(self, server, pid, port, prefix.rstrip("/"))


class HubProc(Proc):
    """The Hub process. Stopping it lets the Hub stop alice's servers and CHP (SIGTERM, a
    longer grace), then kills anything of this Hub's left over, found by its markers."""

    def __init__(self, hub: Hub, argv: list[str], **kwargs) -> None:
        self.hub = hub
        super().__init__("jupyterhub", argv, **kwargs)

    def stop(self, grace: float = 30.0) -> None:
        super().stop(grace)
        kill_marked(self.hub.markers())


def kill_marked(markers: tuple[bytes, ...]) -> None:
    """SIGKILL every process (but this one) whose command line or environment holds one of
    C{markers}: servers or a CHP left behind by a Hub that did not stop them."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline, \
                    open(f"/proc/{entry.name}/environ", "rb") as environ:
                text = cmdline.read() + environ.read()
        except OSError:
            continue
        if any(marker in text for marker in markers):
            command = text.split(b"\0")[0].decode(errors="replace")
            log(f"killing left-over process {entry.name}: {command}")
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


class HubServer:
    """
    One of alice's running servers, spawned by the Hub (not by the harness), standing in for
    a L{Proc} where the runner needs one: its pid, whether it has exited, and C{stop()}, which
    asks the Hub to stop it and waits until its process is gone.
    """

    def __init__(self, hub: Hub, server: str, pid: int, port: int, prefix: str) -> None:
        self.hub, self.server, self.pid, self.port, self.prefix = hub, server, pid, port, prefix
        self.returncode: int | None = None
        self.popen = self  # the runner reads proc.popen.poll() / .returncode

    def poll(self) -> int | None:
        return None if os.path.exists(f"/proc/{self.pid}") else -1

    def stop(self) -> None:
        suffix = f"/servers/{self.server}" if self.server else "/server"
        try:
            self.hub.api("DELETE", f"/users/{USER}{suffix}")
        except TargetFailed as error:
            log(f"stopping {USER}'s server {self.server or '(default)'}: {error}")
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.poll() is None:
            for pid in reversed(process_tree(self.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


class Adopted:
    """A process the harness neither started nor stops (the Hub's CHP), for the runner."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.popen = self

    def poll(self) -> int | None:
        return None if os.path.exists(f"/proc/{self.pid}") else -1

    def stop(self) -> None:
        pass


# --- the rows ----------------------------------------------------------------------------------

@dataclass
class HubRunning(Running):
    """A row's target: where wrk sends requests (port + prefix), with which headers, and the
    CHP process when the requests go through it. C{proc} is the server measured (the
    single-user server, or CHP when there is none)."""

    kind: str = "http"  # or "ws"
    headers: dict[str, str] = field(default_factory=dict)
    chp: int | None = None  # pid of the Hub's CHP, when the row goes through it
    guarded: bool = False  # refuses requests without the cookie (checked before the load)


@dataclass
class RowSpec:
    """How to bring up one row: which of alice's servers, reached how."""

    key: str
    label: str
    kind: str  # "http" or "ws"
    server: str | None  # alice's server ("" = default, hubtwist), None: no single-user server
    through_chp: bool


# Pairs whose servers run pinned to one CPU, wrk and nginx on the other (HubMode._pin):
# the hubtwist pair measures hubtwist alone; the chain pairs need both CPUs (CHP and
# hubtwist in one process chain) and are not pinned.
PINNED_PAIRS = {"hubtwist-hub"}

ROWS = [
    RowSpec("direct", "nginx backend, direct", "http", None, False),
    RowSpec("hubtwist-hub", "hubtwist, Hub cookie (its port)", "http", "", False),
    RowSpec("hubtwist-noauth", "hubtwist standalone --no-auth", "http", None, False),
    RowSpec("singleuser-jsp", "singleuser + jsp, Hub cookie (its port)", "http", JSP_SERVER,
            False),
    RowSpec("chp-hubtwist", "CHP → hubtwist → nginx", "http", "", True),
    RowSpec("chp-singleuser", "CHP → singleuser + jsp → nginx", "http", JSP_SERVER, True),
    RowSpec("chp-direct", "CHP → nginx", "http", None, True),
    RowSpec("ws-chp-hubtwist", "CHP → hubtwist → echo", "ws", "", True),
    RowSpec("ws-chp-direct", "CHP → echo", "ws", None, True),
]


class HubMode(Mode):
    """A real JupyterHub; nginx static (HTTP) and Node echo (WebSocket) backends."""

    name = "hub"
    peer_keys = tuple(spec.key for spec in ROWS)
    # The rows whose ratio is a target, each measured together with its partner: both up,
    # their 1 KB loads in interleaved windows (load_pair).
    pairs = {"hubtwist-hub": "hubtwist-noauth", "chp-hubtwist": "chp-direct"}
    http_columns = [
        Column("rps", "1 KB req/s"),
        Column("p50", "p50 (ms)", "{:.2f}"),
        Column("p99", "p99 (ms)", "{:.2f}"),
        Column("cpu_server", "server CPU (µs/req)"),
        Column("cpu_chp", "CHP CPU (µs/req)"),
    ]
    ws_columns = [
        Column("msgs", "64 B msg/s"),
        Column("p50", "p50 (ms)", "{:.2f}"),
        Column("p99", "p99 (ms)", "{:.2f}"),
        Column("cpu_server", "server CPU (µs/msg)"),
        Column("cpu_chp", "CHP CPU (µs/msg)"),
        Column("bulk", "1 MiB MiB/s"),
        Column("cpu_server_mib", "server CPU (ms/MiB)", "{:.2f}"),
        Column("cpu_chp_mib", "CHP CPU (ms/MiB)", "{:.2f}"),
    ]
    columns = http_columns

    def __init__(self, load: HubLoad) -> None:
        self.load_settings = load
        self.digests: dict[str, str] = {}
        self.hub: Hub | None = None
        self.expected_size: dict[str, int] = {}  # row key -> bytes of the checked response
        self.backend_pid = 0  # nginx's master (start_backend)

    # -- backends and the Hub --

    def start_backend(self) -> Running:
        self.digests = make_files()
        direct = WWW / DIRECT_ROUTE.lstrip("/")
        if not direct.is_symlink():
            direct.symlink_to(".")  # CHP keeps the route's path: /bench-direct/1k.bin
        backend = start_nginx_static(free_port(), WWW)
        echo_port = free_port()
        echo = Proc("ws-backend", ["node", str(WS_DIR / "echo-server.js"), str(echo_port)],
                    env=_node_env())
        echo.wait_for_port(echo_port, START_TIMEOUT)
        self.hub = Hub(backend.port, echo_port)
        self.hub.start()
        self.backend_pid = backend.proc.pid
        return backend

    def peers(self, backend: Running) -> list[Peer]:
        return [Peer(spec.key, spec.label, self._starter(spec, backend),
                     self._versioner(spec)) for spec in ROWS]

    def _starter(self, spec: RowSpec, backend: Running) -> Callable[[int], Running]:
        def start(backend_port: int) -> Running:
            hub = self.hub
            assert hub is not None
            # Rows without a login of their own send what alice's browser sends to her
            # default server: every row parses and forwards a request of the same size.
            if spec.key == "direct":
                return HubRunning(backend.proc, backend.port, owned=False,
                                  headers=hub.browser_headers)
            if spec.key == "hubtwist-noauth":
                plain = start_hubtwist(backend_port)
                return HubRunning(plain.proc, plain.port, headers=hub.browser_headers)
            chp = hub.chp_pid() if spec.through_chp else None
            if spec.server is None:  # CHP straight to a backend: CHP is the process measured
                prefix = WS_ROUTE if spec.kind == "ws" else DIRECT_ROUTE
                return HubRunning(Adopted(hub.chp_pid()), hub.public_port, prefix=prefix,
                                  owned=False, whole_tree=False, kind=spec.kind, chp=chp,
                                  headers=hub.browser_headers)
            # Where the row's requests go, under the server's prefix.
            under = (f"/proxy/{backend_port}" if spec.server == JSP_SERVER else
                     "/echo" if spec.kind == "ws" else "")
            server = hub.spawn(spec.server, under + "/1k.bin" if spec.kind == "http" else
                               under + "/")
            log(f"{spec.key}: {USER}'s server {spec.server or '(default)'} is pid "
                f"{server.pid} on port {server.port}")
            prefix = server.prefix + under
            port = hub.public_port if spec.through_chp else server.port
            # jsp: its own python process only (as in the http mode)
            return HubRunning(server, port, prefix=prefix, kind=spec.kind, chp=chp,
                              whole_tree=spec.server != JSP_SERVER,
                              headers=self._cookies(hub, prefix), guarded=True)
        return start

    @staticmethod
    def _cookies(hub: Hub, prefix: str) -> dict[str, str]:
        """alice's cookies for C{prefix} and her User-Agent, as her browser sends them."""
        return cookie_headers(hub.browser.jar, f"{hub.browser.public_url}{prefix}/x")

    def _versioner(self, spec: RowSpec) -> Callable[[], str]:
        def version() -> str:
            parts = []
            if spec.key == "direct":
                return nginx_version()
            if spec.through_chp:
                parts.append(chp_version())
            if spec.server == "" or spec.key == "hubtwist-noauth":
                parts.append(hubtwist_version())
            if spec.server == JSP_SERVER:
                parts.append(singleuser_version())
            if spec.server is not None:
                parts.append(f"JupyterHub {self.hub.version if self.hub else '?'}")
            return "; ".join(parts)
        return version

    # -- checks --

    def _expect(self, running: HubRunning, key: str, headers: dict[str, str]) -> int:
        """GET the 1 KB file through the row; its response size on the wire when it is the
        file, else L{TargetFailed}."""
        import http.client

        path = running.prefix + "/1k.bin"
        connection = http.client.HTTPConnection(LOOPBACK, running.port, timeout=30)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise TargetFailed(f"GET {path}: {type(error).__name__}: {error}") from None
        finally:
            connection.close()
        size = FILES["/1k.bin"]
        if response.status != 200 or len(body) != size:
            excerpt = body[:80].decode("utf-8", "replace").strip()
            where = response.getheader("location", "")
            raise TargetFailed(f"GET {path}: status {response.status} with {len(body)} bytes "
                               f"(expected 200 with {size}) {where} {excerpt!r}")
        if hashlib.sha256(body).hexdigest() != self.digests["/1k.bin"]:
            raise TargetFailed(f"GET {path}: the body differs from the file")
        return response_size(response.status, response.reason, response.getheaders(),
                             len(body))

    def first_request(self, running: Running, key: str) -> None:
        assert isinstance(running, HubRunning)
        if running.kind == "ws":
            run_client(f"ws-{key}-check", self._ws_url(running), 1, self.load_settings.size,
                       0.2, headers=running.headers)
            return
        self.expected_size[key] = self._expect(running, key, running.headers)

    def check(self, running: Running, key: str) -> None:
        assert isinstance(running, HubRunning)
        if running.guarded and running.kind == "http":
            # The cookie is what lets the requests in: without it, no file.
            status, body = get(running.port, running.prefix + "/1k.bin")
            if status == 200 and hashlib.sha256(body).hexdigest() == self.digests["/1k.bin"]:
                raise TargetFailed("serves the file without the login cookie: not Hub mode")
        if running.kind == "ws":
            run_client(f"ws-{key}-check-bulk", self._ws_url(running), 1,
                       self.load_settings.bulk_size, 0.2, headers=running.headers)

    # -- loads --

    def load(self, running: Running, row: Row) -> None:
        assert isinstance(running, HubRunning)
        if running.kind == "ws":
            self._load_ws(running, row)
        else:
            self._load_http(running, row)

    def _hubtwist_paths(self, running: HubRunning, key: str) -> dict[str, float]:
        """hubtwist's hubtwist_requests_by_path_total (lean / ordinary), read from its own
        port, for the rows where hubtwist serves: which path the load took."""
        import http.client

        if key not in ("hubtwist-hub", "hubtwist-noauth", "chp-hubtwist"):
            return {}
        port = running.proc.port if isinstance(running.proc, HubServer) else running.port
        prefix = running.prefix if isinstance(running.proc, HubServer) else ""
        connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
        try:
            connection.request("GET", prefix + "/_hubtwist/metrics", headers=running.headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            return {}
        finally:
            connection.close()
        found = {}
        for line in text.splitlines():
            if line.startswith("hubtwist_requests_by_path_total{"):
                kind = line.split('path="', 1)[1].split('"', 1)[0]
                found[kind] = float(line.rsplit(" ", 1)[1])
        return found

    def _cpu(self, running: HubRunning) -> tuple[CpuTime, CpuTime | None]:
        server = CpuTime(running.proc.pid, running.whole_tree)
        chp = None
        if running.chp is not None and running.chp != running.proc.pid:
            chp = CpuTime(running.chp, whole_tree=False)
        return server, chp

    def _load_http(self, running: HubRunning, row: Row) -> None:
        self.load_pair([running], [row])

    def load_pair(self, runnings: list[Running], rows: list[Row]) -> None:
        """
        The 1 KB load of one row, or of a pair (L{pairs}) in interleaved windows: the
        duration cut into L{HubLoad.windows} windows per row, taken in the order A B B A
        A B ..., so that a machine whose speed drifts during the run (this one's moves by
        ±10 % within a minute) weighs on both rows alike. Each row's figures are its
        windows' sums (requests, seconds, CPU); p50/p99 are the request-weighted means of
        its windows' percentiles.
        """
        load = self.load_settings
        targets = [(running, row, row.peer.key) for running, row in zip(runnings, rows)]
        server_cpu = load_cpus = None
        if len(targets) > 1 and rows[0].peer.key in PINNED_PAIRS:
            server_cpu, load_cpus = self._pin([running for running, _, _ in targets])
        for running, row, key in targets:
            assert isinstance(running, HubRunning)
            if load.warmup > 0:
                run_wrk(f"wrk-{key}-warmup", self._url(running), load.threads,
                        load.connections, load.warmup, headers=running.headers,
                        cpus=load_cpus)
        windows = load.windows if len(targets) > 1 else 1
        seconds = load.duration / windows
        if len(targets) > 1:
            log(f"{' and '.join(key for _, _, key in targets)}: 1 KB, {windows} interleaved "
                f"windows of {seconds:g}s each")
        else:
            log(f"{targets[0][2]}: 1 KB for {load.duration:g}s")
        # A B, then B A, then A B...: each row's windows sit alike in time
        order = [target for window in range(windows)
                 for target in (targets if window % 2 == 0 else targets[::-1])]
        totals = {key: _Totals() for _, _, key in targets}
        paths_before = {key: self._hubtwist_paths(running, key) for running, _, key in targets}
        try:
            for number, (running, row, key) in enumerate(order):
                server, chp = self._cpu(running)
                with server, (chp or _Nothing()):
                    result = run_wrk(f"wrk-{key}-1k-{number}", self._url(running),
                                     load.threads, load.connections, seconds,
                                     headers=running.headers, cpus=load_cpus)
                totals[key].add(result, server.seconds,
                                chp.seconds if chp is not None else None)
        finally:
            if load_cpus is not None:
                _set_affinity(process_tree(self.backend_pid), os.sched_getaffinity(0))
        for running, row, key in targets:
            if load_cpus is not None:
                row.notes.append(f"server alone on CPU {server_cpu}, wrk and nginx on "
                                 f"CPU {','.join(map(str, sorted(load_cpus)))}")
            self._http_figures(running, row, totals[key], paths_before[key])

    def _pin(self, runnings: list[Running]) -> tuple[int | None, set[int] | None]:
        """
        The servers of a pinned pair on one CPU, the backend (and wrk, by the caller) on
        the others: both servers then run alone on the same core, whatever the scheduler
        would have placed next to them. Returns that CPU and the CPUs for the load, or
        (None, None) on a single CPU.
        """
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None, None
        server_cpu, load_cpus = cpus[-1], set(cpus[:-1])
        for running in runnings:
            _set_affinity(process_tree(running.proc.pid), {server_cpu})
        _set_affinity(process_tree(self.backend_pid), load_cpus)
        return server_cpu, load_cpus

    @staticmethod
    def _url(running: HubRunning) -> str:
        return f"http://{LOOPBACK}:{running.port}{running.prefix}/1k.bin"

    def _http_figures(self, running: HubRunning, row: Row, totals: "_Totals",
                      paths_before: dict[str, float]) -> None:
        key = row.peer.key
        paths_after = self._hubtwist_paths(running, key)
        if paths_before and paths_after:
            lean, ordinary = (paths_after[kind] - paths_before[kind]
                              for kind in ("lean", "ordinary"))
            if lean + ordinary:
                row.notes.append(f"lean path: {100 * lean / (lean + ordinary):.1f} % of "
                                 f"{int(lean + ordinary):,} requests")
        if totals.windows > 1:
            row.notes.append(f"{totals.windows} windows interleaved with its pair's")
        row.figures.update(rps=totals.good / totals.seconds, p50=totals.p50_ms(),
                           p99=totals.p99_ms())
        if totals.good:
            is_chp = running.chp == running.proc.pid
            row.figures["cpu_chp" if is_chp else "cpu_server"] = \
                1e6 * totals.server_cpu / totals.good
            if totals.chp_cpu is not None:
                row.figures["cpu_chp"] = 1e6 * totals.chp_cpu / totals.good
        if totals.problems:
            row.notes.append(f"1 KB: {', '.join(totals.problems)}")
        wrong = bytes_per_response_problem(totals.as_result(), self.expected_size.get(key, 0))
        if wrong:
            raise TargetFailed(wrong)

    def _load_ws(self, running: HubRunning, row: Row) -> None:
        load, key, url = self.load_settings, row.peer.key, self._ws_url(running)
        if load.warmup > 0:
            run_client(f"ws-{key}-warmup", url, load.ws_connections, load.size, load.warmup,
                       headers=running.headers)
        is_chp = running.chp == running.proc.pid
        log(f"{key}: {load.size} B ping-pong for {load.duration:g}s")
        server, chp = self._cpu(running)
        with server, (chp or _Nothing()):
            small = run_client(f"ws-{key}-small", url, load.ws_connections, load.size,
                               load.duration, headers=running.headers)
        row.figures.update(msgs=small.messages / small.seconds, p50=small.p50_ms,
                           p99=small.p99_ms)
        row.figures["cpu_chp" if is_chp else "cpu_server"] = 1e6 * server.seconds / small.messages
        if chp is not None:
            row.figures["cpu_chp"] = 1e6 * chp.seconds / small.messages
        if small.errors:
            row.notes.append(f"{load.size} B: {small.errors} errors")
        log(f"{key}: {load.bulk_size} B ping-pong for {load.bulk_duration:g}s")
        server, chp = self._cpu(running)
        try:
            with server, (chp or _Nothing()):
                bulk = run_client(f"ws-{key}-bulk", url, load.bulk_connections, load.bulk_size,
                                  load.bulk_duration, headers=running.headers)
        except TargetFailed as error:
            row.notes.append(f"1 MiB failed: {error}")
            return
        moved = mib(bulk.bytes)
        row.figures["bulk"] = moved / bulk.seconds
        row.figures["cpu_chp_mib" if is_chp else "cpu_server_mib"] = 1e3 * server.seconds / moved
        if chp is not None:
            row.figures["cpu_chp_mib"] = 1e3 * chp.seconds / moved
        if bulk.errors:
            row.notes.append(f"1 MiB: {bulk.errors} errors")

    @staticmethod
    def _ws_url(running: HubRunning) -> str:
        return f"ws://{LOOPBACK}:{running.port}{running.prefix}/"

    # -- report --

    def tables(self, rows: list[Row]) -> list[tuple[str, list[Column], list[Row]]]:
        kinds = {spec.key: spec.kind for spec in ROWS}
        return [
            ("HTTP, 1 KB", self.http_columns,
             [row for row in rows if kinds[row.peer.key] == "http"]),
            ("WebSocket", self.ws_columns,
             [row for row in rows if kinds[row.peer.key] == "ws"]),
        ]

    def settings(self) -> list[str]:
        load = self.load_settings
        return [
            f"1 KB: `wrk -t{load.threads} -c{load.connections} -d{load.duration:g}s --latency` "
            f"after a {load.warmup:g}s warm-up, every row with alice's `Cookie` header and "
            "User-Agent (rows without a login of their own — direct, --no-auth, CHP → backend "
            "— with what her browser sends to her default server, captured once at the start: "
            "every row parses and forwards a request of the same size); "
            "req/s counts 2xx/3xx only, so each row's response is first checked (200, size, "
            "SHA-256; cookie rows also refused without the cookie) and a run whose responses "
            "average more than 3% fewer bytes than the checked one fails",
            f"WebSocket: {load.ws_connections} connections x {load.size} B ping-pong for "
            f"{load.duration:g}s (after a {load.warmup:g}s warm-up), then "
            f"{load.bulk_connections} x {load.bulk_size} B for {load.bulk_duration:g}s; Node "
            "`ws` client and echo backend, the cookie on every handshake",
            "JupyterHub from `.scratch/hub-venv` (DummyAuthenticator, SimpleLocalProcessSpawner,"
            " loopback); alice logs in once through the Hub's form; after each spawn her "
            "browser (a cookie jar) follows the real OAuth redirects to the server, and the "
            "cookies it then holds for the server's path are what the load sends",
            f"{USER}'s default server: hubtwist (`Spawner.cmd`), backends as external servers "
            f"(`default_server`: `/user/{USER}/1k.bin` → nginx `/1k.bin`, "
            f"`/user/{USER}/echo/` → echo); her named server `{JSP_SERVER}`: "
            "`jupyterhub-singleuser --allow-root` with jupyter-server-proxy "
            f"(`/user/{USER}/{JSP_SERVER}/proxy/<nginx port>/1k.bin`); each spawned for its "
            "rows and stopped after them",
            "CHP rows: the Hub's own CHP (its public port), as users reach their servers. "
            f"CHP → backend goes through a route added to that same CHP with the Hub's "
            f"CONFIGPROXY_AUTH_TOKEN (`{DIRECT_ROUTE}`, `{WS_ROUTE}`), not a second CHP with "
            "`--default-target`: the same process, flags and routing table as the chain "
            f"rows (CHP keeps the path; nginx serves `{DIRECT_ROUTE}/` as its root)",
            "server CPU: the single-user server's process tree (hubtwist; jsp: the "
            "singleuser python only; CHP → backend rows: none); CHP CPU: the Hub's "
            "configurable-http-proxy node process, during the same load",
            rss_settings("the first checked request") + "; of the single-user server (CHP "
            "for the CHP → backend rows, nginx for the direct row)",
            CPU_SETTINGS,
        ]

    def ratios(self, rows: dict[str, Row]) -> list[str]:
        return [
            ratio(rows, "Hub cookie / standalone --no-auth, 1 KB req/s",
                  ("hubtwist-hub", "rps"), ("hubtwist-noauth", "rps"), "higher is better", 0.9),
            ratio(rows, "hubtwist / singleuser+jsp (both Hub cookie), 1 KB req/s",
                  ("hubtwist-hub", "rps"), ("singleuser-jsp", "rps"), "higher is better", 5),
            ratio(rows, "hubtwist p99 / singleuser+jsp p99", ("hubtwist-hub", "p99"),
                  ("singleuser-jsp", "p99"), "lower is better", 1),
            ratio(rows, "CHP → hubtwist / CHP → backend, 1 KB req/s", ("chp-hubtwist", "rps"),
                  ("chp-direct", "rps"), "higher is better", 0.8),
            ratio(rows, "CHP → hubtwist / CHP → singleuser+jsp, 1 KB req/s",
                  ("chp-hubtwist", "rps"), ("chp-singleuser", "rps"), "higher is better"),
            ratio(rows, "WebSocket 1 MiB: hubtwist CPU per MiB / CHP's (CHP → echo)",
                  ("ws-chp-hubtwist", "cpu_server_mib"), ("ws-chp-direct", "cpu_chp_mib"),
                  "lower is better", 0.67),
            ratio(rows, "CHP → hubtwist → echo / CHP → echo, 64 B msg/s",
                  ("ws-chp-hubtwist", "msgs"), ("ws-chp-direct", "msgs"), "higher is better"),
            ratio(rows, "Hub cookie / --no-auth, CPU per 1 KB request",
                  ("hubtwist-hub", "cpu_server"), ("hubtwist-noauth", "cpu_server"),
                  "lower is better"),
            ratio(rows, "hubtwist / CHP, CPU per 1 KB request in the chain",
                  ("chp-hubtwist", "cpu_server"), ("chp-hubtwist", "cpu_chp"),
                  "lower is better"),
        ]


def _set_affinity(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        for task in _tasks(pid):
            try:
                os.sched_setaffinity(task, cpus)
            except OSError:  # gone meanwhile
                pass


def _tasks(pid: int) -> list[int]:
    """Every thread of C{pid} (affinity is per thread)."""
    try:
        return [int(task) for task in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


class _Totals:
    """One row's 1 KB figures summed over its load windows (L{HubMode.load_pair})."""

    def __init__(self) -> None:
        self.windows = 0
        self.seconds = 0.0
        self.requests = self.good = self.bytes = 0
        self.status_errors = self.socket_errors = 0
        self.weighted_p50 = self.weighted_p99 = 0.0
        self.server_cpu = 0.0
        self.chp_cpu: float | None = None
        self.problems: list[str] = []

    def add(self, result: WrkResult, server_cpu: float, chp_cpu: float | None) -> None:
        self.windows += 1
        self.seconds += result.seconds
        self.requests += result.requests
        self.good += result.good_requests
        self.bytes += result.bytes
        self.status_errors += result.status_errors
        self.socket_errors += result.socket_errors
        self.weighted_p50 += result.p50_ms * result.requests
        self.weighted_p99 += result.p99_ms * result.requests
        self.server_cpu += server_cpu
        if chp_cpu is not None:
            self.chp_cpu = (self.chp_cpu or 0.0) + chp_cpu
        if result.problems():
            self.problems.append(result.problems())

    def p50_ms(self) -> float:
        return self.weighted_p50 / self.requests if self.requests else 0.0

    def p99_ms(self) -> float:
        return self.weighted_p99 / self.requests if self.requests else 0.0

    def as_result(self) -> WrkResult:
        return WrkResult(self.seconds, self.requests, self.bytes, self.status_errors,
                         self.socket_errors, self.p50_ms(), self.p99_ms())


class _Nothing:
    """A C{with} block that does nothing (no CHP to measure)."""

    def __enter__(self) -> "_Nothing":
        return self

    def __exit__(self, *_exc: object) -> None:
        pass


def chp_version() -> str:
    chp = install.CHP_PREFIX / "node_modules/.bin/configurable-http-proxy"
    return (f"configurable-http-proxy {command_output([str(chp), '--version'])} on Node "
            f"{command_output(['node', '--version'])} (the Hub's)")


def singleuser_version() -> str:
    python = install.HUB_VENV / "bin" / "python"
    return command_output([str(python), "-c", (
        "from importlib.metadata import version as v; print('jupyter_server', "
        "v('jupyter_server'), '/ jupyter-server-proxy', v('jupyter-server-proxy'), "
        "'/ tornado', v('tornado'))")])
