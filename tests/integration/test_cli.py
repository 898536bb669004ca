"""The `hubtwist` command as users run it: real subprocesses, signals, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

from tests.helpers import (
    accepts, alive, descendants, free_port, HTTPAPP, HUBTWIST, HubtwistProcesses, try_get,
    wait_for,
)



def run(*args, timeout=30, **kwargs):
    return subprocess.run([*HUBTWIST, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def hubtwist_process():
    processes = HubtwistProcesses()
    yield processes
    processes.stop_all()


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("hubtwist 0.")


def test_check_config_prints_the_effective_configuration(tmp_path):
    path = tmp_path / "apps.toml"
    path.write_text('[servers.app]\ncommand = ["app", "{port}"]\n')
    result = run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert 'command = ["app", "{port}"]' in result.stdout
    assert "timeout = 30" in result.stdout


def test_check_config_error_names_file_and_key_without_traceback(tmp_path):
    path = tmp_path / "apps.toml"
    path.write_text('[servers.app]\ncommand = ["app"]\ntimout = 3\n')
    result = run("check-config", str(path))
    assert result.returncode == 2
    assert result.stderr == (f"hubtwist: {path}: `servers.app.timout` is not a known key. "
                             "Did you mean `timeout`?\n")


def test_a_bad_config_stops_startup_with_status_2(tmp_path):
    path = tmp_path / "apps.toml"
    path.write_text('[servers.app]\ncommand = "app --port {port}"\n')
    result = run("--config", str(path))
    assert result.returncode == 2
    assert "`servers.app.command` must be a list" in result.stderr
    assert "Traceback" not in result.stderr


def test_nothing_to_serve_is_explained():
    result = run()
    assert result.returncode == 2
    assert "nothing to serve" in result.stderr


def test_a_port_in_use_is_reported(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--listen", f"tcp:{port}:interface=127.0.0.1", "--", *HTTPAPP, "--port", "{port}")
    assert result.returncode == 1
    assert f"cannot listen on 'tcp:{port}:interface=127.0.0.1'" in result.stderr


def test_single_app_mode_serves_and_sigterm_stops_everything(hubtwist_process, tmp_path):
    port = free_port()
    grandchild_file = tmp_path / "grandchild.pid"
    process = hubtwist_process(
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--no-auth", "--autostart", "--",
        *HTTPAPP, "--port", "{port}", "--grandchild", str(grandchild_file))
    status, body = wait_for(lambda: try_get(f"http://127.0.0.1:{port}/pid"), 30, "the app")
    app_pid = int(body)
    grandchild = int(wait_for(lambda: grandchild_file.exists() and grandchild_file.read_text(), 10,
                              "the grandchild"))
    assert alive(app_pid) and alive(grandchild)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    output = process.stdout.read()
    assert "[app] running -> stopping" in output
    assert not alive(app_pid)
    wait_for(lambda: not alive(grandchild), 5, "the grandchild to be gone")


def test_a_second_sigterm_while_stopping_is_no_error(hubtwist_process):
    # systemd and an impatient user, or `timeout` forwarding the signal it got: the second
    # signal arrives while the first stop is under way.
    port = free_port()
    process = hubtwist_process(
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--no-auth", "--autostart", "--",
        *HTTPAPP, "--port", "{port}", "--ignore-term")  # the stop waits for the SIGKILL
    app_pid = int(wait_for(lambda: try_get(f"http://127.0.0.1:{port}/pid"), 30, "the app")[1])
    process.send_signal(signal.SIGTERM)
    wait_for(lambda: not accepts(port), 10, "hubtwist to stop listening")
    assert alive(app_pid)  # still stopping
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    output = process.stdout.read()
    assert "Got SIGTERM while stopping: the stop goes on" in output and "Stopped." in output
    assert "Traceback" not in output and "ReactorNotRunning" not in output, output


def test_sigkill_of_hubtwist_leaves_no_process_behind(hubtwist_process, tmp_path):
    port = free_port()
    grandchild_file = tmp_path / "grandchild.pid"
    process = hubtwist_process(
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--no-auth", "--autostart", "--",
        *HTTPAPP, "--port", "{port}", "--grandchild", str(grandchild_file), "--ignore-term")
    wait_for(lambda: try_get(f"http://127.0.0.1:{port}/pid"), 30, "the app")
    wait_for(grandchild_file.exists, 10, "the grandchild")
    tree = descendants(process.pid)
    tree.add(int(grandchild_file.read_text()))  # already in its own session, but still ours
    assert len(tree) >= 3, tree  # the app, its grandchild, the guardian
    process.kill()
    process.wait(timeout=10)
    wait_for(lambda: not any(alive(pid) for pid in tree), 10,
             f"every process of the tree to be gone: {[p for p in tree if alive(p)]}")


@pytest.mark.skipif(os.geteuid() != 0, reason="root only (CI runs as root)")
def test_root_refuses_to_run_apps_as_root_unless_allowed(hubtwist_process):
    env = {key: value for key, value in os.environ.items() if key != "HUBTWIST_ALLOW_ROOT"}
    port = free_port()
    args = ["--user", "root", "--no-auth", "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--", *HTTPAPP, "--port", "{port}"]
    refused = run(*args, env=env)
    assert refused.returncode == 2
    assert refused.stderr.startswith("hubtwist: refusing to run apps as root: ")
    assert "--allow-root" in refused.stderr and "Traceback" not in refused.stderr

    process = hubtwist_process("--allow-root", *args, env=env)
    answer = wait_for(lambda: try_get(f"http://127.0.0.1:{port}/pid"), 30, "the app")
    assert answer[0] == 200
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert "Apps run as root (--allow-root): app" in output


# -- a configuration file can only ever give exit 2 and one sentence -----------------------

_APP = '[servers.app]\ncommand = ["app", "{port}"]\n'
BAD_CONFIGS = {
    "deep-arrays": ("a = " + "[" * 10000 + "]" * 10000, "nests arrays or inline tables too deeply"),
    "deep-tables": ("a = " + "{b = " * 10000 + "1" + "}" * 10000, "too deeply"),
    "not-utf8": (b"listen = '\xff\xfe'\n", "the file is not UTF-8 text"),
    "huge-file": ("#" * (1024 * 1024 + 10), "larger than 1 MiB"),
    "huge-integer": ("max_body_size = " + "9" * 5000, "holds a number that cannot be read"),
    "float-overflow": (_APP + "timeout = " + "9" * 400, "`servers.app.timeout` is too large"),
    "nan-duration": (_APP + "timeout = nan", "`servers.app.timeout` must be a finite number"),
    "inf-duration": (_APP + "request_timeout = inf", "`servers.app.request_timeout` must be a finite"),
    "zero-timeout": (_APP + "timeout = 0", "`servers.app.timeout` is out of range"),
    "negative-retries": (_APP + "start_retries = -1", "`servers.app.start_retries` is too small"),
    "servers-not-table": ("servers = 5", "`servers` must be a table of servers"),
    "server-not-table": ("[servers]\napp = 'x'", "`servers.app` must be a table"),
    "launcher-not-table": (_APP + "launcher_entry = []", "`servers.app.launcher_entry` must be a table"),
    "env-nested": (_APP + "environment = {A = {B = 1}}", "`servers.app.environment.A` must be a string"),
    "hub-not-table": ("hub = 'x'", "`hub` must be a table"),
    "hub-bad-url": ("[hub]\napi_url = 'hub:8081'", "`hub.api_url` is not an http(s) URL"),
    "newline-key": ('"a\\nb" = 1', "`a\\nb` is not a known key"),
    "mappath-no-module": (_APP + "mappath = 'no_such_module_xyz:f'",
                          "`servers.app.mappath` cannot be imported: No module named "
                          "'no_such_module_xyz' (given: 'no_such_module_xyz:f')"),
    "rewrite-no-attribute": (_APP + "rewrite_response = ['os:no_such_function']",
                             "`servers.app.rewrite_response[0]` names a missing attribute: "
                             "module 'os' has no attribute 'no_such_function'"),
    "rewrite-not-callable": (_APP + "rewrite_response = 'os:sep'",
                             "`servers.app.rewrite_response[0]` does not name a callable"),
}


def _bad_config(tmp_path, kind):
    path = tmp_path / f"{kind}.toml"
    if kind == "directory":
        path.mkdir()
        return path, "is a directory, not a configuration file"
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes it: a read would block forever
        return path, "is a named pipe, not a configuration file"
    text, expected = BAD_CONFIGS[kind]
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path, expected


@pytest.mark.parametrize("kind", [*BAD_CONFIGS, "directory", "fifo"])
def test_a_bad_config_file_is_one_sentence_and_status_2(tmp_path, kind):
    path, expected = _bad_config(tmp_path, kind)
    for args in (["check-config", str(path)], ["--config", str(path), "--no-auth"]):
        result = run(*args, timeout=20)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"hubtwist: {path}: "), result.stderr
        assert expected in result.stderr, result.stderr


def test_check_config_into_a_closed_pipe_is_not_a_traceback(tmp_path):
    path = tmp_path / "many.toml"  # an effective configuration far larger than a pipe holds
    path.write_text("".join(f'[servers.app{i}]\ncommand = ["app"]\n' for i in range(2000)))
    process = subprocess.Popen([*HUBTWIST, "check-config", str(path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # like `| head -1`
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert stderr == b""


def test_sigterm_removes_the_apps_private_socket_directory(hubtwist_process):
    import shutil
    import tempfile

    temp = tempfile.mkdtemp(prefix="ht-tmp-")  # short: the socket path must fit in 107 bytes
    try:
        env = {key: value for key, value in os.environ.items() if key != "XDG_RUNTIME_DIR"}
        env["TMPDIR"] = temp
        port = free_port()
        process = hubtwist_process(
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--no-auth", "--unix-socket", "--",
            *HTTPAPP, "--unix-socket", "{unix_socket}", env=env)
        status, body = wait_for(lambda: try_get(f"http://127.0.0.1:{port}/pid"), 30, "the app")
        assert status == 200
        [directory] = os.listdir(temp)
        assert directory.startswith("hubtwist-app-")
        assert os.listdir(os.path.join(temp, directory)) == ["app.sock"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert not alive(int(body))
        assert os.listdir(temp) == [], "the private socket directory outlived hubtwist"
    finally:
        shutil.rmtree(temp, ignore_errors=True)
