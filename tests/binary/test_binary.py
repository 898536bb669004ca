"""
The smoke suite of the frozen binary (packaging/build): the same things users do with
`hubtwist`, run against the binary as a black box, never against the source tree.

Which binary: $HUBTWIST_BINARY, else dist/hubtwist (tests/setup builds it). Without either
the module is skipped, except in CI (CI=true), where a missing binary is a failure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.binary.locate import ROOT, skip_module_without_binary
from tests.helpers import HTTPAPP, alive, descendants, free_port, try_get, wait_for

skip_module_without_binary()

APPS = ROOT / "tests" / "apps"
WSAPP = [sys.executable, str(APPS / "wsapp.py")]
SPAWN_OVERHEAD_LIMIT = 0.1  # seconds from "-> starting" to the app's first instruction


def run(binary, *args, timeout=60, **kwargs):
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def unix_get(path: str, target: str):
    try:
        connection = UnixHTTPConnection(path)
        try:
            connection.request("GET", target)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()
    except OSError:
        return None


def tree_gone(pids) -> bool:
    return not any(alive(pid) for pid in pids)


def guardians(pids) -> list[int]:
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if cmdline.read().split(b"\0")[1:2] == [b"_guardian"]:
                    found.append(pid)
        except OSError:
            pass
    return found


@pytest.fixture
def start(binary, tmp_path):
    """Start the binary (output to a file, read with .output()); everything is stopped after."""
    started = []

    class Started:
        def __init__(self, args, env, cwd):
            self.log = tmp_path / f"hubtwist-{len(started)}.log"
            self._out = open(self.log, "wb")
            self.process = subprocess.Popen([binary, *args], stdout=self._out,
                                            stderr=subprocess.STDOUT, env=env, cwd=cwd or tmp_path)
            self.pid = self.process.pid

        def output(self) -> str:
            return self.log.read_text(errors="replace")

    def starter(*args, env=None, cwd=None):
        item = Started(args, env, cwd)
        started.append(item)
        return item

    yield starter
    for item in started:
        tree = descendants(item.pid)
        if item.process.poll() is None:
            item.process.send_signal(signal.SIGTERM)
            try:
                item.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                item.process.kill()
                item.process.wait(timeout=10)
        item._out.close()
        try:
            wait_for(lambda: tree_gone(tree), 15, "the test's processes to end")
        except AssertionError:
            for pid in tree:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            raise


def test_version(binary):
    result = run(binary, "--version")
    assert result.returncode == 0, result.stderr
    source = (ROOT / "hubtwist" / "__init__.py").read_text()
    version = re.search(r'__version__ = "([^"]+)"', source).group(1)
    assert result.stdout.strip() == f"hubtwist {version}"


def test_self_test_imports_everything_loaded_lazily(binary):
    result = run(binary, "_selftest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "self-test ok" in result.stdout
    assert "systemd" in result.stdout and "prometheus exposition" in result.stdout


def test_check_config(binary, tmp_path):
    good = tmp_path / "apps.toml"
    good.write_text('[servers.app]\ncommand = ["app", "{port}"]\n')
    result = run(binary, "check-config", str(good))
    assert result.returncode == 0, result.stderr
    assert 'command = ["app", "{port}"]' in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[servers.app]\ncommand = ["app"]\ntimout = 3\n')
    result = run(binary, "check-config", str(bad))
    assert result.returncode == 2
    assert result.stderr == (f"hubtwist: {bad}: `servers.app.timout` is not a known key. "
                             "Did you mean `timeout`?\n")


def test_every_shipped_config_is_valid(binary):
    for path in sorted((ROOT / "conf").glob("*.toml")):
        result = run(binary, "check-config", str(path))
        assert result.returncode == 0, (path, result.stderr)


def test_serves_an_app_over_http_and_sigterm_stops_everything(start, tmp_path):
    port = free_port()
    grandchild_file = tmp_path / "grandchild.pid"
    hub = start("--listen", f"tcp:{port}:interface=127.0.0.1", "--no-auth", "--", *HTTPAPP,
                "--port", "{port}", "--grandchild", str(grandchild_file))
    status, body = wait_for(lambda: try_get(f"http://127.0.0.1:{port}/echo?x=1"), 30, "the app")
    assert status == 200, body
    assert json.loads(body)["path"] == "/echo?x=1"
    status, body = wait_for(lambda: try_get(f"http://127.0.0.1:{port}/_hubtwist/api"), 10,
                            "/_hubtwist/api")
    assert status == 200 and b"version" in body
    app_pid = int(try_get(f"http://127.0.0.1:{port}/pid")[1])
    grandchild = int(wait_for(lambda: grandchild_file.exists() and grandchild_file.read_text(), 10,
                              "the grandchild"))
    tree = descendants(hub.pid) | {grandchild}
    assert app_pid in tree
    hub.process.send_signal(signal.SIGTERM)
    assert hub.process.wait(timeout=30) == 0, hub.output()
    assert "[app] running -> stopping" in hub.output()
    wait_for(lambda: tree_gone(tree), 10, f"no process left: {[p for p in tree if alive(p)]}")


def test_sigkill_of_the_binary_leaves_no_process_behind(start, tmp_path):
    port = free_port()
    grandchild_file = tmp_path / "grandchild.pid"
    config = tmp_path / "apps.toml"
    command = [*HTTPAPP, "--port", "{port}", "--grandchild", str(grandchild_file), "--ignore-term"]
    config.write_text(f"listen = [\"tcp:{port}:interface=127.0.0.1\"]\n"
                      f"[servers.app]\ncommand = {json.dumps(command)}\n"
                      "autostart = true\nstop_timeout = 1\n")
    hub = start("--config", str(config), "--no-auth")
    wait_for(lambda: try_get(f"http://127.0.0.1:{port}/app/pid"), 30, "the app")
    wait_for(grandchild_file.exists, 10, "the grandchild")
    tree = descendants(hub.pid) | {int(grandchild_file.read_text())}
    assert len(tree) >= 3, tree  # the app, its grandchild, the guardian (+ onefile's child)
    hub.process.kill()
    hub.process.wait(timeout=10)
    wait_for(lambda: tree_gone(tree), 15,
             f"every process of the tree to be gone: {[p for p in tree if alive(p)]}")


def test_listens_on_a_unix_socket_with_mode_600_and_serves_a_unix_socket_app(start, tmp_path):
    path = str(tmp_path / "hub.sock")
    hub = start("--listen", f"unix:{path}:mode=600", "--no-auth", "--unix-socket", "--",
                *HTTPAPP, "--unix-socket", "{unix_socket}")
    status, body = wait_for(lambda: unix_get(path, "/echo"), 30, "the app over the unix socket")
    assert status == 200, body
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert "unix:" in hub.output()
    # the app's own socket is in a private 0700 directory
    status, body = unix_get(path, "/pid")
    with open(f"/proc/{int(body)}/cmdline", "rb") as cmdline:
        argv = cmdline.read().decode().split("\0")
    app_socket = argv[argv.index("--unix-socket") + 1]
    assert os.stat(os.path.dirname(app_socket)).st_mode & 0o777 == 0o700
    if os.geteuid() == 0:  # another uid can connect to neither socket
        assert [connects_as_nobody(p) for p in (path, app_socket)] == [False, False]


def connects_as_nobody(path: str) -> bool:
    """Whether uid/gid 65534 can connect to the unix socket at C{path} (as root: a fork that
    drops to nobody and only connects)."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(5)
                probe.connect(path)
            code = 0
        except PermissionError:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) in (0, 1), f"the probe failed: {status}"
    return os.WEXITSTATUS(status) == 0


