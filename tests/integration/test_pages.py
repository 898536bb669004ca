"""
hubtwist's pages with real apps behind them: the start-up progress page (and that only page
views get it), the launcher and the icons it loads, error pages in the same look with their
JSON twins.
"""

from __future__ import annotations

import json
import re

import pytest_twisted
import treq
from twisted.internet.defer import ensureDeferred, gatherResults

from hubtwist.supervise import State
from tests.helpers import HTTPAPP, in_thread, reactor, sleep, within
from tests.integration.test_proxy import APP, hubtwist  # noqa: F401 (fixture)

NAVIGATION = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Upgrade-Insecure-Requests": "1",
}


async def get(url: str, headers=None, method: str = "GET"):
    response = await within(treq.request(method, url, headers=headers, allow_redirects=False), 60)
    return response, await response.text()


def page_data(page: str) -> dict:
    """The JSON data block of one of hubtwist's pages."""
    found = re.search(r'<script type="application/json" id="ht-data">(.*?)</script>', page, re.S)
    assert found, page[:2000]
    return json.loads(found[1])


async def progress_of(ht, name: str, own_root: str = "/") -> dict:
    response, text = await get(f"{ht.url}{own_root}_pages/progress/{name}",
                               {"Accept": "application/json"})
    assert response.code == 200, text
    return json.loads(text)


@pytest_twisted.ensureDeferred
async def test_a_page_view_of_a_starting_app_gets_the_progress_page_then_the_app(hubtwist):
    ht = await hubtwist(servers={"slow": {
        "command": [*APP, "--startup-delay", "3", "--print", "loading <model> & weights"],
        "timeout": 30}})
    started = reactor().seconds()
    response, page = await get(f"{ht.url}/slow/", NAVIGATION)
    assert reactor().seconds() - started < 1, "the progress page must come within a second"
    assert response.code == 503 and response.headers.getRawHeaders("retry-after") == ["2"]
    assert response.headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    policy = response.headers.getRawHeaders("content-security-policy")[0]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy
    assert "Starting slow" in page and "<script>" in page
    data = page_data(page)
    assert data["name"] == "slow" and data["own_root"] == "/"
    assert data["status"]["state"] == "starting" and not data["status"]["failed"]
    # The page polls the app's state: the log lines come live, then "running".
    seen = []

    def running(status):
        seen.append((status["state"], status["failed"]))
        return status["state"] == "running"

    status = await within(_poll_progress(ht, "slow", running), 30)
    assert set(seen[:-1]) <= {("starting", False)}, seen
    assert status["state"] == "running"
    assert "loading <model> & weights" in [line["text"] for line in status["logs"]]
    # ... and the page's reload gets the app itself.
    response, page = await get(f"{ht.url}/slow/", NAVIGATION)
    assert response.code == 200 and page == "hello from httpapp"


@pytest_twisted.ensureDeferred
async def test_only_page_views_get_the_progress_page_others_wait_for_the_app(hubtwist):
    ht = await hubtwist(servers={"slow": {"command": [*APP, "--startup-delay", "1.5"],
                                          "timeout": 30}})
    started = reactor().seconds()
    clients = [
        ("GET", {"Accept": "*/*"}),                               # curl, scripts
        ("GET", {"Accept": "text/html"}),                         # no browser markers
        ("GET", {**NAVIGATION, "Sec-Fetch-Mode": "cors"}),        # fetch()
        ("GET", {**NAVIGATION, "X-Requested-With": "XMLHttpRequest"}),  # XHR
        ("POST", NAVIGATION),                                     # a form post
        ("GET", {"Accept": "application/json", "Sec-Fetch-Mode": "navigate"}),
    ]
    answers = await within(gatherResults([
        ensureDeferred(get(f"{ht.url}/slow/echo", headers, method))
        for method, headers in clients]), 60)
    assert reactor().seconds() - started >= 1.2  # they waited for the app
    for (method, headers), (response, text) in zip(clients, answers):
        assert response.code == 200, (method, headers, text[:300])
        assert json.loads(text)["method"] == method


@pytest_twisted.ensureDeferred
async def test_a_page_view_of_a_failed_app_shows_why_its_log_and_a_retry_button(hubtwist):
    ht = await hubtwist(servers={"bad": {
        "command": [*HTTPAPP, "--print", "config file <missing>!", "--exit-code", "3"],
        "start_retries": 1, "backoff_initial": 0.05, "backoff_max": 60}})
    # A script's request waits for the start, which fails: FATAL.
    response, _ = await get(f"{ht.url}/bad/", {"Accept": "application/json"})
    assert response.code == 503 and ht.keepers["bad"].state is State.FATAL
    response, page = await get(f"{ht.url}/bad/", NAVIGATION)
    assert response.code == 503
    assert "bad could not start" in page and 'id="retry"' in page
    assert "config file &lt;missing&gt;!" in page and "<missing>" not in page
    status = page_data(page)["status"]
    assert status["failed"] and "tried again in" in status["error"]
    assert status["state"] == "fatal"
    assert (await progress_of(ht, "bad"))["failed"]


