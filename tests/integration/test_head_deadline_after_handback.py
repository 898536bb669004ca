"""
The request-head deadline of the ordinary (twisted.web) path must not outlive the request it
was armed for. A request answered at once (a 401 from the gate), on a connection that then
goes back to the lean path, left a deadline armed for a head that had not begun; when it
fired it wrote a 408 into whatever the connection had become by then: a WebSocket the
next request opened through another channel (seen behind JupyterHub's proxy, which keeps
its connections to hubtwist alive: every WebSocket died 20 s after a login).
"""

from __future__ import annotations

import base64
import os
import socket
import time

import pytest_twisted

from tests.helpers import APPS, HTTPAPP, in_thread
from tests.integration.test_proxy import APP, hubtwist  # noqa: F401 (fixture)

HEAD_TIMEOUT = 0.5
WSAPP = [HTTPAPP[0], str(APPS / "wsapp.py"), "--port", "{port}"]


def _read_response(client: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        piece = client.recv(65536)
        assert piece, answer
        answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += client.recv(65536)
    return head


def _frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def _echo_for(client: socket.socket, seconds: float) -> list[bytes]:
    """A 401 on the connection, then a WebSocket on it that echoes for C{seconds}."""
    client.sendall(b"GET /app/echo HTTP/1.1\r\nHost: a\r\n\r\n")  # no token: 401 at once
    head = _read_response(client)
    assert head.startswith(b"HTTP/1.1 401 "), head
    key = base64.b64encode(os.urandom(16))
    client.sendall(b"GET /ws/echo HTTP/1.1\r\nHost: a\r\nAuthorization: token secret\r\n"
                   b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
    head = _read_response(client)
    assert head.startswith(b"HTTP/1.1 101 "), head
    echoes = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client.sendall(_frame(b"ping"))
        answer = client.recv(65536)
        echoes.append(answer)
        if answer != b"\x81\x04ping":
            break
        time.sleep(HEAD_TIMEOUT / 2)  # the pace of the messages, across several deadlines
    return echoes


@pytest_twisted.ensureDeferred
async def test_a_websocket_after_an_immediate_answer_outlives_the_head_deadline(hubtwist):
    ht = await hubtwist(token="secret", head_timeout=HEAD_TIMEOUT,
                        servers={"app": {"command": APP}, "ws": {"command": WSAPP}})

    def client() -> list[bytes]:
        with socket.create_connection(("127.0.0.1", ht.ports[0].getHost().port),
                                      timeout=10) as connection:
            return _echo_for(connection, 6 * HEAD_TIMEOUT)

    echoes = await in_thread(client)
    assert set(echoes) == {b"\x81\x04ping"}, echoes
    assert len(echoes) >= 8
