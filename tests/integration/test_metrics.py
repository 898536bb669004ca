"""
`GET metrics` and the access log, in-process (hubtwist.app.serve) against real apps on
loopback: counters that move with traffic on the lean path and the twisted.web path, with
WebSockets and with crashes; the access log's lines; hubtwist's own answers traced with
the access log off; the metrics behind the token gate; Hub API calls counted. One test runs
the command line for `--access-log --log-format json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port, in_thread, poll, sleep, wait_for, within
from tests.integration.test_hub_gate import (  # noqa: F401 (fixtures)
    fake_hub, hub_env, hubtwist as gated,
)
from tests.integration.test_proxy import APP, hubtwist  # noqa: F401 (fixture)
from tests.integration.test_websocket import APP as WS_APP, ws_connect

SECRETS = ("t0ken-value", "xsrf-value", "code-value", "state-value", "key-value")
SECRET_QUERY = ("token=t0ken-value&page=2&_xsrf=xsrf-value&code=code-value"
                "&state=state-value&api_key=key-value")


def samples(text: str) -> dict:
    """{(sample name, sorted label pairs): value}; prometheus_client's parser must accept
    all of C{text}."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def requests_of(found: dict, server: str, method: str, status: str) -> float:
    return found.get(("hubtwist_requests_total",
                      (("method", method), ("server", server), ("status", status))), 0)


async def scrape(url: str, **headers) -> dict:
    response = await within(treq.get(url, headers=headers or None), 30)
    body = await response.content()
    assert response.code == 200, body
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain; version=")
    return samples(body.decode())


async def get(url: str, **kwargs) -> tuple[int, bytes]:
    response = await within(treq.get(url, allow_redirects=False, **kwargs), 30)
    return response.code, await response.content()