def test_websocket_round_trip(start):
    from websockets.sync.client import connect

    port = free_port()
    start("--listen", f"tcp:{port}:interface=127.0.0.1", "--no-auth", "--", *WSAPP,
          "--port", "{port}")
    wait_for(lambda: try_get(f"http://127.0.0.1:{port}/"), 30, "the WebSocket app")
    with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=10, close_timeout=5) as ws:
        for message in ("hello", "héllo ☃" * 1000, b"\x00\xff" * 70000):
            ws.send(message)
            assert ws.recv(timeout=10) == message


def _log_times(output: str, pattern: str) -> list[float]:
    """The times of the JSON log records whose message matches C{pattern} (epoch seconds)."""
    times = []
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if re.search(pattern, record["message"]):
            stamp, _, millis = record["time"].partition(".")
            times.append(time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000)
    return times


def test_spawning_an_app_does_not_pay_the_binary_start_up(start, tmp_path):
    """Apps are forked and exec'd directly; the one guardian is the only other process the
    binary starts, once. Measured: from the supervisor's `-> starting` to the app's first
    instruction (a shell that records the time, then execs the app), for two spawns."""
    port = free_port()
    stamps = tmp_path / "exec-times"
    script = f'date +%s.%N >> {stamps}; exec "$@"'
    config = tmp_path / "apps.toml"
    command = ["/bin/sh", "-c", script, "sh", *HTTPAPP, "--port", "{port}"]
    config.write_text(f"listen = [\"tcp:{port}:interface=127.0.0.1\"]\nlog_format = \"json\"\n"
                      f"[servers.app]\ncommand = {json.dumps(command)}\nautostart = true\n"
                      "restart = \"always\"\nbackoff_initial = 0.05\n")
    hub = start("--config", str(config), "--no-auth")
    first_pid = int(wait_for(lambda: try_get(f"http://127.0.0.1:{port}/app/pid"), 30, "the app")[1])
    os.kill(first_pid, signal.SIGKILL)

    def restarted():
        answer = try_get(f"http://127.0.0.1:{port}/app/pid")
        return answer and answer[0] == 200 and int(answer[1]) != first_pid and answer

    wait_for(restarted, 30, "the restarted app")
    exec_times = [float(line) for line in stamps.read_text().split()]
    starting = _log_times(hub.output(), r"^\[app\] \w+ -> starting")
    assert len(exec_times) == 2 and len(starting) == 2, (exec_times, hub.output())
    overheads = [exec_time - start_time for exec_time, start_time in zip(exec_times, starting)]
    # the log's times have millisecond resolution (truncated): allow that much below zero
    print(f"per-spawn overhead: {[round(o * 1000, 1) for o in overheads]} ms")
    assert all(-0.002 <= overhead < SPAWN_OVERHEAD_LIMIT for overhead in overheads), overheads
    assert len(guardians(descendants(hub.pid))) == 1


