"""
Fixtures for C{hubtwist chp}: the command as a real subprocess (CHP's command line), and
echo targets like those of configurable-http-proxy's own test suite (each answers with
JSON: the request's url and headers and the target's name). Every wait is bounded; every
process and server is stopped at the end.
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
import requests
from tests.helpers import free_port, wait_until  # noqa: F401 (used here and by importers)

TOKEN = "secret"




class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        server = self.server
        if "go-away" in self.path:
            self.send_response(301)
            self.send_header("Location", server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        reply = json.dumps({
            "name": server.name, "url": self.path, "method": self.command,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body": body.decode("latin-1"),
        }).encode()
        status = 200
        if "/status/" in self.path:
            status = int(self.path.split("/status/")[1].split("?")[0])
        self.send_response(status)
        self.send_header("Content-Type", server.content_type)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


class EchoServer:
    """A threaded HTTP/1.1 echo target on a free loopback port."""

    def __init__(self, name: str = "default", content_type: str = "application/json",
                 redirect_to: str = "") -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        self.httpd.daemon_threads = True
        self.httpd.name = name
        self.httpd.content_type = content_type
        self.httpd.redirect_to = redirect_to
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Chp:
    """A running C{hubtwist chp}: its public URL, its API, its output."""

    def __init__(self, args: list[str], env: dict | None = None, token: str = TOKEN) -> None:
        self.token = token
        environment = dict(os.environ, **(env or {}))
        if token:
            environment["CONFIGPROXY_AUTH_TOKEN"] = token
        else:
            environment.pop("CONFIGPROXY_AUTH_TOKEN", None)
        for attempt in range(3):
            # A port found free may be taken by another process before chp binds it:
            # then, and only then, try again with new ones.
            self.port = free_port()
            self.api_port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.api_url = f"http://127.0.0.1:{self.api_port}"
            self.command = [sys.executable, "-m", "hubtwist", "chp", "--ip", "127.0.0.1",
                            "--port", str(self.port), "--api-ip", "127.0.0.1",
                            "--api-port", str(self.api_port), *args]
            self.process = subprocess.Popen(self.command, env=environment,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.lines: list[str] = []
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
            try:
                wait_until(self._ready, 30, "hubtwist chp to listen")
                return
            except AssertionError as error:
                if attempt == 2 or "Address already in use" not in str(error):
                    raise
                self.process.wait(10)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.decode("utf-8", "replace"))

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"hubtwist chp exited {self.process.returncode}: "
                                 + "".join(self.lines))
        try:
            requests.get(self.url + "/_chp_healthz", timeout=2)
            requests.get(self.api_url + "/api/routes", timeout=2)
        except requests.RequestException:
            return False
        return True

    def api(self, method: str, path: str = "", **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers.setdefault("Authorization", f"token {self.token}")
        return requests.request(method, self.api_url + "/api/routes" + path, headers=headers,
                                timeout=10, **kwargs)

    def add(self, path: str, target: str, **extra) -> None:
        response = self.api("POST", path, json={"target": target, **extra})
        assert response.status_code == 201, response.text

    def route(self, path: str) -> dict:
        return self.api("GET").json()[path]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.reader.join(5)
        return self.process.returncode


@pytest.fixture
def echo():
    servers: list[EchoServer] = []

    def make(*args, **kwargs) -> EchoServer:
        server = EchoServer(*args, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def chp():
    started: list[Chp] = []

    def start(*args: str, **kwargs) -> Chp:
        proxy = Chp(list(args), **kwargs)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