@pytest_twisted.ensureDeferred
async def test_a_start_that_fails_while_the_page_is_shown_is_reported_by_its_poll(hubtwist):
    ht = await hubtwist(servers={"bad": {
        "command": ["sh", "-c", "sleep 0.8; echo giving up; exit 3"],
        "start_retries": 1, "backoff_initial": 0.05, "backoff_max": 60}})
    response, page = await get(f"{ht.url}/bad/", NAVIGATION)
    assert response.code == 503 and not page_data(page)["status"]["failed"]
    status = await within(_poll_progress(ht, "bad", lambda s: s["failed"]), 30)
    logs = [line["text"] for line in status["logs"]]
    assert status["state"] == "fatal" and "giving up" in logs, logs


async def _poll_progress(ht, name, condition, own_root="/"):
    while True:
        status = await progress_of(ht, name, own_root)
        if condition(status):
            return status
        await sleep(0.2)


@pytest_twisted.ensureDeferred
async def test_the_progress_page_polls_the_own_routes_under_the_reserved_segment(hubtwist):
    ht = await hubtwist(default_server="slow", servers={"slow": {
        "command": [*APP, "--startup-delay", "1"], "timeout": 30}})
    response, page = await get(f"{ht.url}/some/page", NAVIGATION)
    assert response.code == 503 and page_data(page)["own_root"] == "/_hubtwist/"
    await within(_poll_progress(ht, "slow", lambda s: s["state"] == "running", "/_hubtwist/"), 30)
    response, text = await get(f"{ht.url}/some/page", NAVIGATION)
    assert response.code == 200 and text == "hello from httpapp"


@pytest_twisted.ensureDeferred
async def test_launcher_lists_apps_escaped_with_their_icons(hubtwist, tmp_path):
    icon = tmp_path / "icon.svg"
    icon.write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10">'
                    '<circle cx="5" cy="5" r="4" fill="teal"/></svg>')
    secret = tmp_path / "secret.txt"
    secret.write_text("not an icon")
    ht = await hubtwist(servers={
        "app": {"command": APP, "launcher_entry": {"title": "<b>Fancy</b> & co",
                                                   "icon_path": str(icon)}},
        "plain": {"command": APP, "launcher_entry": {"icon_path": str(secret)}},
        "hidden": {"command": APP, "launcher_entry": {"enabled": False}},
    })
    response, page = await get(f"{ht.url}/", NAVIGATION)
    assert response.code == 200 and "<h1>Apps</h1>" in page
    assert "script-src 'sha256-" in response.headers.getRawHeaders("content-security-policy")[0]
    assert "&lt;b&gt;Fancy&lt;/b&gt; &amp; co" in page and "<b>Fancy</b>" not in page
    assert 'src="/_pages/icon/app"' in page and "_pages/icon/plain" not in page
    assert 'data-app="hidden"' not in page
    apps = {app["name"]: app for app in page_data(page)["apps"]}
    assert apps["app"]["title"] == "<b>Fancy</b> & co" and apps["plain"]["state"] == "stopped"
    # Icons: only the configured image files, with their type, inert on their own.
    response, body = await get(f"{ht.url}/_pages/icon/app")
    assert response.code == 200 and body == icon.read_text()
    assert response.headers.getRawHeaders("content-type") == ["image/svg+xml"]
    assert "sandbox" in response.headers.getRawHeaders("content-security-policy")[0]
    assert response.headers.getRawHeaders("x-content-type-options") == ["nosniff"]
    for path in ("plain", "hidden", "nope", "..%2F..%2Fetc%2Fpasswd", "app/../plain"):
        response, body = await get(f"{ht.url}/_pages/icon/{path}")
        assert response.code == 404 and "not an icon" not in body, path
    response, _ = await get(f"{ht.url}/_pages/icon/app", method="POST")
    assert response.code == 405


@pytest_twisted.ensureDeferred
async def test_error_pages_share_the_look_escape_and_have_json_twins(hubtwist):
    ht = await hubtwist(servers={"app": {"command": APP}})
    # A raw request line: clients would percent-encode the markup.
    head, page = await in_thread(_raw_get, ht.url, "/nothing/<script>alert(1)</script>",
                                 timeout=30)
    assert head.startswith("HTTP/1.1 404") and "content-security-policy: default-src 'none'" in head
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<main class="failed">' in page and "<style>" in page
    response, text = await get(f"{ht.url}/nothing", {"Accept": "application/json"})
    assert response.code == 404 and json.loads(text)["error"] == "Not found"
    # The proxy's own errors too (a 502 from an app that is not there).
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        ht2 = await hubtwist(servers={"gone": {"port": probe.getsockname()[1]}})
        response, page = await get(f"{ht2.url}/gone/", NAVIGATION)
        response_json, text = await get(f"{ht2.url}/gone/", {"Accept": "application/json"})
    assert response.code == 502 and "App not reachable" in page and "Try again" in page
    assert "content-security-policy" in {k.decode().lower() for k, _ in
                                         response.headers.getAllRawHeaders()}
    assert response_json.code == 502 and json.loads(text)["error"] == "App not reachable"


def _raw_get(url: str, path: str) -> tuple[str, str]:
    """(head with lower-case header names, body) of a GET sent byte for byte."""
    import socket

    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n"
                           "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    return "\n".join([lines[0]] + [line.lower() for line in lines[1:]]), body
