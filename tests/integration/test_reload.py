"""
Live reload: hubtwist (in-process, and as a real subprocess for SIGHUP) re-reads its
configuration file; servers appear, go and restart while an unchanged one keeps its
process and an open WebSocket. Real apps (tests/apps/httpapp.py, wsapp.py), real sockets.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest
import pytest_twisted
import treq
from websockets.sync.client import connect

from hubtwist.app import plan_reload, serve
from hubtwist.config import ConfigError
from hubtwist.config.loader import load_dict, load_toml
from tests.helpers import (
    APPS, HTTPAPP, alive, free_port, in_thread, poll, reactor, try_get, wait_for, within,
)

WSAPP = [sys.executable, str(APPS / "wsapp.py"), "--port", "{port}"]


def toml_list(argv) -> str:
    return json.dumps([str(arg) for arg in argv])


def write_config(path, servers: dict[str, list[str]], extra: str = "") -> None:
    """A configuration file with autostarted servers NAME = argv."""
    lines = [extra]
    for name, argv in servers.items():
        lines += [f"[servers.{name}]", f"command = {toml_list(argv)}", "autostart = true", ""]
    path.write_text("\n".join(lines))


@pytest.fixture
def hubtwist(tmp_path):
    running = []

    async def start(path):
        config = load_toml(path)
        instance = await serve(reactor(), config, load=lambda: load_toml(path))
        instance.port = instance.ports[0].getHost().port
        instance.url = f"http://127.0.0.1:{instance.port}"
        running.append(instance)
        return instance

    yield start
    for instance in running:
        for session in list(instance.forwarder.upgrades.sessions):
            session.abort()
        pytest_twisted.blockon(within(instance.stop(), 30))


async def get(url: str, **kwargs):
    response = await within(treq.get(url, **kwargs), 30)
    return response.code, await within(response.content(), 30)


async def running_pid(ht, name: str) -> int:
    keeper = ht.keepers[name]
    await within(keeper.ensure_running(), 30)
    return keeper.pid


LISTEN = 'listen = ["tcp:0:interface=127.0.0.1"]\n'


@pytest_twisted.ensureDeferred
async def test_reload_adds_removes_and_restarts_servers_while_a_websocket_stays_open(
        hubtwist, tmp_path):
    path = tmp_path / "hubtwist.toml"
    write_config(path, {"ws": WSAPP, "gone": [*HTTPAPP, "--port", "{port}"],
                        "change": [*HTTPAPP, "--port", "{port}"]}, LISTEN)
    ht = await hubtwist(path)
    ws_pid, gone_pid, change_pid = [await running_pid(ht, name) for name in ("ws", "gone", "change")]
    socket = await in_thread(lambda: connect(f"ws://127.0.0.1:{ht.port}/ws/echo").__enter__())
    try:
        await in_thread(socket.send, "before")
        assert await in_thread(socket.recv, 10) == "before"

        write_config(path, {"ws": WSAPP, "change": [*HTTPAPP, "--port", "{port}", "--print", "v2"],
                            "added": [*HTTPAPP, "--port", "{port}"]}, LISTEN)
        answer = await within(ht.reload(), 60)
        assert answer == {"added": ["added"], "removed": ["gone"], "changed": ["change"],
                          "unchanged": ["ws"], "needs_restart": []}

        # the removed server: its route answers 404, its process group is gone
        code, _ = await get(f"{ht.url}/gone/")
        assert code == 404
        assert "gone" not in ht.keepers
        await poll(lambda: not alive(gone_pid), 15, message="the removed app to stop")
        # the changed one: restarted with its new command
        await poll(lambda: not alive(change_pid), 15, message="the changed app's old process to stop")
        assert await running_pid(ht, "change") != change_pid
        assert ht.keepers["change"].config.command[-1] == "v2"
        code, body = await get(f"{ht.url}/change/")
        assert code == 200
        # the added one: autostarted and routed
        await poll(lambda: ht.keepers["added"].pid, 30, message="the added app to autostart")
        code, body = await get(f"{ht.url}/added/")
        assert (code, body) == (200, b"hello from httpapp")
        code, body = await get(f"{ht.url}/api/servers")
        assert sorted(s["name"] for s in json.loads(body)["servers"]) == ["added", "change", "ws"]
        # the unchanged one: same process, and its WebSocket never noticed
        assert ht.keepers["ws"].pid == ws_pid
        await in_thread(socket.send, "after")
        assert await in_thread(socket.recv, 10) == "after"
    finally:
        await in_thread(socket.close)


@pytest_twisted.ensureDeferred
async def test_an_invalid_configuration_is_rejected_and_the_old_one_kept(hubtwist, tmp_path):
    from twisted.logger import globalLogPublisher, formatEvent

    path = tmp_path / "hubtwist.toml"
    write_config(path, {"app": [*HTTPAPP, "--port", "{port}"]}, LISTEN)
    ht = await hubtwist(path)
    pid = await running_pid(ht, "app")
    logged = []
    observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        path.write_text(LISTEN + '[servers.app]\ncommand = ["x"]\ntimeout = "soon"\n')
        answer = await within(ht.reload(), 30)
    finally:
        globalLogPublisher.removeObserver(observer)
    expected = str(_load_error(path))
    assert answer == {"error": expected}
    assert any("Configuration not reloaded" in line and expected in line for line in logged)
    assert ht.keepers["app"].pid == pid
    code, body = await get(f"{ht.url}/app/")
    assert (code, body) == (200, b"hello from httpapp")


def _load_error(path) -> ConfigError:
    try:
        load_toml(path)
    except ConfigError as error:
        return error
    raise AssertionError("the configuration loaded")


@pytest_twisted.ensureDeferred
async def test_the_reload_route_needs_the_token_and_post(hubtwist, tmp_path):
    path = tmp_path / "hubtwist.toml"
    write_config(path, {}, LISTEN + 'token = "s3cret"\n')
    ht = await hubtwist(path)
    write_config(path, {"app": [*HTTPAPP, "--port", "{port}"]}, LISTEN + 'token = "s3cret"\n')
    response = await within(treq.post(f"{ht.url}/api/reload"), 30)
    assert response.code in (401, 403)
    await response.content()
    assert "app" not in ht.keepers
    token = {"Authorization": "token s3cret"}
    response = await within(treq.get(f"{ht.url}/api/reload", headers=token), 30)
    assert response.code == 405
    await response.content()
    response = await within(treq.post(f"{ht.url}/api/reload", headers=token), 60)
    assert response.code == 200
    assert json.loads(await response.content())["added"] == ["app"]
    code, body = await get(f"{ht.url}/app/", headers=token)
    assert (code, body) == (200, b"hello from httpapp")


def test_what_needs_a_restart_is_reported_and_ignored():
    old = load_dict({"servers": {"a": {"command": ["x"]}}, "base_url": "/one/"}, "old")
    new = load_dict({"servers": {"a": {"command": ["x"]}, "b": {"command": ["y"]}},
                     "base_url": "/two/", "listen": ["tcp:1"], "token": "t"}, "new")
    plan = plan_reload(old, new)
    assert plan.needs_restart == ("listen", "base_url", "token")
    assert plan.added == ("b",) and plan.unchanged == ("a",)
    assert plan.config.base_url == "/one/" and set(plan.config.servers) == {"a", "b"}
    single = load_dict({"servers": {"a": {"command": ["x"]}}, "default_server": "a"}, "old")
    with pytest.raises(ConfigError, match="base URL"):
        plan_reload(single, load_dict({"servers": {"b": {"command": ["y"]}}}, "new"))


@pytest.fixture
def process():
    started = []
    yield started
    for child in started:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)


def test_sighup_reloads_a_real_hubtwist(process, tmp_path):
    port = free_port()
    path = tmp_path / "hubtwist.toml"
    listen = f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
    write_config(path, {"one": [*HTTPAPP, "--port", "{port}"]}, listen)
    log = tmp_path / "log"
    with open(log, "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "hubtwist", "--config", str(path),
                                  "--no-auth"], stdout=subprocess.DEVNULL, stderr=stderr)
    process.append(child)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: (try_get(url + "/one/") or (0,))[0] == 200, 30, "hubtwist and its app")
    write_config(path, {"one": [*HTTPAPP, "--port", "{port}"], "two": [*HTTPAPP, "--port", "{port}"]},
                 listen)
    child.send_signal(signal.SIGHUP)
    wait_for(lambda: (try_get(url + "/two/") or (0,))[0] == 200, 30, "the added app")
    # A broken file: rejected, logged as the command line says it, hubtwist keeps serving.
    path.write_text(listen + "[servers.one\n")
    child.send_signal(signal.SIGHUP)
    wait_for(lambda: child.poll() is not None or b"Configuration not reloaded" in log.read_bytes(),
             30, "the rejection in the log")
    assert child.poll() is None and _servers(url) == ["one", "two"]
    assert b"is not valid TOML" in log.read_bytes()
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == 0
    assert b"Traceback" not in log.read_bytes()


def _servers(url):
    with urllib.request.urlopen(url + "/api/servers", timeout=10) as response:
        return sorted(s["name"] for s in json.load(response)["servers"])
