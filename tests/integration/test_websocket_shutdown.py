"""
Stopping hubtwist with WebSockets open: a real `hubtwist` subprocess, the `websockets`
client, SIGTERM. Every bridged WebSocket must be closed by hubtwist with 1001 (Going Away)
before the apps are stopped (else the dying app's connection gives the client 1011 or a
plain 1000), and hubtwist must still exit promptly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.helpers import APPS, free_port, try_get, wait_for

HUBTWIST = [sys.executable, "-m", "hubtwist"]
WSAPP = [sys.executable, str(APPS / "wsapp.py")]


def _toml_list(items) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


@pytest.fixture
def hubtwist_with_websockets(tmp_path):
    """A hubtwist process serving /ws (a WebSocket app, spliced) and /raw (a plain TCP
    echo behind raw_socket_proxy), both started; yields (process, port)."""
    port = free_port()
    config = tmp_path / "hubtwist.toml"
    config.write_text(
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        "[servers.ws]\n"
        f"command = {_toml_list([*WSAPP, '--port', '{port}'])}\n"
        "autostart = true\n"
        "[servers.raw]\n"
        f"command = {_toml_list([*WSAPP, '--raw', '--port', '{port}'])}\n"
        "raw_socket_proxy = true\n"
        "autostart = true\n")
    process = subprocess.Popen([*HUBTWIST, "--no-auth", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: try_get(f"http://127.0.0.1:{port}/ws/"), 30, "the WebSocket app")
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        process.stdout.close()


def test_sigterm_closes_websockets_with_1001_and_exits_promptly(hubtwist_with_websockets):
    process, port = hubtwist_with_websockets
    options = dict(open_timeout=30, close_timeout=5)
    closes = {}

    def wait_for_close(name, ws):
        try:
            while True:
                ws.recv(timeout=20)
        except ConnectionClosed as closed:
            closes[name] = (closed.rcvd, time.monotonic())
        except TimeoutError:
            closes[name] = (None, time.monotonic())

    with connect(f"ws://127.0.0.1:{port}/ws/echo", **options) as spliced, \
            connect(f"ws://127.0.0.1:{port}/raw/", **options) as raw:
        spliced.send("hello")
        assert spliced.recv(timeout=10) == "hello"
        assert raw.recv(timeout=10) == b"RFB 003.008\n"
        raw.send(b"raw hello")
        assert raw.recv(timeout=10) == b"raw hello"
        readers = [threading.Thread(target=wait_for_close, args=item, daemon=True)
                   for item in (("spliced", spliced), ("raw", raw))]
        for reader in readers:
            reader.start()
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        for reader in readers:
            reader.join(timeout=30)
        exit_code = process.wait(timeout=30)
        exited = time.monotonic()
    output = process.stdout.read()
    for name in ("spliced", "raw"):
        received, when = closes[name]
        assert received is not None, f"{name}: no close frame\n{output}"
        assert received.code == 1001, f"{name}: closed with {received}\n{output}"
        assert when - signalled < 3, f"{name}: closed {when - signalled:.1f} s after SIGTERM"
    assert exit_code == 0, output
    assert exited - signalled < 10, f"hubtwist took {exited - signalled:.1f} s to exit\n{output}"
    assert "Traceback" not in output, output
