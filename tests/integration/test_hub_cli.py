"""The command line's authentication defaults, as users run it (real subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

from tests.helpers import HTTPAPP
from tests.helpers import free_port, wait_for

HUBTWIST = [sys.executable, "-m", "hubtwist"]
ENV = {k: v for k, v in os.environ.items()
       if not k.startswith(("JUPYTERHUB_", "HUBTWIST_")) or k == "HUBTWIST_ALLOW_ROOT"}


def _status(url: str, headers: dict | None = None) -> int | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def test_standalone_generates_a_token_prints_it_once_and_requires_it():
    port = free_port()
    process = subprocess.Popen([*HUBTWIST, "--listen", f"tcp:{port}:interface=127.0.0.1", "--",
                                *HTTPAPP, "--port", "{port}"], env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"hubtwist: open http://127.0.0.1:{port}/?token="), line
        token = line.strip().rpartition("token=")[2]
        assert len(token) >= 32
        assert wait_for(lambda: _status(f"http://127.0.0.1:{port}/echo"), 30, "hubtwist") == 401
        assert _status(f"http://127.0.0.1:{port}/echo", {"Authorization": f"token {token}"}) == 200
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    assert token not in stderr  # the log never holds it
    assert "a generated token is required" in stderr
    assert token not in stdout  # printed once: the first line only


def test_the_token_can_be_chosen_by_environment():
    port = free_port()
    process = subprocess.Popen([*HUBTWIST, "--listen", f"tcp:{port}:interface=127.0.0.1", "--",
                                *HTTPAPP, "--port", "{port}"], env={**ENV, "HUBTWIST_TOKEN": "chosen"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/api"), 30, "hubtwist")
        assert _status(f"http://127.0.0.1:{port}/echo", {"Authorization": "token chosen"}) == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=20)[0]
    assert "chosen" not in output and "?token=" not in output


def test_no_auth_is_refused_on_a_public_address():
    result = subprocess.run([*HUBTWIST, "--no-auth", "--listen", "tcp:8888", "--", "true"],
                            env=ENV, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--allow-unauthenticated-public" in result.stderr and "Traceback" not in result.stderr


def test_forced_hub_mode_without_a_hub_is_explained():
    result = subprocess.run([*HUBTWIST, "--mode", "hub", "--", "true"], env=ENV,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Hub mode needs the Hub's API URL" in result.stderr and "Traceback" not in result.stderr


def _serve_until_ready(args: list[str], port: int) -> str:
    """Run hubtwist with C{args} until its token-protected app answers; its whole log."""
    process = subprocess.Popen([*HUBTWIST, *args, "--listen", f"tcp:{port}:interface=127.0.0.1",
                                "--", *HTTPAPP, "--port", "{port}"], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/api"), 30, "hubtwist")
        assert _status(f"http://127.0.0.1:{port}/echo", {"Authorization": "token from-a-file"}) == 200
        assert _status(f"http://127.0.0.1:{port}/echo", {"Authorization": "token other"}) == 401
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=20)[0]
    return output


def test_the_token_can_come_from_a_file_and_the_command_line_is_warned_about(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    token_file.chmod(0o640)
    output = _serve_until_ready(["--token-file", str(token_file)], free_port())
    assert "from-a-file" not in output
    assert f"The token file {token_file} is readable by other users (mode 640)" in output
    output = _serve_until_ready(["--token", "from-a-file"], free_port())
    assert "--token is visible to every user of this machine" in output
    assert "HUBTWIST_TOKEN or use --token-file" in output


def test_a_token_file_that_cannot_be_used_is_a_usage_error(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for args, message in [
        (["--token-file", str(tmp_path / "missing")],
         "--token-file: names a token file that cannot be read (No such file or directory)"),
        (["--token-file", str(empty)], "--token-file: names an empty token file"),
        (["--token", "x", "--token-file", str(empty)], "not allowed with argument"),
    ]:
        result = subprocess.run([*HUBTWIST, *args, "--", "true"], env=ENV, capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 2, result
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
