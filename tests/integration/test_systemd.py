"""systemd without systemd: a fake $NOTIFY_SOCKET and an inherited listening socket
(LISTEN_FDS/LISTEN_PID), as a `Type=notify` unit with a `.socket` unit would give them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.helpers import HTTPAPP, alive, descendants

HUBTWIST = [sys.executable, "-m", "hubtwist"]
TOKEN = "socket-activation-test-token"


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return response.read()


def socket_activated(command: list[str], tmp_path, timeout: float = 30) -> list[str]:
    """
    Run C{command} (a hubtwist) as systemd would: fd 3 a listening TCP socket, LISTEN_FDS=1,
    LISTEN_PID its pid, NOTIFY_SOCKET a datagram socket. Check that it serves the test app on
    the inherited socket, that READY=1 arrives only once it can serve, that the app does not
    inherit NOTIFY_SOCKET (a token: hubtwist cannot tell where an inherited socket
    listens, so --no-auth is refused there), and that SIGTERM sends STOPPING=1 and stops everything. Returns
    the notifications received.
    """
    notify_path = str(tmp_path / "notify.sock")
    notifications = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notifications.bind(notify_path)
    notifications.settimeout(timeout)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    # systemd >= 227 always sets LISTEN_FDNAMES too, and Twisted ignores the fds without it.
    env = {**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http", "NOTIFY_SOCKET": notify_path}
    fd = listener.fileno()
    move = "" if fd == 3 else f"3<&{fd} {fd}<&-"  # bash: dash knows only fds 0-9
    process = subprocess.Popen(
        ["bash", "-c", f'LISTEN_PID=$$; export LISTEN_PID; exec "$@" {move}', "bash",
         *command, "--listen", "systemd:domain=INET:index=0", "--token", TOKEN, "--autostart", "--",
         *HTTPAPP, "--port", "{port}"],
        pass_fds=(fd,), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    listener.close()  # hubtwist holds the only copy now
    try:
        received = [notifications.recv(4096).decode()]
        assert received[0].startswith("READY=1"), received
        assert "systemd:domain=INET:index=0" in received[0]
        # READY means serving: the first request succeeds without any retry
        _get(f"http://127.0.0.1:{port}/echo")
        app_pid = int(_get(f"http://127.0.0.1:{port}/pid"))
        with open(f"/proc/{app_pid}/environ", "rb") as app_environ:
            environ = app_environ.read().decode(errors="replace")
        tree = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        received.append(notifications.recv(4096).decode())
        assert received[1] == "STOPPING=1", received
        assert process.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in tree)
        return received + [environ]
    finally:
        notifications.close()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()


def test_socket_activation_and_notify(tmp_path):
    *notes, environ = socket_activated(HUBTWIST, tmp_path)
    assert "NOTIFY_SOCKET=" not in environ and "PATH=" in environ


def test_without_notify_socket_nothing_is_sent():
    from hubtwist import systemd

    saved, systemd._address = systemd._address, None
    try:
        systemd.take_notify_socket({})
        assert systemd.ready() is False
        systemd._address = "/nonexistent/notify.sock"
        assert systemd.ready() is False  # a vanished socket: no exception
    finally:
        systemd._address = saved


def test_the_notify_socket_is_taken_out_of_the_environment(tmp_path):
    from hubtwist import systemd

    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        environ = {"NOTIFY_SOCKET": path, "OTHER": "1"}
        saved = systemd._address
        try:
            systemd.take_notify_socket(environ)
            assert environ == {"OTHER": "1"}
            assert systemd.ready("ok") is True
            assert server.recv(100) == b"READY=1\nSTATUS=ok"
        finally:
            systemd._address = saved
