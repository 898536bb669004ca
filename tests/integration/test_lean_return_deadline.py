"""
A connection that the ordinary path served and gave back to the lean path carries no head
deadline of the ordinary channel with it. Found by the recipe tests: a keep-alive client
that asked hubtwist's own API (answered at once, on the ordinary path) got, `head_timeout`
seconds later, a 408 and a closed connection in the middle of a later request to an app.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

from tests.helpers import HTTPAPP, free_port, try_get, wait_for

HUBTWIST = [sys.executable, "-m", "hubtwist"]


def _response_head(sock: socket.socket) -> bytes:
    """The status line of the next response; its body (Content-Length) is read too, so
    the next call starts at the next response."""
    data = b""
    deadline = time.monotonic() + 10
    while b"\r\n\r\n" not in data:
        assert time.monotonic() < deadline, data
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        assert time.monotonic() < deadline, body
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    assert len(body) == length, "more than one response"
    return head.split(b"\r\n", 1)[0]


def test_no_408_after_an_own_route_on_a_kept_alive_connection(tmp_path):
    port = free_port()
    config = tmp_path / "apps.toml"
    config.write_text(f'listen = "tcp:{port}:interface=127.0.0.1"\nhead_timeout = 1\n'
                      f'[servers.app]\ncommand = {json.dumps([*HTTPAPP, "--port", "{port}"])}\n'
                      'autostart = true\n')
    process = subprocess.Popen([*HUBTWIST, "--no-auth", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: try_get(f"http://127.0.0.1:{port}/app/echo"), 30, "the app")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n")  # ordinary path, at once
            assert _response_head(sock) == b"HTTP/1.1 200 OK"
            time.sleep(1.5)  # longer than head_timeout, idle between requests
            for _ in range(2):
                sock.sendall(b"GET /app/echo HTTP/1.1\r\nHost: h\r\n\r\n")
                assert _response_head(sock) == b"HTTP/1.1 200 OK"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
