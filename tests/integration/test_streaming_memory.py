"""
A 1 GiB upload and a 1 GiB download through hubtwist (run as its own process, app on a unix
socket): bytes arrive intact and hubtwist's peak RSS (VmHWM) stays flat — it streams, it
does not buffer. (The issue names 2 GB; 1 GiB shows the same flatness in half the CI time.)
"""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys

import pytest

from tests.helpers import HTTPAPP, free_port, try_get, wait_for

GIB = 1 << 30
CHUNK = 1 << 20


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def hubtwist_with_socket_app(tmp_path):
    port = free_port()
    config = tmp_path / "big.toml"
    config.write_text(
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'[servers.sock]\ncommand = {json.dumps([*HTTPAPP, "--unix-socket", "{unix_socket}"])}\n'
        'unix_socket = true\nautostart = true\n')
    process = subprocess.Popen([sys.executable, "-m", "hubtwist", "--no-auth", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: try_get(f"http://127.0.0.1:{port}/sock/"), 30, "hubtwist and the app")
        yield process, port
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_gigabyte_upload_and_download_stream_with_flat_memory(hubtwist_with_socket_app):
    process, port = hubtwist_with_socket_app
    baseline = peak_rss_mb(process.pid)

    digest = hashlib.sha256()
    block = bytes(range(256)) * (CHUNK // 256)

    def body():
        for _ in range(GIB // CHUNK):
            digest.update(block)
            yield block

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", "/sock/echo", body=body(), headers={"Content-Length": str(GIB)})
    echo = json.loads(connection.getresponse().read())
    assert echo["body_length"] == GIB
    assert echo["body_sha256"] == digest.hexdigest()

    connection.request("GET", f"/sock/bytes/{GIB}")
    response = connection.getresponse()
    assert response.status == 200
    received = 0
    while chunk := response.read(CHUNK):
        received += len(chunk)
    assert received == GIB
    connection.close()

    growth = peak_rss_mb(process.pid) - baseline
    print(f"hubtwist peak RSS {baseline:.0f} MB -> {baseline + growth:.0f} MB")
    assert growth < 60, f"hubtwist's peak RSS grew by {growth:.0f} MB while streaming 2 GiB"