@pytest_twisted.ensureDeferred
async def test_counters_move_with_traffic_on_the_lean_and_the_twisted_web_path(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    await within(ht.keepers["app"].ensure_running(), 30)
    served = ht.lean.served
    for _ in range(3):
        code, _ = await get(f"{ht.url}/app/echo")
        assert code == 200
    assert ht.lean.served == served + 3  # those took the lean path
    response = await within(treq.post(f"{ht.url}/app/echo", data=b"x" * 5000), 30)
    assert response.code == 200
    await response.content()  # twisted.web's path (a body)
    code, _ = await get(f"{ht.url}/nothing-here")
    assert code == 404  # hubtwist's own answer

    found = await scrape(f"{ht.url}/metrics")
    assert requests_of(found, "app", "GET", "2xx") == 3
    assert requests_of(found, "app", "POST", "2xx") == 1
    assert requests_of(found, "_hubtwist", "GET", "4xx") == 1
    assert found[("hubtwist_request_duration_seconds_count", (("server", "app"),))] == 4
    assert found[("hubtwist_request_body_bytes_total", (("server", "app"),))] == 5000
    assert found[("hubtwist_response_body_bytes_total", (("server", "app"),))] > 0
    assert found[("hubtwist_server_state", (("server", "app"), ("state", "running")))] == 1
    assert found[("hubtwist_server_startup_seconds_count", (("server", "app"),))] == 1
    # the three GETs on the lean path; the POST and the 404 on twisted.web's
    assert found[("hubtwist_requests_by_path_total", (("path", "lean"),))] == 3
    assert found[("hubtwist_requests_by_path_total", (("path", "ordinary"),))] == 2

    for _ in range(2):
        await get(f"{ht.url}/app/echo")
    again = await scrape(f"{ht.url}/metrics")
    assert requests_of(again, "app", "GET", "2xx") == 5
    # The first scrape was counted too, as hubtwist's own 200.
    assert requests_of(again, "_hubtwist", "GET", "2xx") == 1
    assert again[("hubtwist_requests_by_path_total", (("path", "lean"),))] == 5
    assert again[("hubtwist_requests_by_path_total", (("path", "ordinary"),))] == 3


@pytest_twisted.ensureDeferred
async def test_a_crash_moves_the_restarts_counter(hubtwist):
    ht = await hubtwist(servers={"app": {"command": [*APP, "--exit-after", "1.5"],
                                         "autostart": True}})
    keeper = ht.keepers["app"]
    found = await scrape(f"{ht.url}/metrics")
    assert found[("hubtwist_server_restarts_total", (("server", "app"),))] == 0
    await poll(lambda: keeper.restarts >= 1 and "app" in ht.traffic.startups
               and ht.traffic.startups["app"].count >= 2, 30,
               message="a restart after the crash, ready again")
    found = await scrape(f"{ht.url}/metrics")
    assert found[("hubtwist_server_restarts_total", (("server", "app"),))] >= 1
    assert found[("hubtwist_server_startup_seconds_count", (("server", "app"),))] >= 2


@pytest_twisted.ensureDeferred
async def test_websockets_are_counted_open_then_closed(hubtwist):
    ht = await hubtwist(servers={"ws": {"command": WS_APP}})
    await within(ht.keepers["ws"].ensure_running(), 30)
    url = ht.url.replace("http:", "ws:")

    def client() -> str:
        with ws_connect(f"{url}/ws/echo") as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            with urllib.request.urlopen(f"{ht.url}/metrics", timeout=30) as response:
                return response.read().decode()

    during = samples(await in_thread(client))
    assert during[("hubtwist_websockets_open", (("server", "ws"),))] == 1
    assert during[("hubtwist_websockets_opened_total", (("server", "ws"),))] == 1

    async def closed() -> bool:
        found = await scrape(f"{ht.url}/metrics")
        return found[("hubtwist_websockets_open", (("server", "ws"),))] == 0

    deadline = time.monotonic() + 30
    while not await closed():
        assert time.monotonic() < deadline, "the WebSocket never counted as closed"
        await sleep(0.05)
    found = await scrape(f"{ht.url}/metrics")
    assert found[("hubtwist_websockets_opened_total", (("server", "ws"),))] == 1
    assert requests_of(found, "ws", "GET", "1xx") == 0  # a WebSocket is not a request


@pytest_twisted.ensureDeferred
async def test_the_access_log_has_a_line_per_request_without_query_secrets(hubtwist, capsys):
    ht = await hubtwist(access_log=True, servers={"app": {"command": APP}})
    await within(ht.keepers["app"].ensure_running(), 30)
    capsys.readouterr()
    code, _ = await get(f"{ht.url}/app/echo?{SECRET_QUERY}")  # lean
    assert code == 200
    response = await within(treq.post(f"{ht.url}/app/echo?{SECRET_QUERY}", data=b"y" * 300), 30)
    await response.content()  # twisted.web
    code, _ = await get(f"{ht.url}/nothing-here?token=t0ken-value")
    assert code == 404
    ht.flush_logs()  # lines are written in batches, a quarter of a second apart at most
    lines = [line for line in capsys.readouterr().err.splitlines() if "hubtwist.access" in line]
    assert len(lines) == 3, lines
    lean, posted, missing = lines
    assert ' "GET /app/echo?page=2" 200 ' in lean and "server=app in=0 by=app" in lean
    assert ' "POST /app/echo?page=2" 200 ' in posted and "server=app in=300 by=app" in posted
    assert ' "GET /nothing-here" 404 ' in missing and "server=_hubtwist" in missing \
        and "by=hubtwist" in missing
    for line in lines:
        assert line.split()[3] == "127.0.0.1" and line.split()[4] == "-"  # client, no user
        assert not any(secret in line for secret in SECRETS), line


@pytest_twisted.ensureDeferred
async def test_own_answers_are_logged_with_the_access_log_off(hubtwist, capsys):
    closed_port = free_port()
    ht = await hubtwist(servers={"app": {"command": APP}, "gone": {"port": closed_port}})
    await within(ht.keepers["app"].ensure_running(), 30)
    capsys.readouterr()
    assert (await get(f"{ht.url}/app/echo"))[0] == 200  # the app's answer: no line
    assert (await get(f"{ht.url}/app/status/500"))[0] == 500  # the app's too
    assert (await get(f"{ht.url}/wrong-prefix/app/?token=t0ken-value"))[0] == 404
    assert (await get(f"{ht.url}/app"))[0] == 301  # hubtwist's own redirect
    assert (await get(f"{ht.url}/gone/x"))[0] == 502  # lean path, hubtwist's error page
    lines = [line for line in capsys.readouterr().err.splitlines() if "hubtwist.access" in line]
    assert len(lines) == 3, lines
    assert '"GET /wrong-prefix/app/" 404 ' in lines[0] and "by=hubtwist" in lines[0]
    assert '"GET /app" 301 ' in lines[1] and "server=_hubtwist" in lines[1]
    assert '"GET /gone/x" 502 ' in lines[2] and "server=gone" in lines[2]
    assert not any("t0ken-value" in line for line in lines)


@pytest_twisted.ensureDeferred
async def test_the_metrics_need_the_token_unless_metrics_auth_is_off(gated):
    ht = await gated(token="s3cret", servers={"app": {"command": APP}})
    code, _ = await get(f"{ht.url}/metrics", headers={"Accept": "text/plain"})
    assert code in (401, 302, 303), code  # not the metrics
    found = await scrape(f"{ht.url}/metrics", Authorization="Bearer s3cret")
    assert any(name == "hubtwist_info" for name, _ in found)

    open_metrics = await gated(token="s3cret", metrics_auth=False,
                               servers={"app": {"command": APP}})
    await scrape(f"{open_metrics.url}/metrics")  # no token needed
    code, _ = await get(f"{open_metrics.url}/app/", headers={"Accept": "application/json"})
    assert code == 401  # the apps still need it


@pytest_twisted.ensureDeferred
async def test_metrics_off_means_no_route_and_no_counting(hubtwist):
    ht = await hubtwist(metrics=False, servers={"app": {"command": APP}})
    assert ht.traffic is None
    assert (await get(f"{ht.url}/metrics"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_hub_api_calls_are_counted_with_their_errors(gated, fake_hub):
    ht = await gated(env=hub_env(fake_hub), servers={"app": {"command": APP}})
    auth = {"Authorization": "token alice-token"}
    found = await scrape(f"{ht.url}/user/alice/metrics", **auth)
    assert found[("hubtwist_hub_api_duration_seconds_count", (("call", "version"),))] >= 1
    assert found[("hubtwist_hub_api_duration_seconds_count", (("call", "user"),))] >= 1
    assert found.get(("hubtwist_hub_api_errors_total", (("call", "user"),)), 0) == 0
    fake_hub.failing = True
    code, _ = await get(f"{ht.url}/user/alice/app/", headers={
        "Authorization": "token bob-token", "Accept": "application/json"})
    assert code >= 500
    fake_hub.failing = False
    found = await scrape(f"{ht.url}/user/alice/metrics", **auth)
    assert found[("hubtwist_hub_api_errors_total", (("call", "user"),))] >= 1
    # The access log knows who asked.
    assert found[("hubtwist_requests_total", (("method", "GET"), ("server", "_hubtwist"),
                                              ("status", "2xx")))] >= 1


def test_the_command_line_writes_json_access_lines(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stderr = tmp_path / "stderr"
    with open(stderr, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "hubtwist", "--no-auth", "--access-log", "--log-format",
             "json", "--listen", f"tcp:{port}:interface=127.0.0.1", "--", *APP],
            stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        def answered() -> bool:
            # (a hubtwist that exited — its port taken meanwhile — must not pass for one
            # that answers: another process on that port would never write this log)
            assert process.poll() is None, f"hubtwist exited: {stderr.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/echo?{SECRET_QUERY}",
                                            timeout=5) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(answered, 60, "hubtwist and its app answering")

        def access_lines() -> list[dict]:
            records = []
            for line in stderr.read_text().splitlines():
                record = json.loads(line)
                if record["namespace"] == "hubtwist.access":
                    records.append(record)
            return records

        try:
            wait_for(lambda: any(r["status"] == 200 for r in access_lines()), 30,
                     "an access line")
        except AssertionError as error:  # say what hubtwist did instead
            state = "running" if process.poll() is None else f"exited ({process.returncode})"
            raise AssertionError(f"{error}; hubtwist {state}; its log: "
                                 f"{stderr.read_text()[-3000:]}") from None
        record = next(r for r in access_lines() if r["status"] == 200)
        assert record["method"] == "GET" and record["path"] == "/echo?page=2"
        assert record["server"] not in ("", "_hubtwist")  # the app's name
        assert record["answered_by"] == "app" and record["bytes_out"] > 0
        assert record["duration_ms"] >= 0 and record["client"] == "127.0.0.1"
        assert not any(secret in stderr.read_text() for secret in SECRETS)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
