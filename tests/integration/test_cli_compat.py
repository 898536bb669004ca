"""
The peers' command lines run for real (`python -m hubtwist` subprocesses serving
tests/apps/httpapp.py): hubtwist listens on `--port`, the app on `--destport`/`--server-port`
and gets its `{prefix}`; batchspawner's `--port=N` in Hub mode is where hubtwist listens.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.helpers import free_port, HTTPAPP, HUBTWIST, HubtwistProcesses, try_get, wait_for

# No Hub, no chosen token: each test says what it wants.
ENV = {k: v for k, v in os.environ.items()
       if not k.startswith(("JUPYTERHUB_", "HUBTWIST_")) or k == "HUBTWIST_ALLOW_ROOT"}


@pytest.fixture
def start():
    processes = HubtwistProcesses(ENV)
    yield processes
    processes.stop_all()


def stop_and_read(process) -> str:
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=20)[0]


def ok(url: str):
    reply = try_get(url)
    return reply if reply is not None and reply[0] == 200 else None


def test_jhsingle_command_line(start):
    port, destport = free_port(), free_port()
    hub = start("--authtype", "none", "--destport", str(destport), *HTTPAPP,
                "{--}port", "{port}", "{--}print", "prefix={prefix} base={base_url}/x",
                "--port", str(port), "--ip", "127.0.0.1", "--ready-check-path", "/echo",
                "--progressive", "--no-force-alive", "--request-timeout", "30")
    status, body = wait_for(lambda: ok(f"http://127.0.0.1:{port}/echo"), 30, "hubtwist on --port")
    assert b'"path": "/echo"' in body
    assert ok(f"http://127.0.0.1:{destport}/")  # the app itself, on --destport
    output = stop_and_read(hub)
    assert "prefix=/ base=/x" in output, output


def test_standaloneproxy_command_line(start):
    port, server_port = free_port(), free_port()
    hub = start("--address", "127.0.0.1", "--port", str(port), "--server-port", str(server_port),
                "--no-authentication", "--base-url", "/sa", "--timeout", "20",
                "--environment", "GREETING=hi", "--", *HTTPAPP, "--port", "{port}",
                "--print", "prefix={prefix}")
    wait_for(lambda: ok(f"http://127.0.0.1:{port}/sa/echo"), 30, "hubtwist on --port")
    assert ok(f"http://127.0.0.1:{server_port}/")
    assert "prefix=/sa/" in stop_and_read(hub)


def test_prefix_of_a_named_server(start, tmp_path):
    port = free_port()
    config = tmp_path / "apps.toml"
    command = ", ".join(f'"{word}"' for word in [*HTTPAPP, "--port", "{port}", "--print",
                                                  "prefix={prefix} base={base_url}"])
    config.write_text(f"[servers.streamlit]\ncommand = [{command}]\n")
    hub = start("--config", str(config), "--port", str(port), "--base-url", "/b/", "--no-auth")
    wait_for(lambda: ok(f"http://127.0.0.1:{port}/b/streamlit/echo"), 30, "the app")
    assert "prefix=/b/streamlit/ base=/b/" in stop_and_read(hub)


def test_hub_mode_listens_on_batchspawners_appended_port(start):
    # JupyterHub < 2: batchspawner's wrapper appends `--port=N` to the command line; the
    # service URL (if any) names another port. The Hub itself is not needed to listen.
    port, other = free_port(), free_port()
    env = {**ENV, "JUPYTERHUB_API_URL": f"http://127.0.0.1:{free_port()}/hub/api",
           "JUPYTERHUB_API_TOKEN": "server-token", "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice",
           "JUPYTERHUB_USER": "alice", "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
           "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{other}/user/alice/"}
    hub = start(*HTTPAPP, "{--}port", "{port}", f"--port={port}", env=env)
    wait_for(lambda: ok(f"http://127.0.0.1:{port}/user/alice/_hubtwist/api"), 30,
             "hubtwist on the appended --port")
    assert try_get(f"http://127.0.0.1:{other}/user/alice/_hubtwist/api") is None
    stop_and_read(hub)


@pytest.mark.parametrize(("args", "sentence"), [
    (["--listen", "tcp:0", "--port", "8000", "--", "app"], "give either --listen or --port"),
    (["--repo", "https://example.org/x.git", "app"], "--repo is not supported"),
    (["--unix-socket", "streamlit", "hello"], "--unix-socket takes true, false"),
])
def test_command_line_mistakes_exit_2_with_one_sentence(args, sentence):
    result = subprocess.run([*HUBTWIST, *args], capture_output=True, text=True, timeout=30,
                            env=ENV)
    assert result.returncode == 2
    assert sentence in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _get_with_host(port: int, path: str, host: str):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host})
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def test_origin_host_is_the_host_of_the_first_request(start):
    port = free_port()
    hub = start("--authtype=none", f"--port={port}", *HTTPAPP, "{--}port", "{port}",
                "{--}print", "origin={origin_host}")
    assert wait_for(lambda: _get_with_host(port, "/", "dash.example.org:8443") == 200, 30,
                    "the app")
    assert "origin=dash.example.org:8443" in stop_and_read(hub)


def test_no_logs_keeps_the_apps_output_out_of_hubtwists_log(start):
    port = free_port()
    hub = start("--no-auth", "--no-logs", "--autostart", "--port", str(port), "--", *HTTPAPP,
                "--port", "{port}", "--print", "app-says-hello")
    wait_for(lambda: ok(f"http://127.0.0.1:{port}/echo"), 30, "the app")
    reply = ok(f"http://127.0.0.1:{port}/_hubtwist/api/servers/app")
    assert reply and b"app-says-hello" in reply[1]  # kept for its error pages and the API
    assert "[app] app-says-hello" not in stop_and_read(hub)  # (the command line is logged)