def test_systemd_socket_activation_and_notify(binary, tmp_path):
    """LISTEN_FDS/LISTEN_PID (the one-file bootloader passes them on to its child, with
    LISTEN_PID rewritten) and READY=1/STOPPING=1 on a fake NOTIFY_SOCKET."""
    from tests.integration.test_systemd import socket_activated

    *notes, environ = socket_activated([binary], tmp_path)
    assert notes[0].startswith("READY=1") and notes[1] == "STOPPING=1"
    assert "NOTIFY_SOCKET=" not in environ
    leaked = [v for v in environ.split("\0") if "LD_LIBRARY_PATH_ORIG" in v or "_MEI" in v]
    assert not leaked, leaked


def _status_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of C{pid}."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


@contextlib.contextmanager
def throwaway_user():
    """A new account (its home not created yet) under a fresh world-readable directory:
    C{(name, uid, gid, home, base)}; removed afterwards."""
    import shutil
    import tempfile

    name = f"htw{os.getpid() % 100000}"
    base = tempfile.mkdtemp(prefix="hubtwist-user-", dir="/tmp")
    os.chmod(base, 0o755)
    home = os.path.join(base, "home", name)
    subprocess.run(["useradd", "--no-create-home", "--home-dir", home, "--shell", "/bin/sh",
                    "--user-group", name], check=True, capture_output=True, timeout=30)
    try:
        yield (name, *pwd_ids(name), home, base)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def _system_python() -> str:
    """A Python another user may run (the test's own may live under /root)."""
    import shutil

    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


