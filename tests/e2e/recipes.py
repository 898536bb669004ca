"""
Support for the recipe tests (docs/recipes.md): the real apps from PyPI, installed by
`bash tests/setup` into their own virtual environment (tests/.recipes-venv, so that their
dependencies do not clash with the test environment's), a hubtwist process that finds them
on its PATH, and the apps' own protocols spoken as a browser would: the Jupyter messaging
protocol over a kernel's channels WebSocket, Bokeh's document WebSocket, Streamlit's stream.

Every wait is bounded; every process started here, and every process those started (the
apps' kernels too, which Jupyter puts in sessions of their own), is found by a marker in
its environment and killed at the end.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests
from websockets.sync.client import connect

from tests.helpers import alive, descendants, free_port
from tests.helpers import wait_until  # noqa: F401 (used here and by importers)

REPO = pathlib.Path(__file__).resolve().parents[2]
VENV = REPO / "tests" / ".recipes-venv"
RECIPES = REPO / "conf" / "recipes"
HUBTWIST = [sys.executable, "-m", "hubtwist"]
APP_COMMANDS = ("jupyter-lab", "streamlit", "bokeh", "panel", "voila", "uvicorn", "gunicorn")
SETUP_HINT = "run `bash tests/setup` (it installs the recipes' apps into tests/.recipes-venv)"
MARKER = "HUBTWIST_RECIPES_RUN"


def require_apps() -> None:
    """Fail (never skip) when the apps are not installed."""
    missing = [name for name in APP_COMMANDS if not (VENV / "bin" / name).exists()]
    if missing:
        pytest.fail(f"the recipes' apps are not installed ({', '.join(missing)} missing from "
                    f"{VENV / 'bin'}): {SETUP_HINT}", pytrace=False)


def app_environment(root: pathlib.Path, marker: str) -> dict:
    """
    The environment of a hubtwist that runs the recipes: the apps' virtual environment first
    on PATH (hubtwist finds `jupyter-lab`, `streamlit` ... there, as an admin's PATH would),
    a HOME and Jupyter directories of the test's own (no user configuration leaks in), and
    Jupyter allowed to run as root, as the tests do in CI's container — in a configuration
    file, so that the recipes' command lines stay exactly those of the docs.
    """
    home = root / "home"
    config = root / "jupyter-config"
    config.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"allow_root": True}}))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTERHUB_", "JPY_", "HUBTWIST_", "JUPYTER_", "VIRTUAL_ENV"))}
    env.update({
        "PATH": os.pathsep.join([str(VENV / "bin"), env.get("PATH", os.defpath)]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(root / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
        "MPLCONFIGDIR": str(root / "mpl"),
        MARKER: marker,
    })
    return env


def marked_processes(marker: str) -> set[int]:
    """Live processes whose environment carries C{marker} (inherited from hubtwist)."""
    needle = f"{MARKER}={marker}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if needle in environ.read().split(b"\0") and alive(int(entry)):
                        found.add(int(entry))
            except OSError:
                continue
    return found


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass



class Hubtwist:
    """One standalone hubtwist (token-protected, on loopback) running the recipes."""

    def __init__(self, root: pathlib.Path, args: list[str], *, cwd: pathlib.Path = RECIPES) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.marker = secrets.token_hex(8)
        self.log_path = root / "hubtwist.log"
        env = app_environment(root, self.marker)
        env["HUBTWIST_TOKEN"] = self.token  # not --token: it would show in `ps`
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [*HUBTWIST, "--allow-root", "--port", str(self.port), *args], cwd=cwd, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"

    @property
    def auth(self) -> dict:
        return {"Authorization": f"token {self.token}"}

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_listening(self, own_api: str) -> None:
        def answers():
            assert self.process.poll() is None, f"hubtwist exited:\n{self.log_tail()}"
            try:
                return self.session.get(self.url + own_api, timeout=2).status_code == 200
            except requests.RequestException:
                return False
        wait_until(answers, 30, f"hubtwist at {self.url}{own_api}")

    def get(self, path: str, timeout: float = 90, **kwargs) -> requests.Response:
        """GET through hubtwist; a lazily started app is waited for (hubtwist holds the
        request while the app starts), so the timeout covers the app's start-up."""
        return self.session.get(self.url + path, timeout=timeout, **kwargs)

    def app_pid(self, status_url: str) -> int | None:
        return self.get(status_url, timeout=10).json()["pid"]

    def kill_app_and_check_restart(self, status_url: str, good_path: str,
                                   check=lambda response: True, timeout: float = 90) -> float:
        """`kill -9` the app's whole process group, then poll C{good_path} until a good
        answer from a new process; return the seconds that took."""
        pid = self.app_pid(status_url)
        assert pid, self.get(status_url, timeout=10).text
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        started = time.monotonic()

        def good():
            try:
                left = timeout - (time.monotonic() - started)
                response = self.get(good_path, timeout=max(1.0, left))
            except requests.RequestException:
                return False
            return response.status_code == 200 and check(response) and response

        wait_until(good, timeout, f"a good answer at {good_path} after kill -9\n{self.log_tail()}",
                   interval=0.2)
        new_pid = self.app_pid(status_url)
        assert new_pid and new_pid != pid, (pid, new_pid)
        return time.monotonic() - started

    def stop(self) -> None:
        tree = descendants(self.process.pid) | marked_processes(self.marker)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in tree):
            time.sleep(0.1)
        kill_all(tree | marked_processes(self.marker))
        self.session.close()


# -- page checks ------------------------------------------------------------------------


def static_asset(page: str, pattern: str) -> str:
    """The first URL in C{page}'s C{src}/C{href} attributes matching C{pattern}."""
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        if re.search(pattern, url):
            return url
    raise AssertionError(f"no asset matching {pattern!r} in the page: {page[:2000]}")


# -- the Jupyter messaging protocol over a kernel's channels WebSocket ------------------


def jupyter_message(msg_type: str, content: dict, session: str) -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "recipes",
                   "session": session, "version": "5.3",
                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
        "parent_header": {}, "metadata": {}, "content": content, "channel": "shell",
        "buffers": [],
    }


def jupyter_exchange(ws_url: str, headers: dict, msg_type: str, content: dict,
                     timeout: float = 60) -> list[dict]:
    """Send one shell request over a kernel's channels socket (the JSON protocol, which
    jupyter_server speaks when no binary subprotocol is asked for) and return the replies
    to it, up to both its shell reply and the kernel's C{idle} status."""
    session = uuid.uuid4().hex
    request = jupyter_message(msg_type, content, session)
    replies = []
    separator = "&" if "?" in ws_url else "?"
    with connect(f"{ws_url}{separator}session_id={session}", additional_headers=headers,
                 open_timeout=30, close_timeout=5, max_size=None) as ws:
        ws.send(json.dumps(request))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no idle status for {msg_type} within {timeout} s: {replies}"
            reply = json.loads(ws.recv(timeout=remaining))
            if reply.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                continue
            replies.append(reply)
            # The shell reply and iopub's idle come on different ZeroMQ sockets: either order.
            if any(r["channel"] == "shell" for r in replies) and any(
                    r["msg_type"] == "status" and r["content"]["execution_state"] == "idle"
                    for r in replies):
                return replies


def evaluate(ws_url: str, headers: dict, code: str) -> str:
    """C{code}'s C{execute_result} (text/plain) from the kernel behind C{ws_url}."""
    replies = jupyter_exchange(ws_url, headers, "execute_request", {
        "code": code, "silent": False, "store_history": False, "user_expressions": {},
        "allow_stdin": False, "stop_on_error": True})
    results = [r["content"]["data"]["text/plain"] for r in replies
               if r["msg_type"] == "execute_result"]
    shell = [r for r in replies if r["channel"] == "shell"]
    assert shell and shell[0]["content"]["status"] == "ok", replies
    assert results, replies
    return results[0]


def jupyter_kernel_round_trip(http: requests.Session, base: str, ws_base: str,
                              headers: dict) -> None:
    """Create a kernel with Jupyter's REST API at C{base} (C{http} carrying hubtwist's
    token: a script, with no XSRF token), evaluate C{1+1} over its channels WebSocket,
    delete it."""
    created = http.post(base + "api/kernels", json={"name": "python3"}, timeout=60)
    assert created.status_code == 201, (created.status_code, created.text[:500])
    kernel = created.json()["id"]
    try:
        assert evaluate(f"{ws_base}api/kernels/{kernel}/channels", headers, "1+1") == "2"
    finally:
        deleted = http.delete(f"{base}api/kernels/{kernel}", timeout=30)
        assert deleted.status_code == 204, (deleted.status_code, deleted.text[:300])
