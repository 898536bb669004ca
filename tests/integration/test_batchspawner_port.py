"""
hubtwist under batchspawner without its wrapper, as a job runs it: JUPYTERHUB_SERVICE_URL
with port 0, so hubtwist listens on a free port and POSTs it to a fake Hub's batchspawner
API (a real subprocess, real sockets); a Hub without that API makes it exit with one sentence.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import HTTPAPP, try_get, wait_for

HUBTWIST = [sys.executable, "-m", "hubtwist"]
TOKEN = "server-token"


class _FakeHubHandler(BaseHTTPRequestHandler):
    """The Hub's version, and POST /hub/api/batchspawner when C{server.batchspawner}."""

    def log_message(self, *args) -> None:
        pass

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code == 200:
            self.send_header("X-JupyterHub-Version", "6.1.1")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/hub/api/":
            self._answer(200, {"version": "6.1.1"})
        else:
            self._answer(404, {"status": 404, "message": "Not Found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/hub/api/batchspawner" and self.server.batchspawner:
            if self.headers.get("Authorization") != f"token {TOKEN}":
                return self._answer(403, {"status": 403, "message": "Forbidden"})
            self.server.reports.append(json.loads(body))
            return self._answer(200, {"message": "BatchSpawner data configured"})
        if self.path.endswith("/activity"):
            return self._answer(200, {})
        self._answer(404, {"status": 404, "message": "Not Found"})


@pytest.fixture
def fake_hub(request):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHubHandler)
    server.batchspawner = getattr(request, "param", True)
    server.reports = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.api_url = f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def _job_environment(api_url: str) -> dict:
    """What JupyterHub 6 gives a batchspawner job (JUPYTERHUB_SERVICE_URL with port 0)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTERHUB_", "JPY_", "HUBTWIST_")) or k == "HUBTWIST_ALLOW_ROOT"}
    env.update({
        "JUPYTERHUB_API_URL": api_url,
        "JUPYTERHUB_API_TOKEN": TOKEN,
        "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice",
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:0/user/alice/",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/alice/oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:servers!server=alice/"]',
    })
    return env


def test_the_port_left_to_the_server_is_reported_and_served(fake_hub):
    process = subprocess.Popen([*HUBTWIST, "--", *HTTPAPP, "--port", "{port}"],
                               env=_job_environment(fake_hub.api_url),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: fake_hub.reports or process.poll() is not None, 30, "the port report")
        assert process.poll() is None, process.communicate(timeout=10)[0]
        [report] = fake_hub.reports
        port = report["port"]
        assert isinstance(port, int) and port > 0
        # The Hub reaches the server there: hubtwist's own API answers without credentials.
        answer = wait_for(lambda: try_get(f"http://127.0.0.1:{port}/user/alice/_hubtwist/api"),
                          10, "hubtwist on the reported port")
        assert answer[0] == 200 and b"version" in answer[1]
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert f"listens on port {port}" in output
    assert TOKEN not in output


def test_the_wrapper_port_is_not_reported_again(fake_hub):
    # Behind batchspawner-singleuser the URL names the port it reported itself.
    from tests.helpers import free_port

    port = free_port()
    env = {**_job_environment(fake_hub.api_url),
           "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/alice/"}
    process = subprocess.Popen([*HUBTWIST, "--", *HTTPAPP, "--port", "{port}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: try_get(f"http://127.0.0.1:{port}/user/alice/_hubtwist/api")
                 or process.poll() is not None, 30, "hubtwist on the wrapper's port")
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert fake_hub.reports == []


@pytest.mark.parametrize("fake_hub", [False], indirect=True)
def test_a_hub_without_the_batchspawner_api_ends_the_server_with_one_sentence(fake_hub):
    result = subprocess.run([*HUBTWIST, "--", *HTTPAPP, "--port", "{port}"],
                            env=_job_environment(fake_hub.api_url), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "could not tell the Hub the port" in result.stderr
    assert "no batchspawner API" in result.stderr and "Traceback" not in result.stderr