@pytest.mark.skipif(os.geteuid() != 0, reason="--user needs root (CI runs as root)")
def test_user_prepares_the_home_and_drops_root_for_itself_and_its_apps(start, binary):
    with throwaway_user() as (name, uid, gid, home, base):
        port = free_port()
        hub = start("--user", name, "--listen", f"tcp:{port}:interface=127.0.0.1", "--no-auth",
                    "--autostart", "--", _system_python(), str(APPS / "httpapp.py"),
                    "--port", "{port}", cwd=base)
        answer = wait_for(lambda: try_get(f"http://127.0.0.1:{port}/pid"), 30, "the app")
        assert answer[0] == 200, (answer, hub.output())
        app_pid = int(answer[1])
        assert os.path.isdir(home) and os.stat(home).st_uid == uid
        assert f"Running as {name} (uid {uid}, gid {gid}); created {home}" in hub.output()
        tree = descendants(hub.pid)
        assert _status_ids(app_pid) == (uid, gid)
        served_by = [pid for pid in [hub.pid, *tree] if pid != app_pid and pid not in
                     descendants(app_pid)]
        # the one-file bootloader alone stays root (it only unpacks and forwards signals)
        dropped = [pid for pid in served_by if _status_ids(pid) == (uid, gid)]
        assert len(dropped) >= len(served_by) - 1, [(p, _status_ids(p)) for p in served_by]
        assert guardians(dropped), "the guardian runs as the user too"
        # SIGKILL of the root bootloader: the dropped child still follows it
        hub.process.kill()
        hub.process.wait(timeout=10)
        wait_for(lambda: tree_gone(tree), 20,
                 f"no process left: {[p for p in tree if alive(p)]}")


@pytest.mark.skipif(os.geteuid() != 0, reason="root only (CI runs as root)")
def test_root_in_a_container_becomes_the_notebook_user_and_prepares_its_workspace(start,
                                                                                  binary):
    with throwaway_user() as (name, uid, gid, home, base):
        port = free_port()
        work = os.path.join(home, "work")
        config = os.path.join(base, "apps.toml")
        command = [_system_python(), str(APPS / "httpapp.py"), "--port", "{port}"]
        with open(config, "w") as file:
            file.write(f"[servers.app]\ncommand = {json.dumps(command)}\n"
                       f"cwd = {json.dumps(work)}\nautostart = true\n")
        # no --user, no --allow-root: a container (systemd's $container) with docker-stacks'
        # NB_UID/NB_GID decides
        env = {key: value for key, value in os.environ.items() if key != "HUBTWIST_ALLOW_ROOT"}
        env.update(container="docker", NB_UID=str(uid), NB_GID=str(gid))
        hub = start("--config", config, "--listen", f"tcp:{port}:interface=127.0.0.1",
                    "--no-auth", env=env, cwd=base)
        answer = wait_for(lambda: try_get(f"http://127.0.0.1:{port}/app/pid"), 30, "the app")
        assert answer[0] == 200, (answer, hub.output())
        assert _status_ids(int(answer[1])) == (uid, gid)
        assert (f"Running as {name} (uid {uid}, gid {gid}) (a container's default user: "
                f"--user or --allow-root to choose otherwise); created {home}, {work}"
                in hub.output())
        assert os.stat(work).st_uid == uid and os.stat(home).st_uid == uid


def pwd_ids(name: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid
